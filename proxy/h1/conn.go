package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Connection states, for Shutdown.
const (
	stateIdle   = iota // waiting for a request's first byte (new or kept)
	stateActive        // reading or serving a request
	stateClosed        // closed by Shutdown while idle
)

// rstAvoidanceDelay is how long a connection closed with unread request
// body waits after its response, so that the client reads the response
// before the kernel answers its data with a reset (net/http's value).
const rstAvoidanceDelay = 500 * time.Millisecond

// conn is one client connection and everything its requests reuse. It is
// pooled: fields are reset by newConn and release.
type conn struct {
	srv        *Server
	rwc        net.Conn
	remoteAddr string
	baseCtx    context.Context // carries http.LocalAddrContextKey
	state      atomic.Int32

	cr       connReader
	br       *bufio.Reader
	bw       *bufio.Writer
	werr     error // first write error: the connection is done
	w        response
	body     bodyReader
	lr       io.LimitedReader
	sniff    [sniffLen]byte
	lastPOST bool // the previous request was a POST (stray CRLF tolerance)

	rdl     time.Time // the read deadline as last set by us; zero: none
	userWDL bool      // the handler set a write deadline

	continuePending atomic.Bool // Expect: 100-continue not answered yet
	continueMu      sync.Mutex

	watch // client-gone detection (watch.go)
}

var connPool = sync.Pool{New: func() any {
	c := new(conn)
	c.cr.c = c
	c.br = bufio.NewReaderSize(&c.cr, 4<<10)
	c.bw = bufio.NewWriterSize((*connWriter)(c), 8<<10)
	c.w.buf = make([]byte, 0, bodyBufferSize)
	c.timer = time.AfterFunc(time.Hour, c.watchFire)
	c.timer.Stop()
	return c
}}

func newConn(s *Server, rwc net.Conn) *conn {
	c := connPool.Get().(*conn)
	c.srv = s
	c.rwc = rwc
	c.remoteAddr = rwc.RemoteAddr().String()
	c.baseCtx = context.WithValue(context.Background(), http.LocalAddrContextKey, rwc.LocalAddr())
	c.state.Store(stateIdle)
	c.cr.reset()
	c.br.Reset(&c.cr)
	c.bw.Reset((*connWriter)(c))
	return c
}

// release returns c to the pool; its goroutine and watch are over.
func (c *conn) release() {
	c.srv, c.rwc, c.baseCtx, c.werr = nil, nil, nil, nil
	c.w = response{buf: c.w.buf[:0], header: c.w.header}
	c.body = bodyReader{}
	c.rdl, c.userWDL, c.lastPOST = time.Time{}, false, false
	c.cancel = nil
	connPool.Put(c)
}

// connWriter is the connection as c.bw's destination: it records the first
// write error and cancels the request's context on it.
type connWriter conn

func (cw *connWriter) Write(p []byte) (int, error) {
	c := (*conn)(cw)
	if c.werr != nil {
		return 0, c.werr
	}
	n, err := c.rwc.Write(p)
	if err != nil {
		c.werr = err
		if c.cancel != nil {
			c.cancel()
		}
	}
	return n, err
}

// closeIfIdle closes c if it is waiting for a request (Shutdown).
func (c *conn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosed) {
		c.rwc.Close()
	}
}

// serve runs c's requests one after the other.
func (c *conn) serve() {
	abort := false
	defer func() {
		if abort {
			if tc, ok := c.rwc.(interface{ SetLinger(int) error }); ok {
				tc.SetLinger(0) // a reset: the client must not take a cut response as whole
			}
		}
		c.rwc.Close()
		c.srv.trackConn(c, false)
		c.release()
	}()
	s := c.srv
	for {
		if !c.waitRequest() {
			return
		}
		req, err := c.readRequest()
		if err != nil {
			c.replyError(err)
			return
		}
		w := &c.w
		ctx, cancel := context.WithCancel(c.baseCtx)
		req = req.WithContext(ctx)
		req.RemoteAddr = c.remoteAddr
		hasBody := req.Body != http.NoBody
		if hasBody {
			c.body.reset(c, req.Body, req.ContentLength)
			req.Body = &c.body
		} else {
			c.body.reset(c, nil, 0)
		}
		w.reset(c, req)
		c.cancel = cancel
		if ex := req.Header.Get("Expect"); ex != "" {
			if !hasToken(ex, "100-continue") {
				w.Header().Set("Connection", "close")
				w.WriteHeader(http.StatusExpectationFailed)
				w.finish()
				cancel()
				return
			}
			if w.proto11 && req.ContentLength != 0 {
				c.body.expectContinue = true
				c.continuePending.Store(true)
			}
		}
		if c.runHandler(w, req, hasBody) {
			abort = true
			return
		}
		w.finish()
		c.continuePending.Store(false)
		if c.userWDL {
			c.rwc.SetWriteDeadline(time.Time{})
			c.userWDL = false
		}
		if !w.shouldReuse() {
			// Request body left unread (the handler refused it, or the
			// drain stopped): as net/http, let the client read the
			// response before its unread data makes the close a reset.
			if w.bodyLimitHit || !c.body.done() {
				c.closeWriteAndWait()
			}
			return
		}
		c.state.Store(stateIdle)
		if s.inShutdown.Load() {
			return
		}
	}
}

// runHandler calls the handler, recovering its panic: it reports whether
// there was one (http.ErrAbortHandler is not logged).
func (c *conn) runHandler(w *response, req *http.Request, hasBody bool) (panicked bool) {
	c.startWatch(!hasBody)
	defer func() {
		c.stopWatch()
		if v := recover(); v != nil {
			panicked = true
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logger().Error("handler panic", zap.String("remote_addr", c.remoteAddr),
					zap.String("uri", req.RequestURI), zap.Any("panic", v), zap.ByteString("stack", buf))
			}
		}
	}()
	if req.RequestURI == "*" && req.Method == http.MethodOptions {
		globalOptions(w, req) // as net/http: handlers never see "*"
		return false
	}
	c.srv.Handler.ServeHTTP(w, req)
	return false
}

func globalOptions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, io.LimitReader(r.Body, 4<<10))
	}
}

// waitRequest waits for the first byte of the next request (at most the
// idle timeout), marks c active, and arms the header timeout unless the
// whole header is already read. It reports false if c is to close.
func (c *conn) waitRequest() bool {
	s := c.srv
	c.cr.remain = s.maxHeaderBytes() + 4096
	if c.br.Buffered() == 0 {
		c.armRead(s.idleTimeout())
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	if b, _ := c.br.Peek(c.br.Buffered()); !bytes.Contains(b, crlfcrlf) {
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
	absoluteNoHost := c.absoluteFormWithoutHost()
	req, err := http.ReadRequest(c.br)
	if err != nil {
		if c.cr.remain <= 0 {
			return nil, errTooLarge
		}
		return nil, err
	}
	c.cr.remain = math.MaxInt64
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

// absoluteFormWithoutHost reports whether the buffered request has an
// absolute-form target ("GET http://h/ HTTP/1.1") and no Host field, which
// RFC 9112 section 3.2 refuses and http.ReadRequest hides (its req.Host is
// the URI's). Only a header entirely in the buffer is looked at.
func (c *conn) absoluteFormWithoutHost() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 || sp+1 >= len(b) || b[sp+1] == '/' {
		return false
	}
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		return false
	}
	for _, line := range bytes.Split(b[:end], []byte("\r\n"))[1:] {
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			return false
		}
	}
	return true
}

// replyError answers a request that could not be read, as net/http does,
// or says nothing if the client went or was too slow.
func (c *conn) replyError(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	switch {
	case err == errTooLarge:
		const msg = "431 Request Header Fields Too Large"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
		c.closeWriteAndWait()
	case isUnsupportedTE(err):
		io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+errorHeaders+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
	case errors.As(err, &se):
		msg := fmt.Sprintf("%d %s: %s", se.code, http.StatusText(se.code), se.text)
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
	default:
		const msg = "400 Bad Request"
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+errorHeaders+msg)
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

// closeWriteAndWait half-closes c and waits a little before the close, so
// that the client reads the response before a reset for its unread data.
// Unlike net/http's plain sleep, the wait reads and drops what the client
// still sends, and ends as soon as it closes (or Close closes c).
func (c *conn) closeWriteAndWait() {
	c.bw.Flush()
	if tc, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.rwc.SetReadDeadline(time.Now().Add(rstAvoidanceDelay))
	io.Copy(io.Discard, c.rwc)
}
