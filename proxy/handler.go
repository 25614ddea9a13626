// Package proxy is realroot's http.Handler: it pins each request to one
// release, routes it like the canonical nginx + php-fpm configuration
// (static file, PHP script, directory index, front controller), serves static
// files and speaks FastCGI to php-fpm through proxy/fcgi.
package proxy

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"

	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// Releases is what the handler needs of resolve: the release a request is
// pinned to at arrival. The handler calls Unpin on it when the response is
// complete.
type Releases interface {
	Pin() *resolve.Release
}

// Upstream runs one FastCGI exchange; *fcgi.Client is one.
type Upstream interface {
	Do(ctx context.Context, req *gofast.Request) (*fcgi.Response, error)
}

// Options configure a Handler. cmd copies them from the configuration; tests
// write literals.
type Options struct {
	// Index lists the files tried, in order, for a URL naming a directory
	// (nginx's index). Nil means index.php, index.html.
	Index []string
	// FrontController is the script that gets every request naming no file
	// or directory (try_files' last argument), e.g. "/index.php". Empty
	// means none: such requests get 404.
	FrontController string
	// PHPExtensions lists the extensions of scripts sent to php-fpm, each
	// with its leading dot. No other file is ever sent. Nil means ".php".
	PHPExtensions []string
	// ServerName is SERVER_NAME (nginx's server_name). Empty means the
	// request's Host without its port.
	ServerName string
	// ServerSoftware is SERVER_SOFTWARE. Empty means "realroot".
	ServerSoftware string
	// MaxBodySize bounds a request body; a larger one gets 413 before
	// php-fpm is involved. Zero means 1 MiB (nginx's client_max_body_size);
	// negative means no limit.
	MaxBodySize int64
	// BodyTimeout bounds the wait between two reads of a request body
	// (nginx's client_body_timeout); a client that stalls longer gets 408.
	// Zero means 60s.
	BodyTimeout time.Duration
	// MaxURILength bounds the request target; a longer one gets 414, like
	// nginx's large_client_header_buffers. Zero means 8 KiB.
	MaxURILength int
	// BodyMemory is how much of a request body is buffered in memory; the
	// rest goes to a temp file. Zero means 64 KiB.
	BodyMemory int64
	// TempDir holds request bodies larger than BodyMemory. Empty means
	// os.TempDir().
	TempDir string
	// BufferResponses reads each php-fpm response whole (memory up to
	// BufferMemory, then a temp file) before sending it, so a slow client
	// holds no php-fpm worker (nginx's fastcgi_buffering). Responses that
	// stream (text/event-stream, X-Accel-Buffering: no) never are. False
	// means every response streams.
	BufferResponses bool
	// BufferMemory is how much of a buffered response stays in memory.
	// Zero means 1 MiB.
	BufferMemory int64
	// CacheControl sets Cache-Control on static files: the first rule whose
	// Match fits the URL path wins. Nil means none.
	CacheControl []CacheRule
	// Headers add response headers, static and PHP, by URL path: every
	// rule whose Match fits the request's path gives its header, unless the
	// response has it already (PHP's own wins; so does the first matching
	// rule of a name). Error responses of realroot's own get none, like
	// nginx's add_header without always. Nil means none.
	Headers []HeaderRule
	// DisableCompression turns off on-the-fly compression. False (the
	// default) compresses with br (quality 4) or gzip (level 5), as the
	// client accepts (br on a tie), responses of a compressible type (text,
	// JSON, JavaScript, XML, SVG, wasm, ...) over CompressMinSize, static
	// or PHP; never one already encoded (by PHP, or a precompressed static
	// sibling, which wins), a stream (text/event-stream, X-Accel-Buffering:
	// no), a HEAD, 204, 206 or 304, nor one with Cache-Control:
	// no-transform. A compressed response gets Vary: Accept-Encoding, no
	// Content-Length nor Accept-Ranges, and its strong ETag made weak, as
	// nginx does.
	DisableCompression bool
	// CompressMinSize: bodies of at most this many bytes are sent as they
	// are. Without a Content-Length (PHP's usual), up to this much of a
	// compressible body is held, Flush included, until more comes or it
	// ends; a script that must stream says so with X-Accel-Buffering: no,
	// as behind nginx. Zero means 1 KiB.
	CompressMinSize int64
	// TrustedProxies are the peers (load balancers, CDNs) believed about
	// the client: from them, X-Forwarded-For gives REMOTE_ADDR (the
	// right-most untrusted address; REMOTE_PORT then empty) and the access
	// log's remote_addr, and X-Forwarded-Proto HTTPS and REQUEST_SCHEME
	// (see realip.go). The peer is r.RemoteAddr, which a PROXY protocol
	// listener sets. Nil means none: the peer is the client.
	TrustedProxies []netip.Prefix
	// InternalLocations map URL path prefixes of X-Accel-Redirect to
	// directories, like nginx's `location /protected/ { internal; alias
	// /srv/app/shared/files/; }`: a PHP response with X-Accel-Redirect:
	// /protected/a.pdf gets /srv/app/shared/files/a.pdf. The longest
	// prefix wins; a path under none is a file of the pinned release. The
	// directories must be absolute. Nil means none: X-Accel-Redirect
	// serves files of the release only.
	InternalLocations map[string]string
	// SendfileDirs are the directories (absolute) below which PHP may name
	// a file with X-Sendfile: /abs/path. Nil means none: X-Sendfile is
	// ignored (and never reaches the client).
	SendfileDirs []string
	// Params are extra FastCGI params, sent last (they override).
	Params map[string]string
	// Deny lists URL path prefixes answered 403, like nginx's `deny all`: a
	// prefix matches itself and everything below it.
	Deny []string
	// Logger receives errors. Nil means none.
	Logger *zap.Logger
	// AccessLog receives one line per request. Nil means none.
	AccessLog *zap.Logger
	// Observer is told of every request, for metrics. Nil means none.
	Observer Observer
}

// Observer is told of every request once it is done, and of every failed
// exchange with php-fpm. Its methods must be safe for concurrent use and
// cheap: they run on the request path.
type Observer interface {
	// ObserveRequest: route is "static", "php", "index", "front",
	// "redirect" or "none" (refused before routing); upstream is zero when
	// php-fpm was not involved.
	ObserveRequest(route string, status int, total, upstream time.Duration)
	// ObserveUpstreamError: kind is "connect", "timeout", "truncated",
	// "overloaded", "busy" or "protocol".
	ObserveUpstreamError(kind string)
}

// CacheRule gives static files whose URL path matches Match the header
// Cache-Control: Value. Match is ".ext" (an extension, any case), "/prefix"
// (that path and everything below it) or "*" (every static file).
type CacheRule struct {
	Match, Value string
}

// matches reports whether the rule fits the cleaned URL path p.
func (c CacheRule) matches(p string) bool { return pathMatches(c.Match, p) }

// Handler serves HTTP requests from the pinned release. Create it with New.
type Handler struct {
	releases Releases
	upstream Upstream
	opts     Options
	log      *zap.Logger
	access   *zap.Logger
	params   gofast.SessionHandler
	ids      requestIDs
	headers  []headerRule
	internal []location // InternalLocations, longest prefix first
	czBufs   sync.Pool  // *[]byte holding a response's first bytes
	local    localAddr  // SERVER_ADDR and SERVER_PORT, cached
	files    fileCache  // small static files
	date     dateHeader
}

// New returns a Handler serving releases through upstream.
func New(releases Releases, upstream Upstream, opts Options) *Handler {
	if opts.Index == nil {
		opts.Index = []string{"index.php", "index.html"}
	}
	if opts.PHPExtensions == nil {
		opts.PHPExtensions = []string{".php"}
	}
	if opts.ServerSoftware == "" {
		opts.ServerSoftware = "realroot"
	}
	if opts.MaxBodySize == 0 {
		opts.MaxBodySize = 1 << 20
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 60 * time.Second
	}
	if opts.MaxURILength <= 0 {
		opts.MaxURILength = 8 << 10
	}
	if opts.BodyMemory <= 0 {
		opts.BodyMemory = 64 << 10
	}
	if opts.BufferMemory <= 0 {
		opts.BufferMemory = 1 << 20
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.CompressMinSize <= 0 {
		opts.CompressMinSize = 1 << 10
	}
	h := &Handler{releases: releases, upstream: upstream, opts: opts, log: opts.Logger, access: opts.AccessLog}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	for _, hr := range opts.Headers {
		h.headers = append(h.headers, headerRule{match: hr.Match, key: http.CanonicalHeaderKey(hr.Name), values: []string{hr.Value}[:1:1]})
	}
	h.opts.TrustedProxies = nil // a copy: the caller's slice is left alone
	for _, p := range opts.TrustedProxies {
		h.opts.TrustedProxies = append(h.opts.TrustedProxies, p.Masked())
	}
	h.internal = locations(opts.InternalLocations)
	bufSize := int(min(opts.CompressMinSize, 4<<10))
	h.czBufs.New = func() any { b := make([]byte, 0, bufSize); return &b }
	h.params = gofast.Chain(h.cgiParams, headerParams, h.extraParams)(endParams)
	h.ids.init()
	return h
}

// ServeHTTP pins the request to the current release, routes it and serves it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rel := h.releases.Pin()
	defer rel.Unpin()

	x := exchange{start: time.Now(), rel: rel, ids: &h.ids, req: r}
	rec := recorder{ResponseWriter: w}
	if len(r.TransferEncoding) > 0 && r.ProtoMajor == 1 {
		// RFC 9112 §6.3: a request with both Transfer-Encoding and
		// Content-Length may be smuggling (a proxy in front framed it by
		// the length), and the connection must close after the response,
		// so that what follows the chunked body is never read as a
		// request. Go's parser drops Content-Length without a trace: every
		// chunked request closes its connection (they are rare; the
		// client reconnects).
		w.Header().Set("Connection", "close")
	}
	defer h.logAccess(&rec, r, &x)
	if !h.opts.DisableCompression && r.Method != http.MethodHead {
		if enc := negotiate(r.Header.Get("Accept-Encoding")); enc != "" {
			rec.compress(enc, h.opts.CompressMinSize, &h.czBufs)
			defer rec.finish() // before the access log line: it counts the bytes sent
		}
	}

	if err := h.serve(&rec, r, &x); err != nil {
		h.fail(&rec, r, &x, err)
	}
	rec.served = true
}

// exchange is one request's state, for serving and for its log line.
type exchange struct {
	start    time.Time
	rel      *resolve.Release
	ids      *requestIDs
	req      *http.Request
	id       string // made by requestID when first needed
	route    route
	upstream time.Duration // time spent with php-fpm; zero when not involved
	finish   finishCtx     // the request's context, for the FastCGI exchange
}

// finishCtx is a request's context that asks the FastCGI client to finish
// an exchange under way when the client leaves (fcgi.Finisher; see
// clientGone): its wait for a connection still ends then.
type finishCtx struct{ context.Context }

func (*finishCtx) FinishOnCancel() bool { return true }

// requestID is the request's id (see requestIDs), made when first asked
// for: a static file served without an access log needs none.
func (x *exchange) requestID() string {
	if x.id == "" {
		x.id = x.ids.get(x.req)
	}
	return x.id
}

func (h *Handler) serve(w *recorder, r *http.Request, x *exchange) error {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// A body no route reads (an error, a static file, a redirect) is
		// read by the server, up to 256 KiB, before it answers, and with
		// no deadline a client that never sends it holds the connection:
		// body-timeout bounds that wait too. spoolBody sets its own.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.BodyTimeout))
	}
	if len(r.RequestURI) > h.opts.MaxURILength {
		return &httpError{status: http.StatusRequestURITooLong, msg: "request target too long"}
	}
	if r.ProtoMajor == 2 {
		if !strings.HasPrefix(r.RequestURI, "/") && !(r.RequestURI == "*" && r.Method == http.MethodOptions) ||
			strings.IndexByte(r.RequestURI, ' ') >= 0 {
			// RFC 9113 §8.3.1: :path is origin-form (or "*" for OPTIONS);
			// Go's HTTP/2 server also takes an absolute URI and a space,
			// which over HTTP/1.1 no request target can hold, and PHP got
			// REQUEST_URI and QUERY_STRING with raw spaces. nginx: 400.
			return &httpError{status: http.StatusBadRequest, msg: "malformed :path"}
		}
		if err := checkAuthority(r); err != nil {
			return err
		}
		if err := checkLength(r); err != nil {
			return err
		}
	}
	if r.Method == http.MethodTrace {
		// nginx refuses TRACE whatever the location: a script echoing
		// the request back would hand cookies to cross-site scripts.
		return &httpError{status: http.StatusMethodNotAllowed, msg: "TRACE is not allowed"}
	}
	if i := strings.IndexByte(r.RequestURI, '#'); i >= 0 {
		// A fragment never belongs in a request target, but nginx takes
		// the target to end there; Go keeps it in the path or query.
		u, err := url.ParseRequestURI(r.RequestURI[:i])
		if err != nil {
			return &httpError{status: http.StatusBadRequest, msg: "bad request target", err: err}
		}
		r.URL = u
	}
	if r.URL.Scheme != "" {
		// An absolute URI (RFC 9112 §3.2.2): its path may be empty ("/"),
		// its authority may not, nor hold user info (RFC 9110 §4.2).
		if r.URL.Host == "" || r.URL.User != nil {
			return &httpError{status: http.StatusBadRequest, msg: "bad request target"}
		}
		if r.URL.Path == "" {
			r.URL.Path = "/"
		}
	}
	p, err := resolve.CleanPath(r.URL.Path)
	if err != nil {
		return &httpError{status: http.StatusBadRequest, msg: "bad path", err: err}
	}
	x.route, err = h.route(x.rel, p)
	if err != nil {
		return err
	}
	h.addHeaders(w.Header(), p)
	switch x.route.kind {
	case kindRedirect:
		u := url.URL{Path: x.route.name, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, u.String(), http.StatusMovedPermanently)
		return nil
	case kindStatic:
		return h.serveStatic(w, r, x)
	}
	return h.serveFastCGI(w, r, x)
}

// checkAuthority refuses an HTTP/2 request whose host could mislead PHP, with
// 400 as nginx does and as proxy/h1 does for HTTP/1.1's Host: no :authority
// and no Host, a Host field that differs from :authority or comes twice, or a
// byte no host has (RFC 9113 §8.3.1). Go's HTTP/2 server checks none of it,
// and leaves a Host field among the headers, where it would become HTTP_HOST.
func checkAuthority(r *http.Request) error {
	host := r.Host
	switch hv := r.Header["Host"]; {
	case host == "":
		return &httpError{status: http.StatusBadRequest, msg: "no :authority and no Host"}
	case len(hv) > 1 || len(hv) == 1 && hv[0] != host:
		return &httpError{status: http.StatusBadRequest, msg: "Host does not match :authority"}
	}
	for i := 0; i < len(host); i++ {
		if !hostByte[host[i]] {
			return &httpError{status: http.StatusBadRequest, msg: "malformed :authority"}
		}
	}
	return nil
}

// checkLength refuses an HTTP/2 request whose content-length does not
// parse, or is not the length Go's HTTP/2 server gives its body: Go takes
// both a content-length it cannot parse and any content-length on a stream
// that HEADERS ended as an empty body, and PHP would run at once with none
// (and HTTP_CONTENT_LENGTH as sent). A content-length that the DATA frames
// then do not match fails the body's read. nginx answers 400 too.
func checkLength(r *http.Request) error {
	cl := r.Header["Content-Length"]
	for _, v := range cl {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || v != cl[0] || int64(n) != r.ContentLength {
			return &httpError{status: http.StatusBadRequest, msg: "content-length does not match the request body"}
		}
	}
	return nil
}

// hostByte: the bytes of a host and port (RFC 3986's reg-name, IP literal
// and port), as proxy/h1 and net/http accept in Host.
var hostByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$%&'()*+,-.:;=[]_~") {
		t[c] = true
	}
	return t
}()

// fail answers err: the status and a short text to the client (unless the
// response has started or the client is gone), the detail to the log.
func (h *Handler) fail(w *recorder, r *http.Request, x *exchange, err error) {
	he, ok := err.(*httpError)
	if !ok {
		he = &httpError{status: http.StatusInternalServerError, msg: "internal error", err: err}
	}
	level := zap.WarnLevel
	switch {
	case he.status == StatusClientClosed:
		level = zap.DebugLevel
	case he.status < 500:
		level = zap.InfoLevel
	}
	if ce := h.log.Check(level, "request failed"); ce != nil {
		ce.Write(
			zap.Int("status", he.status),
			zap.String("reason", he.msg),
			zap.Error(he.err),
			zap.String("method", r.Method),
			zap.String("uri", r.RequestURI),
			zap.String("release", x.rel.Root),
			zap.String("request_id", x.requestID()),
		)
	}
	if he.upstream != "" && h.opts.Observer != nil {
		h.opts.Observer.ObserveUpstreamError(he.upstream)
	}
	if he.status == StatusClientClosed {
		// Once the status went out it stays in the log, with the bytes
		// sent, as nginx logs a download cut short (static or PHP).
		if !w.wroteHeader {
			w.status = StatusClientClosed
			// No response: a client that only half-closed its side
			// still reads, and the server would answer an empty 200
			// for the handler. nginx closes the connection too.
			panic(http.ErrAbortHandler) // deferred: unpin, access log
		}
		return
	}
	if w.wroteHeader {
		return
	}
	hd := w.Header()
	closeConn := hd["Connection"] // a chunked request's close (ServeHTTP) stays
	for k := range hd {
		delete(hd, k)
	}
	if closeConn != nil {
		hd["Connection"] = closeConn
	}
	for k, v := range he.header {
		hd[k] = v
	}
	if r.ProtoMajor == 2 {
		// The stream ends with the response; Go's HTTP/2 server would
		// turn Connection: close into a GOAWAY for every other stream.
		delete(hd, "Connection")
	}
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	if he.status == http.StatusServiceUnavailable {
		hd.Set("Retry-After", "1")
	}
	w.WriteHeader(he.status)
	if r.Method != http.MethodHead {
		w.Write([]byte(statusText(he.status)))
	}
}
