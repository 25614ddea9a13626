package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"

	"realroot/proxy/fcgi"
)

// Backend is one php-fpm of a Balancer.
type Backend struct {
	// Addr names it in the log and in Stats, e.g. "unix:/run/php/fpm.sock"
	// or "10.0.0.2:9000".
	Addr string
	// Upstream runs its exchanges: an *fcgi.Client. When its Do returns an
	// error it must be done with req.Stdin (no goroutine reads it on).
	Upstream Upstream
}

// BalancerOptions configure a Balancer.
type BalancerOptions struct {
	// FailTimeout is how long a backend is skipped after a request or a
	// health check to it could not connect or timed out, like nginx's
	// fail_timeout with max_fails=1. A successful request or health check
	// ends it early. Zero means 10s.
	FailTimeout time.Duration
	// HealthInterval is the period of the active health check that Run
	// does: one FastCGI request to every backend, marking it down when it
	// cannot connect, times out or answers badly, and up when it answers.
	// Zero means none: only requests mark backends down and up.
	HealthInterval time.Duration
	// PingPath is php-fpm's ping.path, asked by the health check, which
	// then wants status 200. Empty means a request for a script that does
	// not exist: any well-formed answer (php-fpm's 404) will do.
	PingPath string
	// Logger receives "upstream down" and "upstream up". Nil means none.
	Logger *zap.Logger
}

// Balancer is an Upstream that spreads requests over several php-fpm
// backends: each goes to the healthy backend with the fewest exchanges in
// flight (from Do until the response body is closed), ties taken in turn.
//
// A request that could not connect or timed out marks its backend down for
// FailTimeout: it is skipped while another is up, never refused for it.
// Once FailTimeout has passed, one request tries it (nginx's one request
// per fail_timeout); the others skip it until that one's outcome.
//
// A request is tried on another backend only when it never reached the
// first: the connection failed (fcgi.ErrConnect: nothing of the request was
// delivered) or every connection stayed busy (fcgi.ErrBusy: it waited in
// realroot's queue and was never sent). A request body is sent again from
// its start when req.Stdin is an io.Seeker (the handler's spooled body is),
// else a request with a body is not retried. Nothing else is retried: not a
// timeout, a truncated response, nor anything after the request was sent,
// since php-fpm may have run it. Each backend is tried once per request.
type Balancer struct {
	backends []backend
	opts     BalancerOptions
	log      *zap.Logger
	next     atomic.Uint32 // the backend picked last; ties go to the first after it
	epoch    time.Time
	now      func() time.Time // time.Now; tests move it
}

// backend is a Backend and its state.
type backend struct {
	Backend
	inFlight  atomic.Int64
	requests  atomic.Uint64
	failures  atomic.Uint64
	downUntil atomic.Int64 // on the Balancer's clock; skipped before it, zero when up
	down      atomic.Bool  // its last outcome was a failure; written under mu

	mu     sync.Mutex // orders the transitions and their log lines, one each
	downAt int64      // the clock when last marked down; guarded by mu
}

// NewBalancer returns a Balancer over backends. Call Run for the active
// health check.
func NewBalancer(backends []Backend, opts BalancerOptions) *Balancer {
	if opts.FailTimeout <= 0 {
		opts.FailTimeout = 10 * time.Second
	}
	b := &Balancer{backends: make([]backend, len(backends)), opts: opts, log: opts.Logger, epoch: time.Now(), now: time.Now}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	for i, be := range backends {
		b.backends[i].Backend = be
	}
	b.next.Store(uint32(len(backends) - 1)) // the first pick starts at the first backend
	return b
}

// clock is the time since the Balancer was made (monotonic).
func (b *Balancer) clock() int64 { return int64(b.now().Sub(b.epoch)) }

// Do sends req to the healthy backend with the fewest exchanges in flight,
// and to the next one while it did not reach php-fpm (see Balancer). Like
// fcgi.Client.Do, it closes req.Stdin, also on error.
func (b *Balancer) Do(ctx context.Context, req *gofast.Request) (*fcgi.Response, error) {
	if len(b.backends) == 0 {
		if req.Stdin != nil {
			req.Stdin.Close()
		}
		return nil, fmt.Errorf("%w: no php-fpm address", fcgi.ErrConnect)
	}
	hasBody := req.Stdin != nil
	var body *replay
	if s, ok := req.Stdin.(io.ReadSeeker); ok && len(b.backends) > 1 {
		body = &replay{ReadSeeker: s, orig: req.Stdin}
		req.Stdin = body
		defer func() { req.Stdin = body.orig }()
	}
	var (
		tried   []bool // nil until a retry
		lastErr error
	)
	for {
		i := b.pick(tried)
		if i < 0 { // every backend was tried
			body.finish()
			return nil, lastErr
		}
		if tried != nil && body != nil {
			if err := body.rewind(); err != nil {
				body.finish()
				return nil, fmt.Errorf("%w (not retried: rewind request body: %v)", lastErr, err)
			}
		}
		be := &b.backends[i]
		be.inFlight.Add(1)
		be.requests.Add(1)
		var sent int64 // zero: sent while be was up
		if be.down.Load() {
			sent = b.clock()
		}
		resp, err := be.Upstream.Do(ctx, req)
		if err == nil {
			body.finish()
			b.markUp(be, sent, "request answered")
			resp.Body = &countedBody{ReadCloser: resp.Body, be: be}
			return resp, nil
		}
		be.inFlight.Add(-1)
		err = fmt.Errorf("upstream %s: %w", be.Addr, err)
		// Also when the client left: an exchange ended by ctx fails with
		// ctx's error, so a connect failure or timeout here is php-fpm's,
		// e.g. after the client left with a Finisher ctx keeping it going.
		if errors.Is(err, fcgi.ErrConnect) || errors.Is(err, fcgi.ErrTimeout) {
			b.markDown(be, "request failed", err)
		}
		gone := ctx.Err() != nil
		if gone || !notSent(err) || hasBody && body == nil {
			body.finish()
			return nil, err
		}
		if tried == nil {
			tried = make([]bool, len(b.backends))
		}
		tried[i], lastErr = true, err
	}
}

// notSent reports whether err proves that the request never reached
// php-fpm, so that another backend may run it.
func notSent(err error) bool {
	return errors.Is(err, fcgi.ErrConnect) || errors.Is(err, fcgi.ErrBusy)
}

// pick returns the backend to try: among those not tried, the one with the
// fewest exchanges in flight of those up, else of those down; ties go to
// the first after the backend picked last, so that they are taken in turn
// (a start that merely moved by one at every pick would favour the backend
// after a busy one). It returns -1 when every backend was tried.
func (b *Balancer) pick(tried []bool) int {
	for {
		last := b.next.Load()
		i, trial := b.pickFrom(tried, int((last+1)%uint32(len(b.backends))))
		// Concurrent picks from the same start would take the same tie:
		// the one that loses starts again after the winner's.
		if i < 0 {
			return i
		}
		if !b.next.CompareAndSwap(last, uint32(i)) {
			continue
		}
		// A down backend whose fail-timeout has passed gets one request,
		// this one, as nginx sends one per fail_timeout: it stays down
		// for the others until the trial's outcome marks it up, or down
		// for another FailTimeout. The pick that loses the trial to
		// another starts again.
		if trial == 0 || b.backends[i].downUntil.CompareAndSwap(trial, b.clock()+int64(b.opts.FailTimeout)) {
			return i
		}
	}
}

// pickFrom is pick with ties going to the first from start. When the
// backend it returns is down with its fail-timeout passed, the second result
// is its downUntil, for pick to claim the trial with; else 0.
func (b *Balancer) pickFrom(tried []bool, start int) (int, int64) {
	n := len(b.backends)
	now := int64(-1) // read when needed: a backend is down
	up, down := -1, -1
	var upLoad, downLoad, upUntil int64
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		if tried != nil && tried[i] {
			continue
		}
		be := &b.backends[i]
		load := be.inFlight.Load()
		until := be.downUntil.Load()
		if until != 0 {
			if now < 0 {
				now = b.clock()
			}
			if until > now {
				if down < 0 || load < downLoad {
					down, downLoad = i, load
				}
				continue
			}
		}
		if up < 0 || load < upLoad {
			up, upLoad, upUntil = i, load, until
		}
	}
	if up >= 0 {
		return up, upUntil
	}
	return down, 0
}

// markDown records a failure of be: it is skipped for FailTimeout. The
// transition from up is logged.
func (b *Balancer) markDown(be *backend, reason string, err error) {
	be.failures.Add(1)
	be.mu.Lock()
	be.downAt = b.clock()
	be.downUntil.Store(be.downAt + int64(b.opts.FailTimeout))
	if !be.down.Swap(true) {
		// Under mu, so that the lines come out in the transitions' order.
		b.log.Warn("upstream down",
			zap.String("upstream", be.Addr),
			zap.String("reason", reason),
			zap.Error(err),
			zap.Duration("fail_timeout", b.opts.FailTimeout))
	}
	be.mu.Unlock()
}

// markUp records a success of be, of an exchange sent at the clock's sent:
// it is no longer skipped. An exchange sent before be was marked down tells
// nothing of now (it may have been answered just before php-fpm died). The
// transition from down is logged.
func (b *Balancer) markUp(be *backend, sent int64, reason string) {
	if !be.down.Load() {
		return
	}
	be.mu.Lock()
	if be.down.Load() && sent >= be.downAt {
		be.down.Store(false)
		be.downUntil.Store(0)
		b.log.Info("upstream up", zap.String("upstream", be.Addr), zap.String("reason", reason))
	}
	be.mu.Unlock()
}

// countedBody counts an exchange in its backend's in-flight count until
// the response body is closed.
type countedBody struct {
	io.ReadCloser
	be   *backend
	done atomic.Bool
}

func (c *countedBody) Close() error {
	err := c.ReadCloser.Close()
	if c.done.CompareAndSwap(false, true) {
		c.be.inFlight.Add(-1)
	}
	return err
}

// replay is a seekable request body that may be sent again. An upstream
// closes the body it is given, also on error; replay holds that Close back
// until finish says no other attempt follows.
type replay struct {
	io.ReadSeeker
	orig io.ReadCloser

	mu     sync.Mutex
	closed bool // closed by the upstream, not yet passed on
	final  bool // no attempt follows: Close passes on
}

func (r *replay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.final {
		return r.orig.Close()
	}
	r.closed = true
	return nil
}

// rewind readies the body for the next attempt: from its start. The upstream
// of the previous one returned an error, so it reads it no more.
func (r *replay) rewind() error {
	r.mu.Lock()
	r.closed = false
	r.mu.Unlock()
	_, err := r.Seek(0, io.SeekStart)
	return err
}

// finish passes a Close held back on, and later ones. r may be nil.
func (r *replay) finish() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.final = true
	if r.closed {
		r.closed = false
		r.orig.Close()
	}
}
