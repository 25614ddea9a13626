package fcgi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
)

// readResponse reads stdout until the CGI header block ends, and returns
// the Response whose Body streams the rest. The bytes read past the block
// become the start of Body.
func (x *exchange) readResponse(maxHeader int) (*Response, error) {
	// A block of maxHeader bytes plus its blank line fits in limit.
	limit := maxHeader + 2
	bufp := getBuf()
	buf := (*bufp)[:0]
	from, end, body := 0, -1, -1
	for end < 0 {
		if len(buf) >= limit {
			putBuf(bufp)
			return nil, fmt.Errorf("%w: response header block larger than %d bytes", ErrProtocol, maxHeader)
		}
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), limit))
			copy(nb, buf)
			putBuf(bufp)
			bufp, buf = &nb, nb
		}
		n, err := x.readStdout(buf[len(buf):min(cap(buf), limit)])
		if n > 0 {
			buf = buf[:len(buf)+n]
			end, body = findHeaderEnd(buf, from)
			from = max(len(buf)-2, 0)
		}
		if end < 0 && err != nil {
			putBuf(bufp)
			if err == io.EOF {
				return nil, fmt.Errorf("%w: response ended without a header block", ErrProtocol)
			}
			return nil, err
		}
	}
	if end > maxHeader {
		putBuf(bufp)
		return nil, fmt.Errorf("%w: response header block larger than %d bytes", ErrProtocol, maxHeader)
	}
	var h http.Header
	if x.pc != nil {
		// The connection's map, as the exchange before this one left it.
		h = x.pc.hdr
		clear(h)
	}
	h, status, err := parseCGIHeader(buf[:end], x.hdrVals[:], h)
	if err != nil {
		putBuf(bufp)
		return nil, err
	}
	if body < len(buf) {
		x.pre, x.preBuf = buf[body:], bufp
	} else {
		putBuf(bufp)
	}
	if x.pc != nil {
		x.pc.hdr = h
	}
	x.resp = Response{Status: status, Header: h, Body: x, x: x}
	return &x.resp, nil
}

// findHeaderEnd finds the blank line ending a CGI header block in b,
// scanning from offset from (0, or where a previous call stopped looking).
// It returns the length of the block (its last line's newline included)
// and the offset of the body, or -1, -1. Lines end with "\n" or "\r\n".
func findHeaderEnd(b []byte, from int) (end, body int) {
	if from == 0 {
		switch {
		case len(b) >= 1 && b[0] == '\n':
			return 0, 1
		case len(b) >= 2 && b[0] == '\r' && b[1] == '\n':
			return 0, 2
		}
	}
	for i := from; i < len(b); i++ {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 1, i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 1, i + 3
		}
	}
	return -1, -1
}

// parseCGIHeader parses a CGI header block: "Name: value" lines ending
// with "\n" or "\r\n". Status is taken out of the header; without it, a
// Location means 302. The header's values are backed by vals when it has
// room for one per line, else by a new array. The lines go into h, which
// must be empty, or into a new map if h is nil.
func parseCGIHeader(block []byte, vals []string, h http.Header) (http.Header, int, error) {
	n := bytes.Count(block, []byte{'\n'})
	if h == nil {
		h = make(http.Header, n)
	}
	if n == 0 {
		return h, http.StatusOK, nil
	}
	// One string for the whole block, one backing array for the values,
	// as net/textproto does.
	s := string(block)
	strs := vals
	if len(strs) < n {
		strs = make([]string, n)
	}
	status := 0
	for len(s) > 0 {
		i := indexByte(s, '\n')
		line := s[:i]
		s = s[i+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		colon := indexByte(line, ':')
		if colon <= 0 || !validName(line[:colon]) {
			return nil, 0, fmt.Errorf("%w: malformed response header line %.64q", ErrProtocol, line)
		}
		key := textproto.CanonicalMIMEHeaderKey(line[:colon])
		value := trimSpace(line[colon+1:])
		if key == "Status" {
			code, ok := parseStatus(value)
			if !ok {
				return nil, 0, fmt.Errorf("%w: malformed Status %.64q", ErrProtocol, value)
			}
			if code < 200 {
				// FastCGI has no interim responses: a 1xx would be sent
				// as the final status (101 then carries on as HTTP) or
				// logged as one while the client gets a 200.
				return nil, 0, fmt.Errorf("%w: informational Status %.64q as the final one", ErrProtocol, value)
			}
			status = code
			continue
		}
		vv := h[key]
		if vv == nil && len(strs) > 0 {
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = value
			h[key] = vv
		} else {
			h[key] = append(vv, value)
		}
	}
	if status == 0 {
		status = http.StatusOK
		if _, ok := h["Location"]; ok {
			status = http.StatusFound
		}
	}
	return h, status, nil
}

// parseStatus parses the value of a CGI Status header: a 3-digit code,
// optionally followed by a space and a reason phrase.
func parseStatus(v string) (int, bool) {
	if len(v) < 3 || (len(v) > 3 && v[3] != ' ') {
		return 0, false
	}
	code := 0
	for i := range 3 {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	return code, code >= 100
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// validName reports whether s is an HTTP token (RFC 9110 5.6.2).
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || !tokenTable[c] {
			return false
		}
	}
	return true
}

var tokenTable = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// Read implements Response.Body.
func (x *exchange) Read(p []byte) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.pre) > 0 {
		n := copy(p, x.pre)
		x.pre = x.pre[n:]
		if len(x.pre) == 0 {
			x.releasePre()
		}
		return n, nil
	}
	if x.err != nil {
		return 0, x.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := x.readStdout(p)
	if err != nil {
		x.err = err
		x.release()
	}
	return n, err
}

// Close implements Response.Body: it closes the connection, if still open
// and the response was not read to its end, and waits for the goroutine
// streaming the request body. A connection whose exchange ended cleanly goes
// back to the pool instead.
func (x *exchange) Close() error {
	x.closed.Store(true)
	if !x.parked.Load() {
		x.closeConn() // unblocks a Read in progress
	}
	x.mu.Lock()
	if x.err == nil {
		x.err = errBodyClosed
	}
	x.release()
	x.mu.Unlock()
	x.stdin.Wait()
	if x.parked.Load() {
		x.mu.Lock()
		x.settle(true)
		x.mu.Unlock()
	}
	return nil
}

// pending reports whether the next Read can return without waiting on
// php-fpm: stdout bytes are buffered (the rest of the current record, or the
// next record's header and some content), or the end of the response is
// (FCGI_END_REQUEST, maybe after the empty FCGI_STDOUT closing the stream).
// A copier that flushes when nothing is pending then never flushes a
// response whose end is already here: it goes out in one write, with a
// Content-Length when small.
func (x *exchange) pending() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.pre) > 0 {
		return true
	}
	if x.br == nil || x.err != nil {
		return false
	}
	n := x.br.Buffered()
	if x.remain > 0 {
		return n > 0
	}
	off := x.pad
	for range 2 { // stdout content, or [empty stdout] then the end
		if n < off+headerLen {
			return false
		}
		b, _ := x.br.Peek(off + headerLen) // buffered: no read
		h, ok := parseHeader(b[off:])
		switch {
		case !ok:
			return true // the next Read fails at once
		case h.typ == typeStdout && h.contentLen > 0:
			return n > off+headerLen
		case h.typ == typeStdout:
			off += headerLen + int(h.paddingLen)
		case h.typ == typeEndRequest:
			return n >= off+headerLen+int(h.contentLen)+int(h.paddingLen)
		default:
			return false
		}
	}
	return false
}

// Pending reports whether more response bytes, or the response's end, are
// already buffered and can be read without waiting on php-fpm. A streaming
// copier flushes to the client whenever Pending is false.
func (r *Response) Pending() bool {
	if r.x == nil {
		return false
	}
	return r.x.pending()
}

// Stderr returns what the application wrote to FCGI_STDERR, up to
// MaxStderrBytes, and how many bytes past that were dropped. It is complete
// once Body has returned an error or io.EOF, or has been closed.
func (r *Response) Stderr() (p []byte, dropped int64) {
	if r.x == nil {
		return nil, 0
	}
	r.x.smu.Lock()
	defer r.x.smu.Unlock()
	return r.x.stderr[:len(r.x.stderr):len(r.x.stderr)], r.x.dropped
}

// AppStatus returns the application's exit status from FCGI_END_REQUEST
// (valid once Body has returned io.EOF).
func (r *Response) AppStatus() uint32 {
	if r.x == nil {
		return 0
	}
	r.x.smu.Lock()
	defer r.x.smu.Unlock()
	return r.x.appStatus
}
