package h1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"time"
)

// waitRequest waits for the first byte of the next request (at most the
// idle timeout), marks c active, and arms the header timeout unless the
// whole header is already read. A new connection's first request has the
// header timeout from the accept instead, as with net/http. It reports
// false if c is to close.
func (c *conn) waitRequest() bool {
	s := c.srv
	c.cr.remain = s.maxHeaderBytes() + 4096
	if c.state.Load() == stateNew {
		d := s.ReadHeaderTimeout
		if d <= 0 {
			d = s.idleTimeout()
		}
		c.armRead(d)
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
		return c.state.CompareAndSwap(stateNew, stateActive)
	}
	if c.br.Buffered() == 0 {
		c.armRead(s.idleTimeout())
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	// Not fooled by the CRLFs readRequest tolerates after a POST.
	if b, _ := c.br.Peek(c.br.Buffered()); !bytes.Contains(bytes.TrimLeft(b, "\r\n"), crlfcrlf) {
		c.armRead(s.ReadHeaderTimeout)
	} else if !c.rdl.IsZero() && time.Now().After(c.rdl) {
		// The whole header is here, but the deadline has passed (the
		// client-gone watch ends its read so): the body must not
		// inherit it.
		c.armRead(s.ReadHeaderTimeout)
	}
	return true
}

var crlfcrlf = []byte("\r\n\r\n")

// armRead sets the read deadline d from now (none if d is 0), unless the
// one already set is within min(d/16, 1s) before that: kept connections do
// not move their deadline on every request.
func (c *conn) armRead(d time.Duration) {
	if d <= 0 {
		if !c.rdl.IsZero() {
			c.rwc.SetReadDeadline(time.Time{})
			c.rdl = time.Time{}
		}
		return
	}
	want := time.Now().Add(d)
	if !c.rdl.IsZero() && !c.rdl.After(want) && c.rdl.After(want.Add(-min(d/16, time.Second))) {
		return
	}
	c.rwc.SetReadDeadline(want)
	c.rdl = want
}

// errTooLarge is a request line and header over MaxHeaderBytes.
var errTooLarge = errors.New("h1: request header too large")

// statusError is a request refused with a status and a reason.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

func (c *conn) readRequest() (*http.Request, error) {
	if c.lastPOST {
		// RFC 7230 section 3 tolerance for old buggy clients (net/http).
		peek, _ := c.br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		c.br.Discard(n)
	}
	// The header as received, when it is all in the buffer: ReadRequest
	// then does not refill it, and it stays readable after.
	var raw []byte
	if b, _ := c.br.Peek(c.br.Buffered()); len(b) > 0 {
		if end := headerEnd(b); end >= 0 {
			raw = b[:end]
		}
	}
	absoluteNoHost := absoluteFormWithoutHost(raw)
	req, err := http.ReadRequest(c.br)
	if err != nil {
		if c.cr.remain <= 0 {
			return nil, errTooLarge
		}
		return nil, err
	}
	c.cr.remain = math.MaxInt64
	if ambiguousFraming(req, raw) {
		req.Close = true // the response says Connection: close
	}
	c.lastPOST = req.Method == http.MethodPost
	if req.ProtoMajor != 1 {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	// http.ReadRequest (textproto) already refuses invalid header values
	// and more than one Host, not names with spaces; it removes Host from req.Header and
	// sets req.Host (the URI's authority first). So, unlike net/http, an
	// empty Host is refused like a missing one.
	if req.ProtoAtLeast(1, 1) && (req.Host == "" || absoluteNoHost) && req.Method != http.MethodConnect {
		return nil, statusError{http.StatusBadRequest, "missing required Host header"}
	}
	if !validHost(req.Host) {
		return nil, statusError{http.StatusBadRequest, "malformed Host header"}
	}
	for k := range req.Header {
		if !validFieldName(k) {
			return nil, statusError{http.StatusBadRequest, "invalid header name"}
		}
	}
	return req, nil
}

// absoluteFormWithoutHost reports whether raw, a request's header, has an
// absolute-form target ("GET http://h/ HTTP/1.1") and no Host field, which
// RFC 9112 section 3.2 refuses and http.ReadRequest hides (its req.Host is
// the URI's). A nil raw (the header was not all in the buffer) is not
// looked at.
func absoluteFormWithoutHost(raw []byte) bool {
	sp := bytes.IndexByte(raw, ' ')
	if sp < 0 || sp+1 >= len(raw) || raw[sp+1] == '/' {
		return false
	}
	return !hasField(raw, "host:")
}

// ambiguousFraming reports whether req's body framing is one that a proxy
// in front may have read differently, after which the connection must
// close (RFC 9112 sections 6.1 and 6.3): Transfer-Encoding with
// Content-Length, or Transfer-Encoding in HTTP/1.0. http.ReadRequest
// removes the evidence (Content-Length when chunked, Transfer-Encoding in
// 1.0), so raw, the header as received, is asked; without it, any chunked
// or HTTP/1.0 request with a body field is taken as ambiguous.
func ambiguousFraming(req *http.Request, raw []byte) bool {
	switch {
	case len(req.TransferEncoding) > 0:
		return raw == nil || hasField(raw, "content-length:")
	case req.ProtoMinor == 0:
		return raw == nil || hasField(raw, "transfer-encoding:")
	}
	return false
}

// headerEnd returns the length of the request line and fields at the start
// of b, up to the empty line that ends them, or -1 if b does not hold it.
// As for http.ReadRequest (textproto), a line ends at an LF, with or
// without a CR before it: a field after a bare LF is a field.
func headerEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if rest := b[i:]; len(rest) > 0 && rest[0] == '\n' || bytes.HasPrefix(rest, []byte("\r\n")) {
			return i
		}
	}
}

// hasField reports whether a line of raw after the request line begins
// with name (lower case, with its colon), in any case. Lines end at LF, as
// in headerEnd.
func hasField(raw []byte, name string) bool {
	for {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return false
		}
		raw = raw[i+1:]
		if len(raw) >= len(name) && bytes.EqualFold(raw[:len(name)], []byte(name)) {
			return true
		}
	}
}

// replyError answers a request that could not be read, as net/http does,
// or says nothing if the client went or was too slow. It returns the
// status sent, why, and the length of the body sent; status 0 when nothing
// was.
func (c *conn) replyError(err error) (status int, reason string, bytes int) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	switch {
	case err == errTooLarge:
		const msg = "431 Request Header Fields Too Large"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
		c.closeWriteAndWait()
		return http.StatusRequestHeaderFieldsTooLarge, "request header too large", len(msg)
	case isUnsupportedTE(err):
		const msg = "Unsupported transfer encoding"
		io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+errorHeaders+msg)
		return http.StatusNotImplemented, "unsupported transfer encoding", len(msg)
	case isCommonNetReadError(err):
		return 0, "", 0
	case errors.As(err, &se):
		msg := fmt.Sprintf("%d %s: %s", se.code, http.StatusText(se.code), se.text)
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
		return se.code, se.text, len(msg)
	default:
		const msg = "400 Bad Request"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
		return http.StatusBadRequest, err.Error(), len(msg)
	}
}

// isUnsupportedTE matches net/http's unexported *unsupportedTEError (a
// Transfer-Encoding other than one "chunked"): no exported way to tell it.
// TestBadRequests pins the 501 should Go rename it.
func isUnsupportedTE(err error) bool {
	return reflect.TypeOf(err).String() == "*http.unsupportedTEError"
}

func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}
