package h1

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// bodyBufferSize is how much of a response body is held before the header
// goes out: a handler that writes no more than this and does not flush gets
// a Content-Length; past it the response is chunked (HTTP/1.1) or
// close-delimited (HTTP/1.0). net/http holds 2 KiB.
const bodyBufferSize = 4 << 10

// sniffLen is how much http.DetectContentType looks at.
const sniffLen = 512

// response is the http.ResponseWriter of one request. It is part of its
// conn and reused by the next request: as net/http documents, a handler must
// not use it once ServeHTTP has returned.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header // the handler's
	out    http.Header // what goes out: header as of WriteHeader
	snap   bool        // out is a snapshot, header a copy the handler got later

	status      int
	wroteHeader bool // WriteHeader was called (or implied)
	headSent    bool // the header is in c.bw
	handlerDone bool
	buf         []byte // body held until the header goes out

	contentLength int64 // declared or computed; -1: unknown
	written       int64 // body bytes the handler wrote
	chunking      bool
	closeAfter    bool // close the connection after this response
	bodyLimitHit  bool // unread request body over maxDrain
	isHead        bool
	proto11       bool
	wantsClose    bool // the request had Connection: close (or HTTP/1.0 without keep-alive)
	wants10Keep   bool // HTTP/1.0 with Connection: keep-alive
	scratch       [24]byte
}

// reset prepares w for req.
func (w *response) reset(c *conn, req *http.Request) {
	h := w.header
	if h == nil || w.snap {
		h = make(http.Header, 8)
	} else {
		clear(h)
	}
	*w = response{
		c:             c,
		req:           req,
		header:        h,
		buf:           w.buf[:0],
		contentLength: -1,
		isHead:        req.Method == http.MethodHead,
		proto11:       req.ProtoAtLeast(1, 1),
		wantsClose:    req.Close || hasToken(req.Header.Get("Connection"), "close"),
	}
	w.wants10Keep = req.ProtoMajor == 1 && req.ProtoMinor == 0 && !req.Close && hasToken(req.Header.Get("Connection"), "keep-alive")
}

// Header returns the response header. Changes after WriteHeader do not
// reach the client, as in net/http (except for 1xx responses). So the first
// call between WriteHeader and the head's flush copies the map (~2 µs of
// a small PHP request, measured): on a hot path, read it before.
func (w *response) Header() http.Header {
	if w.wroteHeader && !w.headSent && !w.snap {
		w.header = w.out.Clone()
		w.snap = true
	}
	return w.header
}

// WriteHeader sends an informational (1xx but 101) response at once, or
// fixes the final status; the header goes out with the first flush or when
// the handler returns.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		w.c.srv.logger().Warn("superfluous WriteHeader", zap.Int("status", code), zap.Int("first_status", w.status))
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code)) // as net/http
	}
	if code < 101 || code > 199 {
		w.c.disableContinue()
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		bw := w.c.bw
		w.writeStatusLine(code)
		writeHeaderLines(bw, w.header, skipCL|skipTE)
		bw.WriteString("\r\n")
		bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.out = w.header
	if cl := w.header.Get("Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.srv.logger().Warn("invalid response content-length", zap.String("content_length", cl))
			w.header.Del("Content-Length")
		}
	}
}

// Write holds p until the header goes out, then frames it.
func (w *response) Write(p []byte) (int, error) {
	w.c.disableContinue()
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if !w.headSent {
		if len(w.buf)+len(p) <= cap(w.buf) {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.writeHead(false, p)
		err := w.emit(w.buf, p)
		w.buf = w.buf[:0]
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := w.emit(p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// emit writes body bytes a then b, framed, after the header.
func (w *response) emit(a, b []byte) error {
	if w.c.werr != nil {
		return w.c.werr
	}
	if w.isHead {
		return nil
	}
	bw := w.c.bw
	if w.chunking {
		n := len(a) + len(b)
		if n == 0 {
			return nil
		}
		bw.Write(strconv.AppendInt(w.scratch[:0], int64(n), 16))
		bw.WriteString("\r\n")
		bw.Write(a)
		bw.Write(b)
		_, err := bw.WriteString("\r\n")
		return err
	}
	bw.Write(a)
	_, err := bw.Write(b)
	return err
}

// Flush sends the header and what is held to the client.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush that reports a write error (http.ResponseController).
func (w *response) FlushError() error {
	w.sendHead(false)
	if err := w.c.bw.Flush(); err != nil {
		return err
	}
	return w.c.werr
}

// sendHead writes the status line and header, then what is held, unless
// done already; it reports whether it did. final: the handler has returned,
// so a held body's length is known.
func (w *response) sendHead(final bool) bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.headSent {
		return false
	}
	w.writeHead(final, nil)
	w.emit(w.buf, nil)
	w.buf = w.buf[:0]
	return true
}

// finish completes the response once the handler has returned.
func (w *response) finish() {
	w.handlerDone = true
	// Chunked even when the header goes out now: the handler set
	// Transfer-Encoding itself.
	w.sendHead(true)
	if w.chunking {
		w.c.bw.WriteString("0\r\n\r\n")
	}
	w.c.bw.Flush()
}

// shouldReuse reports whether the connection can serve another request.
func (w *response) shouldReuse() bool {
	if w.closeAfter || w.c.werr != nil {
		return false
	}
	if !w.isHead && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false // did not write what it declared: out of sync
	}
	return w.c.body.done()
}

// SetReadDeadline sets the connection's read deadline
// (http.ResponseController); it is lifted after the request.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.setUserReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline
// (http.ResponseController); it is lifted after the request.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.userWDL = true
	return w.c.rwc.SetWriteDeadline(t)
}

// bodyWriter is response without ReadFrom, for io.Copy inside ReadFrom.
type bodyWriter response

func (b *bodyWriter) Write(p []byte) (int, error) { return (*response)(b).Write(p) }

var copyBufPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// ReadFrom sends src as the body. A body small enough to be held (src an
// io.LimitedReader that fits the buffer, as http.ServeContent passes) is
// read into the buffer: one write for header and body. Else, as net/http,
// the first 512 bytes are held for sniffing, the header is flushed, and the
// rest goes through the connection's ReadFrom (sendfile for an *os.File,
// alone or under an io.LimitedReader) unless the response is chunked, but
// never past a declared Content-Length (sendFrom).
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.c.rwc.(io.ReaderFrom)
	if !ok {
		return w.copyFrom(src, 0)
	}
	var n int64
	if !w.headSent {
		limit := int64(sniffLen)
		if lr, isLR := src.(*io.LimitedReader); isLR && lr.N < int64(cap(w.buf)-len(w.buf)) {
			limit = lr.N + 1
		}
		for limit > 0 && !w.headSent {
			room := w.buf[len(w.buf):cap(w.buf)]
			if len(room) == 0 {
				break
			}
			if int64(len(room)) > limit {
				room = room[:limit]
			}
			m, err := src.Read(room)
			limit -= int64(m)
			if m > 0 {
				if _, werr := w.Write(room[:m]); werr != nil {
					return n, werr
				}
				n += int64(m)
			}
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
		}
	}
	if err := w.FlushError(); err != nil {
		return n, err
	}
	if !w.chunking && bodyAllowedForStatus(w.status) && !w.isHead {
		n0, err := w.sendFrom(rf, src)
		return n + n0, err
	}
	return w.copyFrom(src, n)
}

// sendFrom sends src through the connection's ReadFrom, at most what is
// left of a declared Content-Length: unlike net/http, whose ReadFrom sends
// all src has, which the client reads as the next response (a PHP
// response buffered to a file whose Content-Length is short of its body).
// More is refused with http.ErrContentLength, as Write does, and the
// connection then closes. A LimitedReader that fits stays as it is, so
// that sendfile still sees the *os.File under it.
func (w *response) sendFrom(rf io.ReaderFrom, src io.Reader) (int64, error) {
	rest := w.contentLength - w.written
	lr, isLR := src.(*io.LimitedReader)
	if w.contentLength == -1 || isLR && lr.N <= rest {
		n, err := rf.ReadFrom(src)
		w.written += n
		return n, err
	}
	inner := src
	if isLR {
		inner = lr.R
	}
	l := &io.LimitedReader{R: inner, N: rest}
	n, err := rf.ReadFrom(l)
	w.written += n
	if isLR {
		lr.N -= n
	}
	if err != nil || l.N > 0 {
		return n, err
	}
	var one [1]byte
	if m, _ := io.ReadFull(src, one[:]); m > 0 {
		w.written++ // counted, as by Write: shouldReuse sees the excess
		return n, http.ErrContentLength
	}
	return n, nil
}

// copyFrom copies src through Write; n is what was already sent.
func (w *response) copyFrom(src io.Reader, n int64) (int64, error) {
	buf := copyBufPool.Get().(*[32 << 10]byte)
	defer copyBufPool.Put(buf)
	n0, err := io.CopyBuffer((*bodyWriter)(w), src, buf[:])
	return n + n0, err
}

// writeStatusLine writes "HTTP/1.x code text\r\n".
func (w *response) writeStatusLine(code int) {
	bw := w.c.bw
	if w.proto11 {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.Write(strconv.AppendInt(w.scratch[:0], int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199:
		return false
	case status == 204, status == 304:
		return false
	}
	return true
}
