package h1

import (
	"io"
	"net/http"
	"sync"
)

// maxDrain is how much unread request body is read and discarded after
// the handler so that the connection can be kept (net/http's
// maxPostHandlerReadBytes); past it the connection closes.
const maxDrain = 256 << 10

// settle outcomes: what is left of a request body once the response
// begins.
const (
	drainOK     = iota // the body is read to its end
	drainTooBig        // more than maxDrain was left
	drainFailed        // a read error, or 100 Continue never answered: what is left on the wire is unknown
	drainClosed        // the handler closed the body before its end
)

// bodyReader is the request's Body when it has one. It sends 100 Continue
// on the first read if the client asked for it, notes the end of the body
// (for the client-gone watch and keep-alive), and, unlike http.ReadRequest's
// body, reads at most maxDrain of what is left on Close.
//
// One is allocated per request, never reused: a handler's goroutine or a
// Transport may still hold it after ServeHTTP has returned. Once the
// response is done, detach makes its reads fail, as net/http's closed body
// does, so that they never reach the connection's next request (or, the
// conn being pooled, another client's).
type bodyReader struct {
	mu             sync.Mutex // guards all below against such late reads
	c              *conn
	rc             io.ReadCloser // http.ReadRequest's body; nil: no body
	remaining      int64         // declared bytes not read yet; -1: chunked
	sawEOF         bool
	closed         bool
	detached       bool  // the request is over: c belongs to another
	err            error // first read error but EOF
	expectContinue bool  // Expect: 100-continue, answered on first read
	started        bool  // first Read done
}

func newBodyReader(c *conn, rc io.ReadCloser, n int64) *bodyReader {
	return &bodyReader{c: c, rc: rc, remaining: n}
}

// noBody is the state of a request without a body (conn.body's zero
// value): no reader was handed out.
var noBody = new(bodyReader)

// Read reads the body; after Close it fails with http.ErrBodyReadAfterClose.
func (b *bodyReader) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if !b.started {
		b.started = true
		b.c.bodyReadStart()
	}
	return b.read(p)
}

// read reads with b.mu held.
func (b *bodyReader) read(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.expectContinue {
		b.c.writeContinue()
	}
	n, err := b.rc.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	switch {
	case err == io.EOF:
		b.sawEOF = true
		b.c.bodyEOF()
	case err != nil:
		b.err = err
	}
	return n, err
}

// Close reads what is left of the body, up to maxDrain, as net/http does,
// so that the connection may be kept; later reads fail.
func (b *bodyReader) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if !b.expectContinue || b.c.continueSent() {
		b.drain()
	}
	b.closed = true
	return nil
}

// settle decides, as the response begins, what becomes of the body the
// handler left unread: with Expect: 100-continue not read to its end, or
// closed before it, nothing; else what is left is read, up to maxDrain.
func (b *bodyReader) settle() int {
	if b.rc == nil { // rc does not change: no lock
		return drainOK
	}
	if !b.mu.TryLock() {
		// Another goroutine of the handler is reading: the body is not
		// ours to drain, and where it ends on the wire is unknown.
		return drainFailed
	}
	defer b.mu.Unlock()
	switch {
	case b.sawEOF:
		return drainOK
	case b.detached:
		return drainFailed
	case b.expectContinue:
		return drainFailed
	case b.closed:
		return drainClosed
	}
	return b.drain()
}

// drain reads and discards the rest of the body, up to maxDrain, with b.mu
// held.
func (b *bodyReader) drain() int {
	switch {
	case b.sawEOF:
		return drainOK
	case b.err != nil:
		return drainFailed
	case b.remaining > maxDrain:
		return drainTooBig
	}
	b.c.drainStart()
	_, err := io.CopyN(io.Discard, readerFunc(b.read), maxDrain+1)
	switch {
	case err == nil:
		return drainTooBig
	case b.sawEOF:
		return drainOK
	}
	return drainFailed
}

// done reports whether the connection's reader is at the next request:
// no body, or the body read to its end.
func (b *bodyReader) done() bool {
	if b.rc == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sawEOF
}

// detach ends the request's hold on the connection: later reads fail. A
// read still in progress (a goroutine the handler left behind) is ended
// and waited for; the connection then closes (settle saw it busy).
func (b *bodyReader) detach() {
	if b.rc == nil {
		return
	}
	if !b.mu.TryLock() {
		b.c.mu.Lock() // bodyReadStart, on the reading goroutine, sets rdl under it
		b.c.rwc.SetReadDeadline(aLongTimeAgo)
		b.c.rdl = aLongTimeAgo
		b.c.mu.Unlock()
		b.mu.Lock()
	}
	b.closed, b.detached = true, true
	b.mu.Unlock()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
