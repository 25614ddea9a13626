// Package fcgi is realroot's FastCGI transport: the wire exchange with
// php-fpm. Requests are built with gofast's request model (a *gofast.Request
// with its Params map and Stdin); the exchange itself is ours: dial with a
// timeout, stream the request body, stream the response as it arrives, honour
// FCGI_END_REQUEST, detect truncation, and bound stderr.
//
// A Client keeps its connections open between requests (FCGI_KEEP_CONN) in a
// bounded pool. php-fpm gives each accepted connection a worker for as long
// as it stays open, idle or not; the pool is bounded so that kept
// connections cannot hold every worker while new ones queue inside php-fpm.
package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/yookoala/gofast"
)

// Errors of an exchange. Do and Response.Body wrap them with %w; callers
// classify with errors.Is.
var (
	// ErrConnect: php-fpm could not be reached (dial failed or timed out).
	ErrConnect = errors.New("fastcgi: connect")
	// ErrTimeout: php-fpm sent nothing for ReadTimeout (or did not accept
	// the request within WriteTimeout).
	ErrTimeout = errors.New("fastcgi: timeout")
	// ErrTruncated: the connection ended before FCGI_END_REQUEST.
	ErrTruncated = errors.New("fastcgi: response truncated")
	// ErrOverloaded: FCGI_END_REQUEST said FCGI_OVERLOADED or FCGI_CANT_MPX_CONN.
	ErrOverloaded = errors.New("fastcgi: application overloaded")
	// ErrProtocol: a malformed record, an unexpected record type, or a
	// response header block that is invalid or larger than MaxHeaderBytes.
	ErrProtocol = errors.New("fastcgi: protocol error")
	// ErrBusy: all MaxConns connections stayed busy for QueueTimeout, or
	// MaxQueue requests were waiting already. Nothing was sent: answer 503
	// with Retry-After.
	ErrBusy = errors.New("fastcgi: all connections busy")
	// ErrClosed: Do was called after Close (or was waiting when Close was).
	ErrClosed = errors.New("fastcgi: client closed")
)

// Client sends requests to one FastCGI application. Its zero value is not
// usable: set Network and Address. A Client is safe for concurrent use and
// must not be copied after first use; Close it when done.
//
// Connections are kept open between requests, at most MaxConns of them, and
// reused most recently used first, by GET and HEAD requests without a body
// (see Do). A request that finds all of them busy waits its turn (FIFO) for
// up to QueueTimeout, behind at most MaxQueue others; past that Do fails with
// ErrBusy.
type Client struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is the socket path or host:port.
	Address string
	// DialTimeout bounds connecting. Zero means 5s.
	DialTimeout time.Duration
	// ReadTimeout bounds the wait between two reads from the application,
	// like nginx's fastcgi_read_timeout. Zero means 60s. The deadline is
	// moved lazily, at most once per ReadTimeout/8 (moving it updates a
	// runtime timer): a read that gets nothing fails at least
	// ReadTimeout - ReadTimeout/8 and at most ReadTimeout after it began
	// (52.5s to 60s by default), the first read of a request on a kept
	// connection included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the wait between two writes to the application,
	// like nginx's fastcgi_send_timeout. Zero means 60s. Its deadline is
	// moved lazily like ReadTimeout's: a write that cannot proceed fails
	// between WriteTimeout - WriteTimeout/8 and WriteTimeout after it began.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds the response's CGI header block. Zero means 1 MiB.
	MaxHeaderBytes int
	// MaxStderrBytes bounds the stderr kept per request; the rest is counted
	// and dropped. Zero means 64 KiB.
	MaxStderrBytes int

	// MaxConns bounds the connections open at once, busy and idle. Zero
	// means 8. Set it to php-fpm's pm.max_children or below: then every
	// connection maps to a worker and no request queues inside php-fpm.
	// Above it, a new connection can wait in php-fpm's accept queue while
	// kept ones hold every worker; the pool then closes kept connections
	// as they come back (Stats.Yielded) until it is answered, so it costs
	// reuse, not a stall.
	MaxConns int
	// IdleTimeout is how long an idle connection is kept; it is closed
	// after it. Zero means 5s. Keep it below php-fpm's
	// request_terminate_timeout, which also counts the time a worker waits
	// for the next request on a kept connection and kills it past that.
	IdleTimeout time.Duration
	// QueueTimeout bounds the wait for a connection when MaxConns are
	// busy. Zero means 10s.
	QueueTimeout time.Duration
	// MaxQueue bounds the requests waiting for a connection; more are
	// refused at once with ErrBusy. Zero means 1024.
	MaxQueue int
	// DisableKeepAlive opens one connection per request, like nginx
	// without fastcgi_keep_conn. MaxConns still bounds them.
	DisableKeepAlive bool

	pool pool

	// starveAfter, if set, replaces the package's starveAfter (tests).
	starveAfter time.Duration
}

// Response is php-fpm's answer: the parsed CGI header block and a body that
// streams the rest of FCGI_STDOUT as it arrives.
type Response struct {
	// Status is the HTTP status: from a "Status:" header, else 302 when a
	// Location header is present, else 200.
	Status int
	// Header holds the CGI response headers but Status. Its map is the
	// connection's, reused by the next exchange on it: it is valid until
	// Body returns an error (io.EOF included) or is closed. Copy what is
	// needed beyond that; the value slices stay valid.
	Header http.Header
	// Body streams the rest of stdout. Read returns io.EOF after a
	// FCGI_END_REQUEST with FCGI_REQUEST_COMPLETE, an error wrapping
	// ErrTruncated when the connection ends before it, ErrTimeout when
	// ReadTimeout passes. Close releases the connection; it must be called.
	// The connection goes back to the pool when the response was read to
	// io.EOF (and the request body sent); Close before that closes it.
	Body io.ReadCloser

	x *exchange // nil in a Response built by hand
}

// Do sends req (its Params, then its Stdin streamed as FCGI_STDIN, if not nil)
// and returns once the response's header block has been read. Cancelling ctx
// aborts the exchange at any point, also while Body is being read. An error
// from reading req.Stdin is returned as is (wrapped), so that callers can
// recognise e.g. *http.MaxBytesError. Do closes req.Stdin, also on error.
//
// When MaxConns connections are busy, Do waits for one (see Client); it
// fails with an error wrapping ErrBusy past QueueTimeout or MaxQueue.
//
// Finisher is a context for Do that may ask, with FinishOnCancel, that
// ctx end only the wait for a connection: once the request goes out, the
// exchange runs to php-fpm's end (bounded by ReadTimeout and WriteTimeout),
// and the caller reads or drains the Body even when ctx is done (nginx's
// fastcgi_ignore_client_abort). php-fpm runs a script whose client left on
// anyway; so its connection stays counted busy while its worker is, and
// the caller learns when php-fpm is done. Otherwise ctx done aborts the
// exchange and closes its connection.
type Finisher interface {
	context.Context
	FinishOnCancel() bool
}

// Kept connections and retries. php-fpm may close a kept connection while
// it is idle (pm.max_requests recycles the worker, a reload,
// request_terminate_timeout): at pm.max_requests, php-fpm sends
// FCGI_END_REQUEST, then half-closes the connection and discards whatever
// arrives on it. A kept connection is not checked when taken (a check costs
// a read per request, and a close can land just after it): a request sent on
// a connection that php-fpm closed is lost, with no byte of response. Hence:
//   - Only a request that can be sent again goes on a kept connection: a GET
//     or HEAD (REQUEST_METHOD) without a body. Any other request gets a new
//     connection, so that it is never lost this way nor sent twice.
//   - Such a request is retried once, on a new connection, when on a kept
//     one either writing its first records (FCGI_BEGIN_REQUEST and
//     FCGI_PARAMS) failed with an error other than a timeout (php-fpm runs a
//     request only once it has all its params, and the failed write did not
//     deliver them), or the connection ended before any byte of the
//     response while php-fpm still reads it: it then discards what it reads
//     (pm.max_requests), so it did not run the request. A connection that
//     ended whole is a worker that died, perhaps running the request
//     (request_terminate_timeout, a crash): never retried, so that a slow
//     GET killed at the timeout is not run, and waited for, twice
//     (peerDraining says how this is told).
//
// Nothing else is retried: a failure on a new connection, a timeout, a
// response cut after its first byte.
func (c *Client) Do(ctx context.Context, req *gofast.Request) (*Response, error) {
	var flags byte
	if !c.DisableKeepAlive {
		flags = flagKeepConn
	}
	bufp := getBuf()
	b := appendBeginRequest((*bufp)[:0], requestID, roleResponder, flags)
	b, err := appendParams(b, requestID, req.Params)
	if err != nil {
		putBuf(bufp)
		closeStdin(req)
		return nil, err
	}
	if req.Stdin == nil {
		b = appendHeader(b, typeStdin, requestID, 0, 0)
	}
	*bufp = b

	pc, err := c.pool.get(ctx, c, !replayable(req))
	if err != nil {
		putBuf(bufp)
		closeStdin(req)
		return nil, err
	}
	if f, ok := ctx.(Finisher); ok && f.FinishOnCancel() {
		ctx = context.Background() // no watch, no cancellation from here on
	}
	resp, retry, err := c.attempt(ctx, pc, req, bufp)
	if !retry {
		return resp, err
	}
	c.pool.retries.Add(1)
	pc, err = c.dialConn(ctx) // in the failed connection's slot
	if err != nil {
		c.pool.drop()
		putBuf(bufp)
		closeStdin(req)
		return nil, err
	}
	resp, _, err = c.attempt(ctx, pc, req, bufp)
	return resp, err
}

// attempt runs one exchange of req on pc. retry reports a failure that
// proves php-fpm did not run req (see Do): then pc's connection is closed but
// its slot is kept, and bufp and req.Stdin are still the caller's. Otherwise
// attempt owns them.
func (c *Client) attempt(ctx context.Context, pc *pconn, req *gofast.Request, bufp *[]byte) (resp *Response, retry bool, err error) {
	mayRetry := pc.reused && replayable(req)
	x := newExchange(ctx, pc, c)
	if err := x.write(*bufp); err != nil {
		if mayRetry && ctx.Err() == nil && !isTimeout(err) {
			x.pc = nil // keep the slot
			x.fail()
			return nil, true, err
		}
		putBuf(bufp)
		closeStdin(req)
		x.fail()
		return nil, false, x.requestWriteErr(err)
	}
	if req.Stdin != nil {
		x.hasStdin = true
		x.bodyMax = contentLength(req.Params)
		x.stdin.Add(1)
		go x.sendStdin(req.Stdin, bufp)
	}
	resp, err = x.readResponse(c.maxHeaderBytes())
	if err != nil {
		if mayRetry && x.dr.n == 0 && errors.Is(err, ErrTruncated) && x.peerDraining() {
			x.pc = nil
			x.fail()
			return nil, true, err
		}
		x.fail()
	}
	if req.Stdin == nil {
		putBuf(bufp)
	}
	return resp, false, err
}

// peerDraining reports whether php-fpm, which ended the connection before
// any byte of the response, did not run the request. At pm.max_requests
// php-fpm half-closes a kept connection and reads until it is closed,
// discarding (php-src main/fastcgi.c, fcgi_close); a worker that died has
// closed it whole. A reset instead of the end of the stream means php-fpm
// closed with bytes of ours unread: a worker that died, maybe running it.
// Else it writes an FCGI_ABORT_REQUEST, which fails once the connection is
// closed whole:
//   - on a unix socket, php-fpm closed it after the request arrived (sending
//     it had failed otherwise): a worker that died, maybe running it;
//   - over TCP, a reset came back after the end of the stream. Only the
//     request can have drawn it, by reaching a connection php-fpm had
//     closed whole before (while it was idle: a reload, a restart,
//     request_terminate_timeout), which it never read.
//
// Otherwise the read that follows tells: the end of the stream, php-fpm
// still reads. Over TCP a worker that died after reading the whole request,
// its FCGI_STDIN included, closed without a reset, and this write draws
// one only after it returns: that worker is taken for a draining one
// (php-fpm leaves a GET's empty FCGI_STDIN unread while the script runs,
// so it dies with a reset).
func (x *exchange) peerDraining() bool {
	if x.dr.err != io.EOF {
		return false
	}
	var rec [headerLen]byte
	putHeader(rec[:], typeAbortRequest, requestID, 0, 0)
	deadline := time.Now().Add(50 * time.Millisecond)
	if x.conn.SetDeadline(deadline) != nil {
		return false
	}
	if _, err := x.conn.Write(rec[:]); err != nil {
		_, tcp := x.conn.(*net.TCPConn)
		return tcp && !isTimeout(err)
	}
	var b [1]byte
	_, err := x.conn.Read(b[:])
	return err == io.EOF
}

// replayable reports whether req can be sent again: a GET or HEAD without a
// body.
func replayable(req *gofast.Request) bool {
	if req.Stdin != nil {
		return false
	}
	m := req.Params["REQUEST_METHOD"]
	return m == "GET" || m == "HEAD"
}

// contentLength parses the CONTENT_LENGTH param; missing or invalid is 0.
func contentLength(params map[string]string) int64 {
	s := params["CONTENT_LENGTH"]
	if len(s) == 0 || len(s) > 18 {
		return 0
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n
}

// Close closes the idle connections and makes later calls to Do fail with
// ErrClosed, as well as those waiting for a connection. Exchanges in
// progress finish; their connections are closed then.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// Stats returns a snapshot of the connection pool.
func (c *Client) Stats() PoolStats {
	return c.pool.stats()
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(ctx)
	}
	d := net.Dialer{Timeout: c.dialTimeout()}
	conn, err := d.DialContext(ctx, c.Network, c.Address)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(ctx)
		}
		return nil, fmt.Errorf("%w: %w", ErrConnect, err)
	}
	return conn, nil
}

// fail ends an exchange that Do gives up on.
func (x *exchange) fail() {
	x.mu.Lock()
	x.release()
	x.mu.Unlock()
	x.stdin.Wait()
}

// requestWriteErr maps an error writing the request's first records.
func (x *exchange) requestWriteErr(err error) error {
	switch {
	case x.ctx.Err() != nil:
		return ctxErr(x.ctx)
	case isTimeout(err):
		return fmt.Errorf("%w: write request: %w", ErrTimeout, err)
	default:
		return fmt.Errorf("%w: write request: %w", ErrConnect, err)
	}
}

func closeStdin(req *gofast.Request) {
	if req.Stdin != nil {
		req.Stdin.Close()
	}
}

func (c *Client) dialTimeout() time.Duration  { return orDefault(c.DialTimeout, 5*time.Second) }
func (c *Client) readTimeout() time.Duration  { return orDefault(c.ReadTimeout, 60*time.Second) }
func (c *Client) writeTimeout() time.Duration { return orDefault(c.WriteTimeout, 60*time.Second) }
func (c *Client) maxHeaderBytes() int         { return orDefault(c.MaxHeaderBytes, 1<<20) }
func (c *Client) maxStderrBytes() int         { return orDefault(c.MaxStderrBytes, 64<<10) }
func (c *Client) maxConns() int               { return orDefault(c.MaxConns, 8) }
func (c *Client) idleTimeout() time.Duration  { return orDefault(c.IdleTimeout, 5*time.Second) }
func (c *Client) queueTimeout() time.Duration { return orDefault(c.QueueTimeout, 10*time.Second) }
func (c *Client) maxQueue() int               { return orDefault(c.MaxQueue, 1024) }

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
