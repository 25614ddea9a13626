package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// sendChunk is the most one sendfile call may send under one deadline: a
// client must take this much within send-timeout (7/8 of it, as the
// deadline moves lazily), 4.7 KB/s at the default 60s. nginx's
// sendfile_max_chunk is 2m.
const sendChunk = 256 << 10

// sendTimeoutListener's connections give up a write that waits more than
// timeout for the client to take bytes (nginx's send_timeout): without it,
// a client that stops reading holds its connection, its goroutine and, for
// a streamed PHP response, a php-fpm worker, for ever. It wraps the TCP
// listener, under the PROXY protocol and TLS, so that every server and
// protocol on top gets it.
type sendTimeoutListener struct {
	net.Listener
	timeout time.Duration
	log     *zap.Logger
}

func (l *sendTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sendTimeoutConn{Conn: c, timeout: l.timeout, log: l.log}, nil
}

// sendTimeoutConn sets the write deadline before each write, lazily: it
// moves only when it would be less than 7/8 of the timeout away, so a
// busy connection makes one SetWriteDeadline per timeout/8, not one per
// write. A deadline set through SetWriteDeadline or SetDeadline (a
// handler's http.ResponseController, the TLS handshake) takes over until it
// is cleared.
type sendTimeoutConn struct {
	net.Conn
	timeout  time.Duration
	log      *zap.Logger
	peer     net.Conn     // the one the HTTP servers see, if not this (the PROXY protocol's)
	deadline atomic.Int64 // the deadline arm set, in Unix ns; 0: none
	explicit atomic.Bool  // a deadline set by the caller is in force
	logged   atomic.Bool
	lr       io.LimitedReader
}

func (c *sendTimeoutConn) arm() {
	if c.explicit.Load() {
		return
	}
	dl := time.Now().Add(c.timeout)
	want := dl.UnixNano()
	if d := c.deadline.Load(); d != 0 && want-d <= int64(c.timeout/8) {
		return
	}
	c.deadline.Store(want)
	c.Conn.SetWriteDeadline(dl)
}

func (c *sendTimeoutConn) Write(b []byte) (int, error) {
	c.arm()
	n, err := c.Conn.Write(b)
	if err != nil {
		c.timedOut(err)
	}
	return n, err
}

// timedOut logs, once, that err is the send timeout's: the access log's
// line has the status and the bytes sent, this one says why they stop
// (nginx: "client timed out ... while sending response to client").
func (c *sendTimeoutConn) timedOut(err error) {
	if !errors.Is(err, os.ErrDeadlineExceeded) || c.explicit.Load() || c.logged.Swap(true) {
		return
	}
	if ce := c.log.Check(zap.InfoLevel, "client took nothing for send-timeout: connection cut"); ce != nil {
		var peer net.Conn = c
		if c.peer != nil {
			peer = c.peer
		}
		ce.Write(zap.Stringer("peer", peer.RemoteAddr()), zap.Duration("send_timeout", c.timeout))
	}
}

// ReadFrom keeps sendfile for a file (alone or under an io.LimitedReader,
// as net/http and proxy/h1 pass it) in chunks of sendChunk, each under a
// deadline of its own, so that a long download to a client that keeps
// reading is not cut. Any other source is copied through Write.
func (c *sendTimeoutConn) ReadFrom(r io.Reader) (int64, error) {
	lr, limited := r.(*io.LimitedReader)
	src := r
	if limited {
		src = lr.R
	}
	f, isFile := src.(*os.File)
	rf, ok := c.Conn.(io.ReaderFrom)
	if !isFile || !ok {
		return io.Copy(connWriter{c}, r)
	}
	var total int64
	for {
		n := int64(sendChunk)
		if limited && lr.N < n {
			n = lr.N
		}
		if n <= 0 {
			return total, nil
		}
		c.arm()
		c.lr = io.LimitedReader{R: f, N: n}
		m, err := rf.ReadFrom(&c.lr)
		total += m
		if limited {
			lr.N -= m
		}
		if err != nil || m < n {
			if err != nil {
				c.timedOut(err)
			}
			return total, err
		}
	}
}

func (c *sendTimeoutConn) SetWriteDeadline(t time.Time) error {
	c.explicit.Store(!t.IsZero())
	c.deadline.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

func (c *sendTimeoutConn) SetDeadline(t time.Time) error {
	c.explicit.Store(!t.IsZero())
	c.deadline.Store(0)
	return c.Conn.SetDeadline(t)
}

// CloseWrite and SetLinger reach the TCP connection, as on a plain
// listener: the HTTP servers half-close before refusing a body, and reset
// an aborted response.
func (c *sendTimeoutConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *sendTimeoutConn) SetLinger(sec int) error {
	if sl, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return sl.SetLinger(sec)
	}
	return nil
}

// connWriter is c without ReadFrom, for io.Copy inside ReadFrom.
type connWriter struct{ c *sendTimeoutConn }

func (w connWriter) Write(b []byte) (int, error) { return w.c.Write(b) }

// streamSendTimeout bounds each write of an HTTP/2 response by
// send-timeout. A client that gives a stream no flow-control window stops
// the handler's writes while the connection stays healthy (its own
// frames read, SETTINGS and PING answered), so the connection's deadline
// never sees it. A timer of its own runs during each write or flush that
// may wait for the client; if the write is still under way when it fires,
// the stream's write deadline is set in the past, which makes Go's HTTP/2
// server reset the stream at once, and the write fails. Between writes no
// timer runs: a response that pauses (a slow script) is not cut.
//
// The timer is the wrapper's, not HTTP/2's own write deadline set before
// and lifted after each write: that costs two messages to the
// connection's goroutine and a timer each time (+20% CPU on a small
// response), and a deadline set on a stream that has just closed makes a
// timer nothing stops, which resets the closed stream later.
type streamSendTimeout struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	log     *zap.Logger
	peer    string
	pending int // bytes written since the last flush, at most h2Buffer

	mu      sync.Mutex
	timer   *time.Timer // made by the first guarded write
	started time.Time   // of the guarded write under way; zero: none
}

// h2Buffer is what Go's HTTP/2 server holds of a handler's writes before
// it sends them (http2handlerChunkWriteSize): a write that still fits, since
// the last flush, returns without waiting for the client, so it needs no
// guard. Only the count since the last flush is known, never less than
// what is held: a write is left unguarded only when it surely fits.
const h2Buffer = 4 << 10

func newStreamSendTimeout(w http.ResponseWriter, r *http.Request, timeout time.Duration, log *zap.Logger) *streamSendTimeout {
	return &streamSendTimeout{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout, log: log, peer: r.RemoteAddr}
}

func (w *streamSendTimeout) Write(b []byte) (int, error) {
	if w.pending+len(b) <= h2Buffer {
		w.pending += len(b)
		return w.ResponseWriter.Write(b)
	}
	start := w.begin()
	n, err := w.ResponseWriter.Write(b)
	w.end(start, err)
	w.pending = h2Buffer // what is held now is not known
	return n, err
}

func (w *streamSendTimeout) FlushError() error {
	start := w.begin()
	err := w.rc.Flush()
	w.end(start, err)
	w.pending = 0
	return err
}

func (w *streamSendTimeout) Flush() { w.FlushError() }

// begin starts the timer for a guarded write.
func (w *streamSendTimeout) begin() time.Time {
	now := time.Now()
	w.mu.Lock()
	w.started = now
	if w.timer == nil {
		w.timer = time.AfterFunc(w.timeout, w.expire)
	} else {
		w.timer.Reset(w.timeout)
	}
	w.mu.Unlock()
	return now
}

// end stops it, and logs err if the timer's reset caused it.
func (w *streamSendTimeout) end(start time.Time, err error) {
	w.mu.Lock()
	w.started = time.Time{}
	w.timer.Stop()
	w.mu.Unlock()
	if err == nil || time.Since(start) < w.timeout {
		return
	}
	if ce := w.log.Check(zap.InfoLevel, "client took nothing for send-timeout: stream reset"); ce != nil {
		ce.Write(zap.String("peer", w.peer), zap.Duration("send_timeout", w.timeout))
	}
}

// expire is the timer's: it resets the stream if the write it was started
// for is still under way (not if that one ended and another began since).
func (w *streamSendTimeout) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started.IsZero() && time.Since(w.started) >= w.timeout {
		w.rc.SetWriteDeadline(time.Unix(1, 0)) // past: HTTP/2 resets the stream now
	}
}

// done is called once the handler returned: what HTTP/2 still holds of
// the response is sent under the timer, so that its own last flush (the
// END_STREAM, which needs no window) cannot wait.
func (w *streamSendTimeout) done() {
	if w.pending > 0 {
		w.FlushError()
	}
}

func (w *streamSendTimeout) Unwrap() http.ResponseWriter { return w.ResponseWriter }
