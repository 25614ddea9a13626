package h1

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Headers that writeHead leaves out of the handler's map (it writes its own
// or none).
const (
	skipCL = 1 << iota
	skipTE
	skipConn
	skipCT
)

// writeHead puts the status line and header in c.bw, deciding the framing
// as net/http's chunkWriter.writeHeader does; p is the body held so far,
// all of it when final (the handler has returned), and next the write
// that did not fit with it.
func (w *response) writeHead(final bool, next []byte) {
	w.headSent = true
	p := w.buf
	h := w.out
	keepAlives := !w.c.srv.inShutdown.Load()
	code := w.status
	te := h.Get("Transfer-Encoding")
	hasTE := te != ""
	var skip int
	var setCL, setCT, setConn, setTE string

	// A handler done on its first write gets a Content-Length, even 0
	// (which keeps HTTP/1.0 keep-alive connections); not for HEAD without
	// body bytes: the handler may have skipped writing.
	if final && !hasTE && bodyAllowedForStatus(code) && w.contentLength == -1 && !has(h, "Content-Length") && (!w.isHead || len(p) > 0) {
		w.contentLength = int64(len(p))
	}
	if w.wants10Keep && keepAlives && h.Get("Content-Length") != "" && h.Get("Connection") == "keep-alive" {
		w.closeAfter = false
	}
	hasCL := w.contentLength != -1
	if w.wants10Keep && (w.isHead || hasCL || !bodyAllowedForStatus(code)) {
		if _, ok := h["Connection"]; !ok {
			setConn = "keep-alive"
		}
	} else if !w.proto11 || w.wantsClose {
		w.closeAfter = true
	}
	if h.Get("Connection") == "close" || !keepAlives {
		w.closeAfter = true
	}

	// Unread request body: with Expect: 100-continue never answered, close;
	// else read what is left, up to maxDrain, so that a client that sends
	// all before reading does not deadlock (net/http, issue 15527).
	if !w.closeAfter {
		switch w.c.body.settle() {
		case drainTooBig:
			w.closeAfter = true
			w.bodyLimitHit = true
			skip |= skipConn
			setConn = "close"
		case drainClosed:
			w.closeAfter = true
			w.bodyLimitHit = true
		case drainFailed:
			w.closeAfter = true
		}
	}

	if bodyAllowedForStatus(code) {
		if !has(h, "Content-Type") && h.Get("Content-Encoding") == "" && !hasTE && len(p)+len(next) > 0 {
			setCT = http.DetectContentType(w.sniffData(p, next))
		}
	} else {
		skip |= skipCL | skipTE
		if code == http.StatusNotModified {
			skip |= skipCT
		}
	}
	if hasCL && hasTE && te != "identity" {
		w.c.srv.logger().Warn("response with both transfer-encoding and content-length",
			zap.String("transfer_encoding", te), zap.Int64("content_length", w.contentLength))
		hasCL = false
		w.contentLength = -1
	}
	switch {
	case w.isHead || !bodyAllowedForStatus(code):
		skip |= skipTE
	case hasCL:
		skip |= skipTE
	case w.proto11:
		if hasTE && te == "identity" {
			w.closeAfter = true
			skip |= skipTE
		} else {
			w.chunking = true
			setTE = "chunked"
			if te == "chunked" {
				skip |= skipTE
			}
		}
	default: // HTTP/1.0: the end of the body is the close
		w.closeAfter = true
		skip |= skipTE
	}
	// The Content-Length sent is the one the body is framed by, the
	// handler's as of WriteHeader: not what a header map it kept says now.
	skip |= skipCL
	if hasCL && bodyAllowedForStatus(code) {
		setCL = strconv.FormatInt(w.contentLength, 10)
	}
	if w.closeAfter && (!keepAlives || !hasToken(h.Get("Connection"), "close")) {
		skip |= skipConn
		setConn = ""
		if w.proto11 {
			setConn = "close"
		}
	}

	bw := w.c.bw
	w.writeStatusLine(code)
	writeHeaderLines(bw, h, skip)
	writeField(bw, "Content-Type", setCT)
	writeField(bw, "Connection", setConn)
	writeField(bw, "Transfer-Encoding", setTE)
	if !has(h, "Date") {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	writeField(bw, "Content-Length", setCL)
	bw.WriteString("\r\n")
}

// sniffData is the first sniffLen bytes of p then next.
func (w *response) sniffData(p, next []byte) []byte {
	if len(p) >= sniffLen || len(next) == 0 {
		return p
	}
	n := copy(w.c.sniff[:], p)
	n += copy(w.c.sniff[n:], next)
	return w.c.sniff[:n]
}

func writeField(bw *bufio.Writer, k, v string) {
	if v == "" {
		return
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// writeHeaderLines writes h, unsorted, but the skipped fields; as
// net/http, invalid field names are dropped and CR/LF in values become
// spaces (no response splitting).
func writeHeaderLines(bw *bufio.Writer, h http.Header, skip int) {
	for k, vv := range h {
		switch k {
		case "Content-Length":
			if skip&skipCL != 0 {
				continue
			}
		case "Transfer-Encoding":
			if skip&skipTE != 0 {
				continue
			}
		case "Connection":
			if skip&skipConn != 0 {
				continue
			}
		case "Content-Type":
			if skip&skipCT != 0 {
				continue
			}
		}
		if !validFieldName(k) {
			continue
		}
		for _, v := range vv {
			if hasCRLF(v) {
				v = newlineToSpace.Replace(v)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
}

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// hasCRLF reports whether v has a CR or an LF (strings.ContainsAny builds a
// set at each call).
func hasCRLF(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return true
		}
	}
	return false
}

func has(h http.Header, k string) bool {
	_, ok := h[k]
	return ok
}

// dateEntry is the Date header value of one second.
type dateEntry struct {
	sec int64
	b   []byte
}

var dateCache atomic.Pointer[dateEntry]

// httpDate returns the current time in http.TimeFormat, formatted once per
// second. The slice must not be modified.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if e := dateCache.Load(); e != nil && e.sec == sec {
		return e.b
	}
	e := &dateEntry{sec: sec, b: now.UTC().AppendFormat(make([]byte, 0, 29), http.TimeFormat)}
	dateCache.Store(e)
	return e.b
}

// validFieldName reports whether s is an RFC 7230 token.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHost is httpguts.ValidHostHeader: only bytes that may appear in a
// uri-host and port.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			continue
		}
		if strings.IndexByte("!$%&()*+,-.:;=[']_~", c) < 0 {
			return false
		}
	}
	return true
}

// hasToken reports whether token is one of v's comma- or space-separated
// elements, case-insensitively (net/http's hasToken).
func hasToken(v, token string) bool {
	for v != "" {
		var el string
		i := strings.IndexAny(v, ", \t")
		if i < 0 {
			el, v = v, ""
		} else {
			el, v = v[:i], v[i+1:]
		}
		if strings.EqualFold(el, token) {
			return true
		}
	}
	return false
}
