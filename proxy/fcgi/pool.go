package fcgi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// pool bounds the connections of a Client and keeps the idle ones.
//
// A slot is the right to have one connection open. get hands out a slot with
// either an idle connection or none (the caller dials in it); put gives a
// cleanly finished connection back, drop frees the slot of a closed one.
// When MaxConns slots are taken, get waits in a FIFO queue; put and drop hand
// their connection or slot straight to the first waiter. Hence, under mu:
// idle is empty whenever someone waits, and a newcomer takes a free slot only
// when nobody waits.
//
// Idle connections form a stack (LIFO): the most recently used one is reused
// first, so that under light load the others age out. The stack is ordered by
// the time each was put back, oldest at the bottom: one timer, armed for the
// bottom's IdleTimeout whenever the stack is not empty, closes them. A
// second, armed for the queue's head while requests wait, ends the waits
// past QueueTimeout (see expire). Nothing else runs in the background.
type pool struct {
	mu      sync.Mutex
	open    int      // slots taken: busy, dialing and idle connections
	idle    []*pconn // stack, top at the end
	head    *waiter  // FIFO of requests waiting for a slot
	tail    *waiter
	waiting int
	closed  bool
	timer   *time.Timer // runs reap; created at the first put
	qtimer  *time.Timer // runs expire; created at the first wait

	// starving counts exchanges on new connections that have waited
	// starveAfter or more for php-fpm's first byte: while it is not zero,
	// put closes what it is given (see put).
	starving atomic.Int32

	dials, reuses, retries, busy, idleClosed, yielded atomic.Uint64
}

// PoolStats is a snapshot of a Client's connections (see Client.Stats).
type PoolStats struct {
	Open    int // connections open or being dialed: InUse + Idle
	Idle    int // connections kept for reuse
	InUse   int // connections running an exchange, or being dialed
	Waiting int // requests queued for a connection

	Dials  uint64 // connections opened
	Reuses uint64 // exchanges started on a kept connection, retried ones included
	// Retries counts the requests retried on a new connection because
	// their kept one had been given up by php-fpm (see Client.Do): closed
	// while idle (a reload, request_terminate_timeout) or half-closed at
	// pm.max_requests, since kept connections are not checked when taken.
	Retries    uint64
	Busy       uint64 // requests refused with ErrBusy
	IdleClosed uint64 // idle connections closed after IdleTimeout
	Yielded    uint64 // kept connections closed to free a worker for a new one
}

// waiter is a request queued for a slot. Waiters are reused: one goes
// back to waiters with nothing in ch.
type waiter struct {
	prev, next *waiter
	queued     bool
	deadline   time.Time  // when it stops waiting (QueueTimeout)
	ch         chan grant // buffered: one grant, sent under pool.mu
}

var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan grant, 1)} }}

// errQueueTimeout is the grant of a waiter that waited its QueueTimeout.
var errQueueTimeout = errors.New("fastcgi: queue timeout")

// grant is what a waiter gets: an idle connection, a slot to dial in (both
// nil), or an error (the Client was closed).
type grant struct {
	pc  *pconn
	err error
}

// get returns a connection for one exchange: the most recently used kept
// connection, or a new one; a new one always when fresh is set. A kept
// connection is not checked: php-fpm may have closed it while it was idle,
// which only a request sent on it tells (Client.Do sends only replayable
// requests on kept connections, and retries them). It waits for a slot when
// MaxConns are open, and fails with ErrBusy past QueueTimeout or MaxQueue.
func (p *pool) get(ctx context.Context, c *Client, fresh bool) (*pconn, error) {
	if ctx.Err() != nil {
		return nil, ctxErr(ctx)
	}
	pc, err := p.acquire(ctx, c, fresh)
	if err != nil {
		return nil, err
	}
	if pc != nil {
		if !fresh {
			p.reuses.Add(1)
			return pc, nil
		}
		pc.conn.Close() // to dial in its slot
	}
	pc, err = c.dialConn(ctx)
	if err != nil {
		p.drop()
		return nil, err
	}
	return pc, nil
}

// acquire takes a slot: with an idle connection if there is one, else
// empty. It waits in the queue when all slots are taken.
func (p *pool) acquire(ctx context.Context, c *Client, fresh bool) (*pconn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	// The top (most recent) for reuse; the bottom (oldest) to be replaced
	// by a fresh one, which keeps as few connections open as before.
	i := len(p.idle) - 1
	if fresh {
		i = 0
	}
	if pc := p.popIdle(i); pc != nil {
		p.mu.Unlock()
		return pc, nil
	}
	max := c.maxConns()
	if p.open < max {
		p.open++
		p.mu.Unlock()
		return nil, nil
	}
	if p.waiting >= c.maxQueue() {
		n := p.waiting
		p.mu.Unlock()
		p.busy.Add(1)
		return nil, fmt.Errorf("%w: %d requests waiting already", ErrBusy, n)
	}
	wait := c.queueTimeout()
	w := waiters.Get().(*waiter)
	w.deadline = time.Now().Add(wait)
	p.enqueue(w)
	if p.head == w { // the queue was empty: the timer is for w
		if p.qtimer == nil {
			p.qtimer = time.AfterFunc(wait, p.expire)
		} else {
			p.qtimer.Reset(wait)
		}
	}
	p.mu.Unlock()

	var g grant
	select {
	case g = <-w.ch:
	case <-ctx.Done():
		if !p.leave(w) {
			p.giveBack(<-w.ch)
		}
		waiters.Put(w)
		return nil, ctxErr(ctx)
	}
	waiters.Put(w)
	if g.err == errQueueTimeout {
		p.busy.Add(1)
		return nil, fmt.Errorf("%w: none of %d free after %v", ErrBusy, max, wait)
	}
	return g.pc, g.err
}

// expire ends the wait of the queued requests whose QueueTimeout has
// passed, and re-arms the queue's timer for the next one. The queue is in
// arrival order and every wait is as long, so its head is always the next
// to expire: one timer serves them all. It runs on that timer, which may
// fire early (its waiter was served) or late.
func (p *pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for p.head != nil && !now.Before(p.head.deadline) {
		p.dequeue().ch <- grant{err: errQueueTimeout}
	}
	if p.head != nil {
		p.qtimer.Reset(p.head.deadline.Sub(now))
	}
}

// leave takes w out of the queue; false means it was granted already.
func (p *pool) leave(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !w.queued {
		return false
	}
	p.unlink(w)
	return true
}

// giveBack returns an unused grant.
func (p *pool) giveBack(g grant) {
	switch {
	case g.err != nil:
	case g.pc != nil:
		p.put(g.pc)
	default:
		p.drop()
	}
}

// popIdle takes the idle connection at index i (the top is the last), with
// its slot; nil if there is none. Called with mu held.
func (p *pool) popIdle(i int) *pconn {
	n := len(p.idle)
	if i < 0 || i >= n {
		return nil
	}
	pc := p.idle[i]
	copy(p.idle[i:], p.idle[i+1:])
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return pc // the timer, if early now, finds nothing to reap
}

// put takes back a connection whose exchange ended cleanly: the first waiter
// gets it, else it goes on top of the idle stack.
//
// But while a request on a new connection has waited starveAfter for
// php-fpm's first byte, put closes the connection instead. php-fpm gives each open connection a
// worker until it closes, so when MaxConns is above pm.max_children a new
// connection waits in php-fpm's accept queue while kept connections hold
// every worker, and keeps waiting as long as they are reused: a stall until
// ReadTimeout. Closing a kept connection frees its worker for the oldest
// queued one. A slow script on a new connection costs some reuse, never a
// stall.
func (p *pool) put(pc *pconn) {
	if p.starving.Load() > 0 {
		p.yielded.Add(1)
		pc.conn.Close()
		p.drop()
		return
	}
	pc.reused = true
	c := pc.c
	p.mu.Lock()
	if p.closed {
		p.open--
		p.mu.Unlock()
		pc.conn.Close()
		return
	}
	if w := p.dequeue(); w != nil {
		w.ch <- grant{pc: pc}
		p.mu.Unlock()
		return
	}
	pc.idleAt = time.Now()
	p.idle = append(p.idle, pc)
	if len(p.idle) == 1 { // the new bottom
		if p.timer == nil {
			p.timer = time.AfterFunc(c.idleTimeout(), func() { p.reap(c) })
		} else {
			p.timer.Reset(c.idleTimeout())
		}
	}
	p.mu.Unlock()
}

// starveAfter is how long a request on a new connection may wait for its
// first byte before the pool suspects it waits for a php-fpm worker (see
// pool.put). Scripts slower than this on a new connection cost some reuse.
const starveAfter = 10 * time.Millisecond

// firstByteWatch counts an exchange on a new connection in pool.starving
// once it has waited starveAfter for its first byte, until it gets it, and
// then closes an idle connection (yieldIdle).
type firstByteWatch struct {
	p     *pool
	t     *time.Timer
	state atomic.Int32 // 0 waiting, 1 counted in p.starving, 2 done
}

func newFirstByteWatch(p *pool, after time.Duration) *firstByteWatch {
	w := &firstByteWatch{p: p}
	w.t = time.AfterFunc(after, func() {
		if w.state.CompareAndSwap(0, 1) {
			p.starving.Add(1)
			p.yieldIdle()
		}
	})
	return w
}

// yieldIdle closes the oldest idle connection, if any, when an exchange on
// a new connection is found waiting: an idle connection still holds its
// php-fpm worker, and with no exchange ending after it (put) the waiting
// one would wait until IdleTimeout.
func (p *pool) yieldIdle() {
	p.mu.Lock()
	pc := p.popIdle(0)
	p.mu.Unlock()
	if pc == nil {
		return
	}
	p.yielded.Add(1)
	pc.conn.Close()
	p.drop()
}

func (w *firstByteWatch) done() {
	switch w.state.Swap(2) {
	case 0:
		w.t.Stop()
	case 1:
		w.p.starving.Add(-1)
	}
}

// drop frees the slot of a connection that was closed (or never dialed): the
// first waiter gets it, to dial in.
func (p *pool) drop() {
	p.mu.Lock()
	if w := p.dequeue(); w != nil {
		w.ch <- grant{}
		p.mu.Unlock()
		return
	}
	p.open--
	p.mu.Unlock()
}

// reap closes the idle connections put back IdleTimeout ago or more, from
// the bottom of the stack, and re-arms the timer for the next one. It runs on
// the pool's timer, which may fire early (the bottom was taken) or late.
func (p *pool) reap(c *Client) {
	timeout := c.idleTimeout()
	for {
		p.mu.Lock()
		if len(p.idle) == 0 || p.closed {
			p.mu.Unlock()
			return
		}
		if d := timeout - time.Since(p.idle[0].idleAt); d > 0 {
			p.timer.Reset(d)
			p.mu.Unlock()
			return
		}
		pc := p.popIdle(0)
		p.open-- // idle was not empty: nobody waits
		p.mu.Unlock()
		p.idleClosed.Add(1)
		pc.conn.Close()
	}
}

// close closes the idle connections and fails the waiters; later gets fail,
// later puts close their connection.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.qtimer != nil {
		p.qtimer.Stop()
	}
	for w := p.dequeue(); w != nil; w = p.dequeue() {
		w.ch <- grant{err: ErrClosed}
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
}

func (p *pool) stats() PoolStats {
	p.mu.Lock()
	s := PoolStats{Open: p.open, Idle: len(p.idle), InUse: p.open - len(p.idle), Waiting: p.waiting}
	p.mu.Unlock()
	s.Dials = p.dials.Load()
	s.Reuses = p.reuses.Load()
	s.Retries = p.retries.Load()
	s.Busy = p.busy.Load()
	s.IdleClosed = p.idleClosed.Load()
	s.Yielded = p.yielded.Load()
	return s
}

// The waiter queue, under mu.

func (p *pool) enqueue(w *waiter) {
	w.queued = true
	w.prev = p.tail
	if p.tail != nil {
		p.tail.next = w
	} else {
		p.head = w
	}
	p.tail = w
	p.waiting++
}

func (p *pool) dequeue() *waiter {
	w := p.head
	if w != nil {
		p.unlink(w)
	}
	return w
}

func (p *pool) unlink(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		p.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		p.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	p.waiting--
}
