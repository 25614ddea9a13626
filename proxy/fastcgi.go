package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"

	"realroot/proxy/fcgi"
)

// hiddenHeaders are response headers from php-fpm that never reach the
// client, as with nginx's fastcgi_hide_header defaults.
var hiddenHeaders = []string{
	"X-Accel-Buffering", "X-Accel-Charset", "X-Accel-Expires",
	"X-Accel-Limit-Rate", "X-Accel-Redirect", "X-Sendfile",
}

// hidden reports whether the canonical header name k is one of
// hiddenHeaders, or Keep-Alive (about php-fpm's connection, not the
// client's: nginx drops it too).
func hidden(k string) bool {
	return strings.HasPrefix(k, "X-") && slices.Contains(hiddenHeaders, k) || k == "Keep-Alive"
}

// dropConnectionFields removes from hd what HTTP/2 forbids in a response
// (RFC 9113 §8.2.2): the connection-specific fields and those Connection
// names. Go's HTTP/2 server drops Connection and Transfer-Encoding itself,
// not the others, and clients (nghttp2, curl) refuse a response that
// carries one. nginx drops Keep-Alive and Connection only.
func dropConnectionFields(hd http.Header) {
	for _, v := range hd["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(hd, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Upgrade", "Transfer-Encoding", "Te"} {
		delete(hd, k)
	}
}

var requestPool = sync.Pool{New: func() any {
	return &gofast.Request{Role: gofast.RoleResponder, Params: make(map[string]string, 48)}
}}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serveFastCGI runs the routed script of x's pinned release on php-fpm and
// streams its response, flushing whenever php-fpm has nothing more ready.
func (h *Handler) serveFastCGI(w *recorder, r *http.Request, x *exchange) error {
	body, err := h.spoolBody(w, r)
	if err != nil {
		return err
	}
	if body != nil {
		defer body.Close()
	}

	req := requestPool.Get().(*gofast.Request)
	defer func() {
		clear(req.Params)
		req.Raw, req.Stdin = nil, nil
		requestPool.Put(req)
	}()
	req.Raw = r
	h.routeParams(req.Params, r, x, body)
	if body != nil {
		in, err := body.reader()
		if err != nil {
			return &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err}
		}
		req.Stdin = spooled{in}
	}
	h.params(nil, req)

	start := time.Now()
	defer func() {
		if x.upstream == 0 {
			x.upstream = time.Since(start)
		}
	}()
	x.finish.Context = r.Context()
	resp, err := h.upstream.Do(&x.finish, req)
	if errors.Is(err, fcgi.ErrParamTooLong) {
		// A header (or the target) too long for FastCGI: the client's, and
		// php-fpm never saw it. nginx: 500, "fastcgi request record is too big".
		return &httpError{status: http.StatusRequestHeaderFieldsTooLarge, msg: "request header too large for FastCGI", err: err}
	}
	if err != nil {
		return upstreamError(err, r.Context().Err() != nil)
	}
	defer h.logStderr(r, x, resp.Stderr) // after Close: stderr is complete
	defer resp.Body.Close()

	// resp.Header's keys are canonical (fcgi parses them so): indexed
	// directly, without Get's canonicalization.
	streaming := equalFoldASCII(firstValue(resp.Header["X-Accel-Buffering"]), "no") ||
		hasPrefixFold(firstValue(resp.Header["Content-Type"]), "text/event-stream")
	hd := w.Header()
	hd["Date"] = h.date.get(time.Now()) // PHP's own wins
	for k, v := range resp.Header {
		if !hidden(k) {
			hd[k] = v
		}
	}
	if r.ProtoMajor == 2 {
		dropConnectionFields(hd)
	}
	if resp.Status == http.StatusNoContent {
		delete(hd, "Content-Length") // RFC 9110 §8.6; nginx drops it too
	}
	w.idv[0] = x.requestID()
	hd["X-Request-Id"] = w.idv[:1:1]
	if target, accel, ok := h.internalTarget(resp.Header); ok {
		return h.serveInternal(w, r, x, resp, start, target, accel)
	}
	if streaming {
		w.noCompression()
	}
	if h.opts.BufferResponses && !streaming {
		return h.sendBuffered(w, r, x, resp, start)
	}
	return h.stream(w, r, x, resp, !streaming)
}

// stream copies php-fpm's response to the client as it arrives, flushing
// whenever php-fpm has nothing more ready. When the client leaves, the rest
// is drained if drain is set (see clientGone); a stream is not: closing its
// connection makes PHP's next write fail, which ends the script.
func (h *Handler) stream(w *recorder, r *http.Request, x *exchange, resp *fcgi.Response, drain bool) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp

	// Read before sending the status: a php-fpm that fails before its first
	// body byte still gets a clean 502, not a half response.
	n, err := resp.Body.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return upstreamError(err, r.Context().Err() != nil)
	}
	// Before WriteHeader: a Header call after it copies the map.
	left, ok := declaredLength(w.Header(), r)
	if !ok {
		return &httpError{status: http.StatusBadGateway, msg: "php-fpm sent two different Content-Lengths", upstream: "protocol"}
	}
	declared := left
	if r.Context().Err() != nil {
		// The client left while php-fpm worked: nothing was sent.
		return clientGone(resp, drain, context.Cause(r.Context()))
	}
	w.WriteHeader(resp.Status)
	if !bodyAllowed(resp.Status) {
		return discard(resp, err)
	}
	for {
		if left >= 0 && int64(n) > left {
			// PHP wrote more than its Content-Length: the client gets what
			// was declared, now, and the rest is dropped with the FastCGI
			// connection (closed by resp.Body.Close), as nginx does
			// ("upstream sent more data than specified"). The server would
			// refuse the whole write that crosses the length.
			if _, werr := w.Write(buf[:left]); werr != nil {
				return clientGone(resp, drain, werr)
			}
			h.log.Warn("php-fpm response longer than its Content-Length: cut",
				zap.Int64("content_length", declared),
				zap.String("uri", r.RequestURI), zap.String("request_id", x.requestID()))
			return nil
		}
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return clientGone(resp, drain, werr)
			}
			if left >= 0 {
				left -= int64(n)
			}
		}
		if errors.Is(err, io.EOF) {
			if left > 0 && (w.cz.state == czEncoding || r.ProtoMajor == 2) {
				// Shorter than PHP's Content-Length, which compression
				// dropped, or over HTTP/2, where the stream would end
				// cleanly: break it, after what came (nginx resets the
				// stream). Over HTTP/1 with the length sent, the server
				// closes the connection itself, as nginx.
				w.Flush()
				h.abort(w, r, x, fmt.Errorf("%w: body %d bytes short of its Content-Length %d", fcgi.ErrTruncated, left, declared))
			}
			return nil
		}
		if err != nil {
			h.abort(w, r, x, err)
			return nil
		}
		if !resp.Pending() {
			w.Flush()
		}
		n, err = resp.Body.Read(buf)
	}
}

// clientGone is the 499 of a client that left before its response was sent
// whole. With drain it first reads what php-fpm still sends, and drops it,
// up to maxDrain bytes: php-fpm runs the script on whether or not its
// client is there, and the FastCGI client keeps the exchange going
// (finishCtx), so the request, with its lease on the release and its
// connection, ends when php-fpm is done (bounded by its ReadTimeout).
// Without drain, or past maxDrain (a download nobody reads), the connection
// is closed, which ends the script at its next write.
func clientGone(resp *fcgi.Response, drain bool, err error) error {
	if drain {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	}
	return &httpError{status: StatusClientClosed, msg: "client closed request", err: err}
}

// maxDrain bounds what clientGone reads of a response nobody will get.
const maxDrain = 1 << 20

// sendBuffered reads php-fpm's whole response (memory up to BufferMemory,
// then a temp file) and lets php-fpm go before the client gets it, like
// nginx's fastcgi_buffering: a slow client holds no worker. A failure while
// reading is still a clean error response.
func (h *Handler) sendBuffered(w *recorder, r *http.Request, x *exchange, resp *fcgi.Response, start time.Time) error {
	s := &spool{limit: h.opts.BufferMemory, dir: h.opts.TempDir}
	defer s.Close()
	if _, err := io.Copy(s, resp.Body); err != nil {
		var disk *errSpool
		if errors.As(err, &disk) {
			return &httpError{status: http.StatusInternalServerError, msg: "cannot buffer response", err: err}
		}
		return upstreamError(err, r.Context().Err() != nil)
	}
	resp.Body.Close() // the connection goes back now, not after the client is done
	x.upstream = time.Since(start)
	body, err := s.reader()
	if err != nil {
		return &httpError{status: http.StatusInternalServerError, msg: "cannot buffer response", err: err}
	}
	n := s.n
	if bodyAllowed(resp.Status) && r.Method != http.MethodHead && w.Header().Get("Transfer-Encoding") == "" {
		// The whole body is known: its length is sent, and PHP's own
		// Content-Length is held to it. A shorter body is php-fpm's
		// truncation, a clean 502; a longer one is cut at the length
		// PHP declared, as nginx does ("upstream sent more data than
		// specified").
		if cl := w.Header().Get("Content-Length"); cl != "" {
			if want, err := strconv.ParseInt(cl, 10, 64); err == nil && want >= 0 {
				if want > n {
					return &httpError{status: http.StatusBadGateway, msg: "php-fpm response shorter than its Content-Length",
						err: fmt.Errorf("Content-Length %d, body %d bytes", want, n), upstream: "truncated"}
				}
				if want < n {
					h.log.Warn("php-fpm response longer than its Content-Length: cut",
						zap.Int64("content_length", want), zap.Int64("body_bytes", n),
						zap.String("uri", r.RequestURI), zap.String("request_id", x.requestID()))
					n = want
				}
			}
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	}
	w.WriteHeader(resp.Status)
	if !bodyAllowed(resp.Status) || r.Method == http.MethodHead {
		return nil // what PHP wrote after a 204 or 304 is dropped, as nginx does
	}
	if _, err := io.Copy(w, io.LimitReader(body, n)); err != nil {
		return &httpError{status: StatusClientClosed, msg: "client closed request", err: err}
	}
	return nil
}

// hasPrefixFold reports whether s begins with prefix, ASCII case ignored.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFoldASCII(s[:len(prefix)], prefix)
}

// declaredLength is the body length PHP declared in hd (its Content-Length),
// or -1: none, none that parses, a HEAD or a chunked body. The same value
// sent twice is kept once; two different values are not ok (nginx: 502).
func declaredLength(hd http.Header, r *http.Request) (n int64, ok bool) {
	cl := hd["Content-Length"]
	if len(cl) > 1 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return -1, false
			}
		}
		cl = cl[:1]
		hd["Content-Length"] = cl
	}
	if len(cl) == 0 || r.Method == http.MethodHead || hd["Transfer-Encoding"] != nil {
		return -1, true
	}
	n, err := strconv.ParseInt(cl[0], 10, 64)
	if err != nil || n < 0 {
		return -1, true
	}
	return n, true
}

// bodyAllowed reports whether a response with status may have a body
// (RFC 9110: not 1xx, 204 or 304).
func bodyAllowed(status int) bool {
	return !(status >= 100 && status < 200 || status == http.StatusNoContent || status == http.StatusNotModified)
}

// discard reads what php-fpm sends after a status that allows no body (a
// stray newline after "?>" is enough) and drops it, as nginx does, so the
// exchange ends cleanly and its connection can be reused. err is the last
// Read's.
func discard(resp *fcgi.Response, err error) error {
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return &httpError{status: http.StatusBadGateway, msg: "bad response from php-fpm after a bodiless status", err: err, upstream: "protocol"}
	}
	return nil
}

// abort ends a response whose status is already sent after php-fpm failed:
// the only honest thing left is to break the client's connection, so that a
// truncated body never looks whole. So too when the client went (499): one
// that only half-closed its side still reads, and must not get the end of
// a body that did not end.
func (h *Handler) abort(w *recorder, r *http.Request, x *exchange, err error) {
	h.fail(w, r, x, upstreamError(err, r.Context().Err() != nil))
	panic(http.ErrAbortHandler) // deferred: unpin, access log
}

// routeParams sets the params that come from the route and the pinned
// release: nginx's `SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
// DOCUMENT_ROOT $realpath_root;` with PATH_INFO and PATH_TRANSLATED.
func (h *Handler) routeParams(p map[string]string, r *http.Request, x *exchange, body *spool) {
	root, rt := x.rel.Root, &x.route
	p["SCRIPT_FILENAME"] = root + rt.name
	p["SCRIPT_NAME"] = rt.name
	p["DOCUMENT_ROOT"] = root
	p["DOCUMENT_URI"] = rt.docURI
	p["PATH_INFO"] = rt.pathInfo
	if rt.pathInfo != "" {
		// RFC 3875 4.1.6: PATH_TRANSLATED only when PATH_INFO is set.
		p["PATH_TRANSLATED"] = root + rt.pathInfo
	}
	switch {
	case body != nil:
		p["CONTENT_LENGTH"] = strconv.FormatInt(body.n, 10)
	case r.ContentLength == 0 && r.Header["Content-Length"] != nil:
		p["CONTENT_LENGTH"] = "0" // declared, as nginx's $content_length
	default:
		p["CONTENT_LENGTH"] = ""
	}
	p["HTTP_X_REQUEST_ID"] = x.requestID()
}

// logStderr sends what PHP wrote to stderr to the log, once per request.
func (h *Handler) logStderr(r *http.Request, x *exchange, stderr func() ([]byte, int64)) {
	p, dropped := stderr()
	if len(p) == 0 && dropped == 0 {
		return
	}
	h.log.Warn("php stderr",
		zap.ByteString("stderr", p),
		zap.Int64("dropped_bytes", dropped),
		zap.String("uri", r.RequestURI),
		zap.String("script", x.route.name),
		zap.String("release", x.rel.Root),
		zap.String("request_id", x.requestID()),
	)
}
