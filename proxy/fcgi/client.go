// Package fcgi is realroot's FastCGI transport: the wire exchange with
// php-fpm. Requests are built with gofast's request model (a *gofast.Request
// with its Params map and Stdin); the exchange itself is ours: dial with a
// timeout, stream the request body, stream the response as it arrives, honour
// FCGI_END_REQUEST, detect truncation, and bound stderr.
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
)

// Client sends requests to one FastCGI application. Its zero value is not
// usable: set Network and Address. A Client is safe for concurrent use.
type Client struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is the socket path or host:port.
	Address string
	// DialTimeout bounds connecting. Zero means 5s.
	DialTimeout time.Duration
	// ReadTimeout bounds the wait between two reads from the application,
	// like nginx's fastcgi_read_timeout. Zero means 60s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the wait between two writes to the application,
	// like nginx's fastcgi_send_timeout. Zero means 60s.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds the response's CGI header block. Zero means 1 MiB.
	MaxHeaderBytes int
	// MaxStderrBytes bounds the stderr kept per request; the rest is counted
	// and dropped. Zero means 64 KiB.
	MaxStderrBytes int
}

// Response is php-fpm's answer: the parsed CGI header block and a body that
// streams the rest of FCGI_STDOUT as it arrives.
type Response struct {
	// Status is the HTTP status: from a "Status:" header, else 302 when a
	// Location header is present, else 200.
	Status int
	// Header holds the CGI response headers but Status.
	Header http.Header
	// Body streams the rest of stdout. Read returns io.EOF after a
	// FCGI_END_REQUEST with FCGI_REQUEST_COMPLETE, an error wrapping
	// ErrTruncated when the connection ends before it, ErrTimeout when
	// ReadTimeout passes. Close releases the connection; it must be called.
	Body io.ReadCloser

	x *exchange // nil in a Response built by hand
}

// Do sends req (its Params, then its Stdin streamed as FCGI_STDIN, if not nil)
// and returns once the response's header block has been read. Cancelling ctx
// aborts the exchange at any point, also while Body is being read. An error
// from reading req.Stdin is returned as is (wrapped), so that callers can
// recognise e.g. *http.MaxBytesError. Do closes req.Stdin, also on error.
func (c *Client) Do(ctx context.Context, req *gofast.Request) (*Response, error) {
	bufp := getBuf()
	// Flags 0: php-fpm closes the connection after the request. A pool
	// would send flagKeepConn and take the connection back at END_REQUEST.
	b := appendBeginRequest((*bufp)[:0], requestID, roleResponder, 0)
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

	conn, err := c.dial(ctx)
	if err != nil {
		putBuf(bufp)
		closeStdin(req)
		return nil, err
	}
	x := newExchange(ctx, conn, c)
	if err := x.write(b); err != nil {
		putBuf(bufp)
		closeStdin(req)
		x.fail()
		return nil, x.requestWriteErr(err)
	}
	if req.Stdin != nil {
		x.stdin.Add(1)
		go x.sendStdin(req.Stdin, bufp)
	} else {
		putBuf(bufp)
	}
	resp, err := x.readResponse(c.maxHeaderBytes())
	if err != nil {
		x.fail()
		return nil, err
	}
	return resp, nil
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

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
