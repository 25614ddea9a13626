package h1

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

// reqCtx behaves as the context.WithCancel it replaces, for its own
// methods, package context's helpers and contexts derived from it.
func TestReqCtx(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	r := newReqCtx(parent)
	if r.Err() != nil || r.Value(ctxKey{}) != "v" {
		t.Fatalf("new: Err %v, Value %v; want nil, v", r.Err(), r.Value(ctxKey{}))
	}
	if _, ok := r.Deadline(); ok {
		t.Errorf("Deadline: got one; want none")
	}
	done := r.Done()
	ran := make(chan string, 4)
	stopA := r.AfterFunc(func() { ran <- "a" })
	stopB := r.AfterFunc(func() { ran <- "b" })
	stopC := context.AfterFunc(r, func() { ran <- "c" }) // through package context
	derived, cancelDerived := context.WithTimeout(r, time.Hour)
	defer cancelDerived()
	if !stopB() || stopB() {
		t.Errorf("stop before cancel: want true once, then false")
	}
	select {
	case <-done:
		t.Fatal("done before cancel")
	default:
	}

	r.cancel()
	r.cancel() // a second call does nothing
	<-done
	if !errors.Is(r.Err(), context.Canceled) {
		t.Errorf("Err after cancel: %v; want context.Canceled", r.Err())
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case f := <-ran:
			got[f] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("after cancel: ran %v; want a and c", got)
		}
	}
	if !got["a"] || !got["c"] {
		t.Errorf("after cancel: ran %v; want a and c (b was stopped)", got)
	}
	select {
	case <-derived.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a context derived from it was not cancelled")
	}
	if stopA() || stopC() {
		t.Errorf("stop after cancel: got true; want false (started)")
	}
	if r.Done() != done {
		t.Errorf("Done changed after cancel")
	}

	// Done asked first after cancel, and AfterFunc on a done context.
	r2 := newReqCtx(context.Background())
	r2.cancel()
	select {
	case <-r2.Done():
	default:
		t.Error("Done after cancel: not closed")
	}
	stop := r2.AfterFunc(func() { ran <- "late" })
	if f := <-ran; f != "late" || stop() {
		t.Errorf("AfterFunc on a done context: ran %q, stop true; want late, false", f)
	}
	select {
	case f := <-ran:
		t.Errorf("b ran (%q) though stopped", f)
	default:
	}
}

// Registrations, stops and cancel from many goroutines: every function
// runs at most once, and exactly when its stop did not win.
func TestReqCtxConcurrent(t *testing.T) {
	for range 50 {
		r := newReqCtx(context.Background())
		var mu sync.Mutex
		ran := map[int]int{}
		stopped := map[int]bool{}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				stop := r.AfterFunc(func() { mu.Lock(); ran[i]++; mu.Unlock() })
				if i%2 == 0 {
					ok := stop()
					mu.Lock()
					stopped[i] = ok
					mu.Unlock()
				}
			})
		}
		wg.Go(r.cancel)
		wg.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := 0
			for i := range 8 {
				if !stopped[i] && ran[i] != 1 || stopped[i] && ran[i] != 0 {
					n++
				}
			}
			mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ran %v, stopped %v: want each once unless stopped", ran, stopped)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
