package h1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Connection states, for Shutdown.
const (
	stateNew    = iota // accepted, waiting for its first request's first byte
	stateIdle          // kept, waiting for the next request's first byte
	stateActive        // reading or serving a request
	stateClosed        // closed by Shutdown while new or idle
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
	accepted   time.Time

	cr       connReader
	br       *bufio.Reader
	bw       *bufio.Writer
	werr     error // first write error: the connection is done
	w        response
	body     *bodyReader // the request's; noBody if it has none
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
	c.state.Store(stateNew)
	c.accepted = time.Now()
	c.body = noBody
	c.cr.reset()
	c.br.Reset(&c.cr)
	c.bw.Reset((*connWriter)(c))
	return c
}

// release returns c to the pool; its goroutine and watch are over.
func (c *conn) release() {
	c.mu.Lock()
	if c.timer.Stop() {
		c.armed = false
	}
	c.mu.Unlock()
	c.srv, c.rwc, c.baseCtx, c.werr = nil, nil, nil, nil
	c.w = response{buf: c.w.buf[:0], header: c.w.header}
	c.body = noBody
	c.rdl, c.userWDL, c.lastPOST = time.Time{}, false, false
	c.rctx = nil
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
		if c.rctx != nil {
			c.rctx.cancel()
		}
	}
	return n, err
}

// closeIfIdle closes c if it is waiting for a request, or for its first
// one for newConnGrace already (Shutdown). It reports whether it did.
func (c *conn) closeIfIdle(now time.Time) bool {
	st := c.state.Load()
	if st == stateNew && now.Sub(c.accepted) < newConnGrace {
		return false
	}
	if (st == stateIdle || st == stateNew) && c.state.CompareAndSwap(st, stateClosed) {
		c.rwc.Close()
		return true
	}
	return false
}

// serve runs c's requests one after the other.
func (c *conn) serve() {
	// Here, not in the accept loop: a wrapped listener's connection may
	// block in RemoteAddr (the PROXY protocol reads its header there), and
	// one silent client must not hold up every other accept.
	c.remoteAddr = c.rwc.RemoteAddr().String()
	c.baseCtx = context.WithValue(context.Background(), http.LocalAddrContextKey, c.rwc.LocalAddr())
	abort := false
	defer func() {
		c.body.detach() // before c, its reader included, goes back to the pool
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
			if status, reason, n := c.replyError(err); status != 0 && s.Rejected != nil {
				s.Rejected(c.remoteAddr, status, reason, n)
			}
			return
		}
		w := &c.w
		rctx := newReqCtx(c.baseCtx)
		req = req.WithContext(rctx)
		req.RemoteAddr = c.remoteAddr
		hasBody := req.Body != http.NoBody
		c.body = noBody
		if hasBody {
			c.body = newBodyReader(c, req.Body, req.ContentLength)
			req.Body = c.body
		}
		w.reset(c, req)
		c.rctx = rctx
		if ex := req.Header.Get("Expect"); ex != "" {
			if !hasToken(ex, "100-continue") {
				w.Header().Set("Connection", "close")
				w.WriteHeader(http.StatusExpectationFailed)
				w.finish()
				rctx.cancel()
				if s.Rejected != nil {
					s.Rejected(c.remoteAddr, http.StatusExpectationFailed, "unknown expectation", 0)
				}
				return
			}
			if hasBody && w.proto11 && req.ContentLength != 0 {
				c.body.expectContinue = true
				c.continuePending.Store(true)
			}
		}
		if c.runHandler(w, req, hasBody) {
			abort = true
			return
		}
		w.finish()
		c.body.detach()
		c.liftUserRead()
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
