package h1

import (
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"time"
)

// watchDelay is how long a handler runs, at least, before its connection is
// watched for the client going away: between watchDelay and twice that.
// Short requests (most) never pay for the watch, nor for a timer of their
// own: a connection's timer, once armed, stays armed across the requests it
// serves until it fires, and then starts the watch only if the request that
// runs is the one it was armed for; else it re-arms for that one. So a busy
// connection moves its timer once per watchDelay, not twice per request.
// Once it fires, and once the request body
// (if any) has been read to its end, a goroutine reads one byte from the
// connection: EOF or an error (the client closed or reset) cancels
// r.Context(); a byte (a pipelined request) is kept for the next request
// and ends the watch; a timeout (ours at the end of the handler, or the
// handler's own read deadline) ends it too. So r.Context() is done within
// watchDelay plus the network's delay of the client's close, or as soon as
// the handler's own body read or response write fails.
//
// A client that half-closes (shutdown(SHUT_WR)) after its request looks
// gone, as with net/http.
const watchDelay = 5 * time.Millisecond

// aLongTimeAgo is a deadline in the past, to end a pending read.
var aLongTimeAgo = time.Unix(1, 0)

// watch is conn's client-gone state; mu guards it and, while a handler
// runs, conn.rdl.
type watch struct {
	mu       sync.Mutex
	timer    *time.Timer
	running  bool // a handler runs
	bodyDone bool // the request has no body or it was read to its end
	fired    bool // the handler has run for watchDelay
	reading  bool // the background read is pending
	userRDL  bool // the handler set a read deadline
	wg       sync.WaitGroup
	rctx     *reqCtx // the request's context
	contSent bool    // 100 Continue was written
	armed    bool    // the timer is pending
	seq      uint64  // counts the handlers started
	armedFor uint64  // the seq the pending timer was armed for
}

// startWatch arms the watch for a handler about to run.
func (c *conn) startWatch(bodyDone bool) {
	c.mu.Lock()
	c.running, c.bodyDone, c.fired, c.reading, c.userRDL, c.contSent = true, bodyDone, false, false, false, false
	c.seq++
	if !c.armed {
		c.armLocked()
	}
	c.mu.Unlock()
}

// armLocked arms the timer for the handler running now.
func (c *conn) armLocked() {
	c.armed, c.armedFor = true, c.seq
	c.timer.Reset(watchDelay)
}

// stopWatch ends the watch once the handler has returned, waits for the
// background read, and cancels the request's context.
func (c *conn) stopWatch() {
	c.mu.Lock()
	c.running = false
	if c.reading {
		c.rwc.SetReadDeadline(aLongTimeAgo)
		c.rdl = aLongTimeAgo
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.rctx.cancel()
}

// watchFire runs watchDelay after the timer was armed. If the handler it was
// armed for still runs, that one has run for watchDelay; if another one runs,
// the timer is armed again for it; if none runs, it stays unarmed until the
// next one starts.
func (c *conn) watchFire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if !c.running {
		return
	}
	if c.armedFor != c.seq {
		c.armLocked()
		return
	}
	c.fired = true
	if c.bodyDone && !c.reading {
		c.startReadLocked()
	}
}

// bodyEOF is called when the handler has read the request body to its end.
func (c *conn) bodyEOF() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodyDone = true
	if c.running && c.fired && !c.reading {
		c.startReadLocked()
	}
}

func (c *conn) startReadLocked() {
	if c.cr.hasByte {
		// An earlier watch read the next request's first byte and the
		// requests in between were buffered: it is not consumed yet, and
		// the client is there (net/http's startBackgroundRead).
		return
	}
	c.reading = true
	if !c.userRDL && !c.rdl.IsZero() {
		c.rwc.SetReadDeadline(time.Time{})
		c.rdl = time.Time{}
	}
	c.wg.Add(1)
	go c.backgroundRead()
}

func (c *conn) backgroundRead() {
	defer c.wg.Done()
	n, err := c.rwc.Read(c.cr.byteBuf[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if n == 1 {
		c.cr.hasByte = true
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		c.cr.err = err
		c.rctx.cancel()
	}
}

// bodyReadStart lifts our idle or header deadline before the handler's
// first body read, unless the handler set its own.
func (c *conn) bodyReadStart() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.userRDL && !c.rdl.IsZero() {
		c.rwc.SetReadDeadline(time.Time{})
		c.rdl = time.Time{}
	}
}

// drainStart gives the drain of a body the handler left unread a read
// deadline of its own, unless the handler set one: the request's header
// deadline may have passed while the handler ran, or been set in the past
// to end the client-gone watch's read, and a drain that fails on it at
// once would end the request's context and the connection for nothing.
func (c *conn) drainStart() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userRDL {
		return
	}
	t := time.Now().Add(max(c.srv.ReadHeaderTimeout, c.srv.idleTimeout()))
	c.rdl = t
	c.rwc.SetReadDeadline(t)
}

// liftUserRead lifts a read deadline the handler set, once its request is
// done: it is the request's, not the next one's.
func (c *conn) liftUserRead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userRDL {
		c.userRDL = false
		c.rdl = time.Time{}
		c.rwc.SetReadDeadline(time.Time{})
	}
}

func (c *conn) setUserReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userRDL = true
	c.rdl = t
	return c.rwc.SetReadDeadline(t)
}

// writeContinue sends 100 Continue if the request asked and no response
// has begun.
func (c *conn) writeContinue() {
	if !c.continuePending.Load() {
		return
	}
	c.continueMu.Lock()
	defer c.continueMu.Unlock()
	if c.continuePending.Load() {
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		c.bw.Flush()
		c.continuePending.Store(false)
		c.contSent = true
	}
}

// disableContinue stops writeContinue: a response has begun.
func (c *conn) disableContinue() {
	if !c.continuePending.Load() {
		return
	}
	c.continueMu.Lock()
	c.continuePending.Store(false)
	c.continueMu.Unlock()
}

func (c *conn) continueSent() bool {
	c.continueMu.Lock()
	defer c.continueMu.Unlock()
	return c.contSent
}

// connReader is the connection under c.br: it bounds the header's size and
// hands over the byte (or error) of a background read.
type connReader struct {
	c       *conn
	remain  int64 // bytes c.br may read before the header limit
	hasByte bool
	byteBuf [1]byte
	err     error // sticky error of a background read
}

func (cr *connReader) reset() {
	cr.remain, cr.hasByte, cr.err = math.MaxInt64, false, nil
}

func (cr *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if cr.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	if cr.hasByte {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		cr.remain--
		return 1, nil
	}
	if cr.err != nil {
		return 0, cr.err
	}
	n, err := cr.c.rwc.Read(p)
	cr.remain -= int64(n)
	if err != nil && cr.c.rctx != nil {
		// The client is gone, or a deadline passed, under a body read:
		// the request's context ends, as net/http's handleReadError does,
		// so that the handler tells a client gone mid-upload (499) from a
		// bad body (400). Between requests it is the last one's, over.
		cr.c.rctx.cancel()
	}
	return n, err
}
