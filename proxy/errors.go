package proxy

import (
	"context"
	"errors"
	"net/http"
	"syscall"

	"realroot/proxy/fcgi"
)

// StatusClientClosed is logged when the client went away before the
// response (nginx's 499). It is never sent.
const StatusClientClosed = 499

// httpError separates what the client is told (status and a short text)
// from what is logged (msg and err).
type httpError struct {
	status int
	msg    string      // short, for the log
	err    error       // the cause, for the log; may be nil
	header http.Header // sent with the error response; may be nil
	// upstream is the kind of a failed exchange with php-fpm, for metrics:
	// connect, timeout, truncated, overloaded, busy or protocol.
	upstream string
}

func (e *httpError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *httpError) Unwrap() error { return e.err }

func errNotFound(msg string) *httpError {
	return &httpError{status: http.StatusNotFound, msg: msg}
}

// upstreamError classifies an error of the FastCGI exchange: cannot connect
// -> 502, timeout -> 504, overloaded or every connection busy -> 503 (with
// Retry-After), body too large -> 413, client gone -> 499, anything else ->
// 502.
func upstreamError(err error, clientGone bool) *httpError {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: "request body too large", err: err}
	case clientGone || errors.Is(err, context.Canceled):
		return &httpError{status: StatusClientClosed, msg: "client closed request", err: err}
	case errors.Is(err, fcgi.ErrConnect):
		return &httpError{status: http.StatusBadGateway, msg: "cannot connect to php-fpm", err: err, upstream: "connect"}
	case errors.Is(err, fcgi.ErrTimeout):
		return &httpError{status: http.StatusGatewayTimeout, msg: "php-fpm timed out", err: err, upstream: "timeout"}
	case errors.Is(err, fcgi.ErrBusy):
		return &httpError{status: http.StatusServiceUnavailable, msg: "php-fpm saturated: all connections busy", err: err, upstream: "busy"}
	case errors.Is(err, fcgi.ErrOverloaded):
		return &httpError{status: http.StatusServiceUnavailable, msg: "php-fpm overloaded", err: err, upstream: "overloaded"}
	case errors.Is(err, fcgi.ErrTruncated):
		return &httpError{status: http.StatusBadGateway, msg: "php-fpm response truncated", err: err, upstream: "truncated"}
	}
	return &httpError{status: http.StatusBadGateway, msg: "bad response from php-fpm", err: err, upstream: "protocol"}
}

// statusText is the body of an error response: the status line's text.
func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return t + "\n"
	}
	return "Error\n"
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// isNoName reports whether err says the name cannot name a file: too long
// (a segment over NAME_MAX, a path over PATH_MAX) or a symlink loop.
// nginx's try_files moves on after them, as after a missing file.
func isNoName(err error) bool {
	return errors.Is(err, syscall.ENAMETOOLONG) || errors.Is(err, syscall.ELOOP)
}
