package h1

import (
	"context"
	"sync"
	"time"
)

// reqCtx is a request's context: done when the client is gone or the
// request is over, like the context.WithCancel it replaces, in one
// allocation instead of two. It also has the AfterFunc method that package
// context looks for (its afterFuncer): a function registered by
// context.AfterFunc, by a context derived from it, or by a caller asserting
// that method (realroot's FastCGI client, which watches every exchange's
// context) costs no map, no goroutine and no allocation of its own while the
// context is live. Its values are its parent's.
//
// One cost moves: package context finds a *cancelCtx through wrappers
// (WithValue) but an afterFuncer only directly, so a context derived
// through a wrapper, e.g. WithTimeout(WithValue(r.Context(), k, v)), is
// watched by a goroutine of package context until either is done (at the
// latest when the request ends). realroot's handler derives none.
type reqCtx struct {
	parent context.Context

	mu   sync.Mutex
	done chan struct{} // made on first Done, or closed one at cancel
	err  error
	fns  []afterFunc // registered, not run, not stopped
	next uint64      // id of the next registration
	// one is fns' backing array while at most one is registered, which is
	// the common case (the FastCGI exchange's watch).
	one [1]afterFunc
}

type afterFunc struct {
	id uint64
	f  func()
}

// closedChan is the Done of a context cancelled before anyone asked.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newReqCtx(parent context.Context) *reqCtx {
	r := &reqCtx{parent: parent}
	r.fns = r.one[:0]
	return r
}

func (r *reqCtx) Deadline() (time.Time, bool) { return r.parent.Deadline() }

func (r *reqCtx) Value(key any) any { return r.parent.Value(key) }

func (r *reqCtx) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		if r.err != nil {
			r.done = closedChan
		} else {
			r.done = make(chan struct{})
		}
	}
	return r.done
}

func (r *reqCtx) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *reqCtx) String() string { return "h1.requestContext" }

// cancel ends the context (context.Canceled) and starts the registered
// functions, each in its own goroutine; later calls do nothing.
func (r *reqCtx) cancel() {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = context.Canceled
	if r.done != nil {
		close(r.done)
	}
	fns := r.fns
	r.fns = nil
	r.mu.Unlock()
	for _, a := range fns {
		go a.f()
	}
}

// AfterFunc is context.AfterFunc's contract: f runs in its own goroutine once
// r is done (at once if it is); stop unregisters it and reports whether it
// did so before f started.
func (r *reqCtx) AfterFunc(f func()) (stop func() bool) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	r.next++
	id := r.next
	r.fns = append(r.fns, afterFunc{id: id, f: f})
	r.mu.Unlock()
	return func() bool { return r.stop(id) }
}

// stop unregisters the function of registration id; false if it had
// started (r was cancelled) or was stopped already.
func (r *reqCtx) stop(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, a := range r.fns {
		if a.id == id {
			r.fns = append(r.fns[:i], r.fns[i+1:]...)
			return true
		}
	}
	return false
}
