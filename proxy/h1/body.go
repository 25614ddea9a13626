package h1

import (
	"io"
	"net/http"
)

// maxDrain is how much unread request body is read and discarded after
// the handler so that the connection can be kept (net/http's
// maxPostHandlerReadBytes); past it the connection closes.
const maxDrain = 256 << 10

// drain outcomes.
const (
	drainOK     = iota // the body is read to its end
	drainTooBig        // more than maxDrain was left
	drainFailed        // a read error: what is left on the wire is unknown
)

// bodyReader is the request's Body when it has one. It sends 100 Continue
// on the first read if the client asked for it, notes the end of the body
// (for the client-gone watch and keep-alive), and, unlike http.ReadRequest's
// body, does not read everything that is left on Close.
type bodyReader struct {
	c              *conn
	rc             io.ReadCloser // http.ReadRequest's body; nil: no body
	remaining      int64         // declared bytes not read yet; -1: chunked
	sawEOF         bool
	closed         bool
	err            error // first read error but EOF
	expectContinue bool  // Expect: 100-continue, answered on first read
	started        bool  // first Read done
}

func (b *bodyReader) reset(c *conn, rc io.ReadCloser, n int64) {
	*b = bodyReader{c: c, rc: rc, remaining: n}
}

// Read reads the body; after Close it fails with http.ErrBodyReadAfterClose.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if !b.started {
		b.started = true
		b.c.bodyReadStart()
	}
	return b.read(p)
}

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
	if b.closed {
		return nil
	}
	if !b.expectContinue || b.c.continueSent() {
		b.drain()
	}
	b.closed = true
	return nil
}

// drain reads and discards the rest of the body, up to maxDrain.
func (b *bodyReader) drain() int {
	switch {
	case b.sawEOF:
		return drainOK
	case b.err != nil:
		return drainFailed
	case b.remaining > maxDrain:
		return drainTooBig
	}
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
	return b.rc == nil || b.sawEOF
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
