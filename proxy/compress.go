package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
)

// On-the-fly compression, like nginx's gzip module (and brotli's): a
// response is compressed when the client accepts br or gzip, its type is
// compressible, its body is larger than CompressMinSize, and nothing says
// otherwise (see compressor.decide). Precompressed static siblings are
// found by serveStatic and set Content-Encoding, so they win.

// Fast levels. On a 20 KiB HTML page (htmlPage), on this 2-core machine:
// klauspost gzip 5 gives 3,065 bytes in ~75µs (its level 6: 3,034, same
// time; compress/gzip 6: 2,921 in ~250µs); brotli 4 gives 1,947 bytes in
// ~0.35ms (brotli 6: 1,755 in ~0.6ms).
const (
	gzipLevel   = 5
	brotliLevel = 4
)

// encoder is what *gzip.Writer and *brotli.Writer have in common.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(w io.Writer)
}

var (
	gzipWriters = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzipLevel) // the level is valid
		return w
	}}
	brotliWriters = sync.Pool{New: func() any { return brotli.NewWriterLevel(nil, brotliLevel) }}
)

// Header values shared by every response (set, never modified in place:
// a capacity of one makes an append copy).
var (
	brValue   = []string{"br"}[:1:1]
	gzipValue = []string{"gzip"}[:1:1]
	varyValue = []string{"Accept-Encoding"}[:1:1]
)

// compressor states.
const (
	czHeader   uint8 = iota // WriteHeader not called yet
	czPending               // eligible, length unknown: holding the first bytes
	czIdentity              // passing through
	czEncoding              // compressing
)

// compressor is the ResponseWriter wrapper that compresses a response on
// the fly. It decides at WriteHeader from the headers; when the length is
// not known it holds up to min bytes and decides with them: more is
// compressed, the whole (short) body is sent as it is. Flush passes
// through once decided; while pending it holds at most min bytes (a stream
// that must not be held says so with text/event-stream or
// X-Accel-Buffering: no, and is never compressed).
//
// It lives inside the request's recorder (no allocation of its own); its
// encoders and buffers are pooled.
type compressor struct {
	out      sink   // the server's writer, counting the bytes sent
	encoding string // "br" or "gzip", chosen from Accept-Encoding
	min      int64  // bodies of at most min bytes are sent as they are
	bufs     *sync.Pool
	state    uint8
	status   int        // held while pending
	buf      *[]byte    // the first bytes, while pending
	enc      encoder    // while encoding
	off      bool       // the handler said no (a stream)
	aborted  bool       // the handler panicked: send nothing more
	pool     *sync.Pool // enc's
	declared int64      // the Content-Length dropped when compressing; 0 if none
	written  int64      // the body bytes given to enc
}

// sink writes to the server's writer and counts what it sends.
type sink struct {
	w http.ResponseWriter
	n int64
}

func (s *sink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

func (c *compressor) Header() http.Header { return c.out.w.Header() }

// Unwrap lets http.ResponseController reach the server's writer.
func (c *compressor) Unwrap() http.ResponseWriter { return c.out.w }

func (c *compressor) WriteHeader(status int) {
	if c.state != czHeader {
		return
	}
	switch c.decide(status) {
	case czEncoding:
		c.start(status)
	case czPending:
		c.state, c.status = czPending, status
	default:
		c.state = czIdentity
		c.out.w.WriteHeader(status)
	}
}

func (c *compressor) Write(p []byte) (int, error) {
	switch c.state {
	case czHeader:
		c.WriteHeader(http.StatusOK)
		return c.Write(p)
	case czIdentity:
		return c.out.Write(p)
	case czEncoding:
		n, err := c.enc.Write(p)
		c.written += int64(n)
		return n, err
	}
	// Pending: hold while the body is short, compress once it is not.
	held := 0
	if c.buf != nil {
		held = len(*c.buf)
	}
	if int64(held+len(p)) <= c.min {
		if c.buf == nil {
			c.buf = c.bufs.Get().(*[]byte)
		}
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	c.start(c.status)
	if held > 0 {
		if _, err := c.Write(*c.buf); err != nil {
			return 0, err
		}
		c.putBuf()
	}
	return c.Write(p)
}

// Flush sends what was written so far, compressed as far as it goes;
// while pending it holds the (short) body.
func (c *compressor) Flush() {
	switch c.state {
	case czHeader:
		c.WriteHeader(http.StatusOK)
		if c.state == czPending {
			return
		}
	case czPending:
		return
	case czEncoding:
		if c.enc.Flush() != nil {
			return
		}
	}
	http.NewResponseController(c.out.w).Flush()
}

// ReadFrom lets an uncompressed file go out with sendfile(2).
func (c *compressor) ReadFrom(src io.Reader) (int64, error) {
	if c.state == czHeader {
		c.WriteHeader(http.StatusOK)
	}
	if rf, ok := c.out.w.(io.ReaderFrom); ok && c.state == czIdentity {
		n, err := rf.ReadFrom(src)
		c.out.n += n
		return n, err
	}
	return copyPooled(writerOnly{c}, src)
}

// decide returns how the response goes, from its status and headers:
// czEncoding, czIdentity, or czPending when only its length can tell.
func (c *compressor) decide(status int) uint8 {
	hd := c.out.w.Header()
	switch {
	case c.off,
		status < 200, status == http.StatusNoContent, status == http.StatusPartialContent,
		status == http.StatusNotModified,
		hd.Get("Content-Encoding") != "", hd.Get("Content-Range") != "",
		!compressibleType(hd.Get("Content-Type")),
		hasToken(hd["Cache-Control"], "no-transform"):
		return czIdentity
	}
	if cl := hd.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n <= c.min {
			return czIdentity
		}
		c.declared = n
		return czEncoding
	}
	return czPending
}

// start sends the status with the headers of a compressed response, and
// makes the encoder ready.
func (c *compressor) start(status int) {
	hd := c.out.w.Header()
	hd.Del("Content-Length")
	hd.Del("Accept-Ranges") // ranges are of the uncompressed bytes, as nginx does
	if c.encoding == "br" {
		hd["Content-Encoding"] = brValue
	} else {
		hd["Content-Encoding"] = gzipValue
	}
	switch vary := hd["Vary"]; {
	case vary == nil:
		hd["Vary"] = varyValue
	case !hasToken(vary, "accept-encoding") && !hasToken(vary, "*"):
		hd["Vary"] = append(vary, "Accept-Encoding")
	}
	// The compressed bytes are not the ones a strong ETag names: weaken it,
	// as nginx does (If-None-Match compares weakly; If-Range then fails).
	if et := hd["Etag"]; len(et) == 1 && strings.HasPrefix(et[0], `"`) {
		hd["Etag"] = []string{"W/" + et[0]}
	}
	if c.encoding == "br" {
		c.pool = &brotliWriters
	} else {
		c.pool = &gzipWriters
	}
	c.enc = c.pool.Get().(encoder)
	c.enc.Reset(&c.out)
	c.state = czEncoding
	c.out.w.WriteHeader(status)
}

// finish ends the response once the handler is done: it closes the
// encoder, or sends a short held body as it is. After abort it sends
// nothing. The encoder and buffer go back to their pools.
//
// A body shorter than the Content-Length compression dropped (a static
// file truncated while http.ServeContent copied it) is not closed as if
// whole: what came is flushed and the connection broken, as the server
// does when the length is sent.
func (c *compressor) finish() {
	short := !c.aborted && c.state == czEncoding && c.written < c.declared
	switch {
	case c.aborted:
	case short:
		if c.enc.Flush() == nil {
			http.NewResponseController(c.out.w).Flush()
		}
	case c.state == czPending:
		// net/http adds a Content-Length, the body fitting its buffer
		// unless CompressMinSize is over 2 KiB.
		c.state = czIdentity
		c.out.w.WriteHeader(c.status)
		if c.buf != nil && len(*c.buf) > 0 {
			c.out.Write(*c.buf)
		}
	case c.state == czEncoding:
		c.enc.Close()
	}
	if c.enc != nil {
		c.enc.Reset(nil) // let go of this response while pooled
		c.pool.Put(c.enc)
		c.enc = nil
	}
	c.putBuf()
	if short {
		panic(http.ErrAbortHandler) // deferred: the access log, unpin
	}
}

func (c *compressor) putBuf() {
	if c.buf != nil {
		*c.buf = (*c.buf)[:0]
		c.bufs.Put(c.buf)
		c.buf = nil
	}
}

// negotiate picks the response's encoding from Accept-Encoding: br or gzip,
// whichever has the higher q (br on a tie), "" when neither is acceptable.
// "*" stands for both when they are not named.
func negotiate(ae string) string {
	br, gz, star := -1.0, -1.0, -1.0
	for ae != "" {
		var item string
		item, ae, _ = strings.Cut(ae, ",")
		token, params, _ := strings.Cut(item, ";")
		switch token = strings.TrimSpace(token); {
		case equalFoldASCII(token, "br"):
			br = qvalue(params)
		case equalFoldASCII(token, "gzip"), equalFoldASCII(token, "x-gzip"):
			gz = qvalue(params)
		case token == "*":
			star = qvalue(params)
		}
	}
	if br < 0 {
		br = star
	}
	if gz < 0 {
		gz = star
	}
	switch {
	case br > 0 && br >= gz:
		return "br"
	case gz > 0:
		return "gzip"
	}
	return ""
}

// qvalue is the q parameter among params (";q=0.5"): 1 when absent, 0 when
// malformed.
func qvalue(params string) float64 {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		p = strings.TrimSpace(p)
		if len(p) >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=' {
			q, err := strconv.ParseFloat(strings.TrimSpace(p[2:]), 64)
			if err != nil || q < 0 {
				return 0
			}
			return q
		}
	}
	return 1
}

// compressibleType reports whether a response of Content-Type ct is worth
// compressing: text (but event streams), JSON, JavaScript, XML, SVG, wasm,
// uncompressed fonts and icons. Images, video, archives and fonts in
// woff/woff2 are compressed already.
func compressibleType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt)) // no allocation when lower already
	switch {
	case mt == "text/event-stream":
		return false
	case strings.HasPrefix(mt, "text/"),
		strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript",
		"application/ecmascript", "application/xml", "application/wasm",
		"application/x-ndjson", "application/yaml", "application/x-yaml",
		"application/toml", "application/graphql", "application/x-sh",
		"application/vnd.ms-fontobject", "application/x-font-ttf",
		"font/ttf", "font/otf", "font/collection",
		"image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}

// hasToken reports whether the comma-separated header values hold token
// (ASCII case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			t, _, _ = strings.Cut(t, "=") // max-age=0 is a token with a value
			if equalFoldASCII(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// writerOnly hides every method but Write, so that io.Copy does not call
// back into ReadFrom.
type writerOnly struct{ io.Writer }

// copyPooled copies src to dst with a pooled buffer.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}
