package fcgi

// Fuzz targets for what php-fpm sends back (the CGI header block, the record
// stream) and for the params we encode. Plain `go test` runs the seeds;
// `go test -run '^$' -fuzz FuzzResponse ./proxy/fcgi` explores. Crashers go
// under testdata/fuzz/<target>/ and become seeds. docs/reliability.md
// records the runs.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// refHeaderEnd is findHeaderEnd written the obvious way: the block ends at
// the first empty line ("\n" or "\r\n" at the start, or right after a "\n").
func refHeaderEnd(b []byte) (end, body int) {
	for p := -1; p < len(b); p++ {
		if p >= 0 && b[p] != '\n' {
			continue
		}
		rest := b[p+1:]
		switch {
		case len(rest) >= 1 && rest[0] == '\n':
			return p + 1, p + 2
		case len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n':
			return p + 1, p + 3
		}
	}
	return -1, -1
}

// scanInChunks finds the header end the way readResponse does: on a buffer
// that grows by chunk bytes, each call resuming where the last stopped.
func scanInChunks(b []byte, chunk int) (end, body int) {
	from := 0
	for n := min(chunk, len(b)); ; n = min(n+chunk, len(b)) {
		end, body = findHeaderEnd(b[:n], from)
		if end >= 0 || n == len(b) {
			return end, body
		}
		from = max(n-2, 0)
	}
}

// writeCGIHeader serialises a parsed header block back, Status first.
func writeCGIHeader(h http.Header, status int) []byte {
	var b bytes.Buffer
	b.WriteString("Status: " + strconv.Itoa(status) + "\r\n")
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	return b.Bytes()
}

// FuzzCGIHeader: findHeaderEnd agrees with refHeaderEnd however the bytes
// arrive, and parseCGIHeader never panics, fails only with ErrProtocol, and
// returns a header that survives a round trip: valid names, no "Status" key,
// no newline in a value, a status of three digits from 200.
func FuzzCGIHeader(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/html\r\n\r\nbody",
		"Status: 404 Not Found\nX-A: 1\nX-A: 2\n\n",
		"Location: /x\r\n\r\n",
		"Status: 201\r\nLocation: /x\r\n\r\n",
		"\r\nbody only",
		"\nbody only",
		"A:b\r\nB:  spaced \t\r\n\r\n",
		"A: b\r\r\n\r\n",
		"A: b\n\r\n",
		"Status: 099\r\n\r\n",
		"Status: 2000\r\n\r\n",
		"Status:\r\n\r\n",
		"A: b\r\n c\r\n\r\n",
		": x\r\n\r\n",
		"X-\xff: y\r\n\r\n",
		"A: b\r\n\r",
		"no block at all",
	} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, stdout []byte, chunk uint8) {
		end, body := findHeaderEnd(stdout, 0)
		wantEnd, wantBody := refHeaderEnd(stdout)
		if end != wantEnd || body != wantBody {
			t.Fatalf("findHeaderEnd(%q) = %d, %d; want %d, %d", stdout, end, body, wantEnd, wantBody)
		}
		if e, b := scanInChunks(stdout, int(chunk%64)+1); e != end || b != body {
			t.Fatalf("findHeaderEnd in chunks of %d on %q = %d, %d; want %d, %d", chunk%64+1, stdout, e, b, end, body)
		}
		if end < 0 {
			return
		}
		h, status, err := parseCGIHeader(stdout[:end], nil, nil)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("parseCGIHeader(%q) error %v; want ErrProtocol", stdout[:end], err)
			}
			return
		}
		if status < 200 || status > 999 {
			t.Fatalf("parseCGIHeader(%q) status %d; want 200-999", stdout[:end], status)
		}
		if _, ok := h["Status"]; ok {
			t.Fatalf("parseCGIHeader(%q) kept a Status header", stdout[:end])
		}
		for k, vv := range h {
			if k == "" || !validName(k) || len(vv) == 0 {
				t.Fatalf("parseCGIHeader(%q): header %q = %q", stdout[:end], k, vv)
			}
			for _, v := range vv {
				if strings.ContainsRune(v, '\n') || strings.TrimLeft(v, " \t") != v || strings.TrimRight(v, " \t") != v {
					t.Fatalf("parseCGIHeader(%q): header %q value %q", stdout[:end], k, v)
				}
			}
		}
		again := writeCGIHeader(h, status)
		// Into a reused map, as a kept connection's next response.
		reused := http.Header{"Stale": {"x"}}
		clear(reused)
		h2, status2, err := parseCGIHeader(again, make([]string, 6), reused)
		if err != nil || status2 != status || !reflect.DeepEqual(h2, h) {
			t.Fatalf("round trip of %q: %v, %d, %v; want %v, %d", again, h2, status2, err, h, status)
		}
	})
}

// outcome is what a response stream amounts to.
type outcome int

const (
	outComplete   outcome = iota // FCGI_END_REQUEST(FCGI_REQUEST_COMPLETE)
	outOverloaded                // FCGI_END_REQUEST(FCGI_OVERLOADED or FCGI_CANT_MPX_CONN)
	outProtocol                  // a malformed record or an unknown protocol status
	outTruncated                 // the stream ends before FCGI_END_REQUEST
)

// refStream decodes a response stream the way the FastCGI spec reads, with
// none of the client's buffering: the FCGI_STDOUT bytes delivered before the
// stream ended (a record cut short still delivers what arrived), the
// FCGI_STDERR of the records that arrived whole, the app status, and how it
// ended.
type refStream struct {
	stdout, stderr []byte
	appStatus      uint32
	end            outcome
}

func decodeRef(raw []byte) refStream {
	var r refStream
	for {
		if len(raw) < headerLen {
			r.end = outTruncated
			return r
		}
		h, ok := parseHeader(raw)
		if !ok || h.id != requestID {
			r.end = outProtocol
			return r
		}
		raw = raw[headerLen:]
		switch h.typ {
		case typeStdout:
			n := min(h.contentLen, len(raw))
			r.stdout = append(r.stdout, raw[:n]...)
			if len(raw) < h.contentLen+h.paddingLen {
				r.end = outTruncated
				return r
			}
			raw = raw[h.contentLen+h.paddingLen:]
		case typeStderr:
			if len(raw) < h.contentLen+h.paddingLen {
				r.end = outTruncated
				return r
			}
			r.stderr = append(r.stderr, raw[:h.contentLen]...)
			raw = raw[h.contentLen+h.paddingLen:]
		case typeEndRequest:
			if h.contentLen < 8 {
				r.end = outProtocol
				return r
			}
			if len(raw) < 8 {
				r.end = outTruncated
				return r
			}
			r.appStatus = binary.BigEndian.Uint32(raw)
			switch raw[4] {
			case statusRequestComplete:
				r.end = outComplete
			case statusCantMpxConn, statusOverloaded:
				r.end = outOverloaded
			default:
				r.end = outProtocol
			}
			return r
		default:
			r.end = outProtocol
			return r
		}
	}
}

// sentinel is the error an outcome maps to; nil for outComplete.
func (o outcome) sentinel() error {
	return [...]error{nil, ErrOverloaded, ErrProtocol, ErrTruncated}[o]
}

const (
	fuzzMaxHeader = 256
	fuzzMaxStderr = 16
)

// expect is what the Client must make of a stream: the error of Do, or a
// response with the header parsed from the block, a body of exactly the
// stdout bytes after the block, and readErr at its end (nil: io.EOF).
type expect struct {
	doErr   error
	header  http.Header
	status  int
	body    []byte
	readErr error
}

func expectFor(r refStream) expect {
	end, body := findHeaderEnd(r.stdout, 0)
	if end < 0 {
		if len(r.stdout) >= fuzzMaxHeader+2 {
			return expect{doErr: ErrProtocol} // the bound is reached first
		}
		if r.end == outComplete {
			return expect{doErr: ErrProtocol} // ended without a header block
		}
		return expect{doErr: r.end.sentinel()}
	}
	if end > fuzzMaxHeader {
		return expect{doErr: ErrProtocol}
	}
	h, status, err := parseCGIHeader(r.stdout[:end], nil, nil)
	if err != nil {
		return expect{doErr: ErrProtocol}
	}
	return expect{header: h, status: status, body: r.stdout[body:], readErr: r.end.sentinel()}
}

// FuzzResponse replays arbitrary bytes as php-fpm's answer, through the
// exported Client and a real unix socket, and checks the result against
// decodeRef: the right error at the right step (never a clean end for a
// truncated or broken stream, never a refusal of a valid one), the exact
// body bytes, bounded stderr, and no connection left in use.
func FuzzResponse(f *testing.F) {
	ok := appendEnd(appendStream(nil, typeStdout, "Content-Type: text/plain\r\n\r\nhello", 7), 3, statusRequestComplete)
	padded := append(appendHeader(nil, typeStdout, requestID, 9, 7), "A: b\n\nxyz"...)
	padded = append(padded, 0, 0, 0, 0, 0, 0, 0)
	padded = appendEnd(padded, 0, statusRequestComplete)
	withStderr := appendStream(nil, typeStderr, "PHP Warning: "+strings.Repeat("w", 40), 10)
	withStderr = appendStream(withStderr, typeStdout, "Status: 500\r\n\r\n", 100)
	withStderr = appendEnd(appendStream(withStderr, typeStderr, "more", 100), 255, statusRequestComplete)
	longEnd := appendHeader(appendStream(nil, typeStdout, "A: b\r\n\r\n", 100), typeEndRequest, requestID, 16, 3)
	longEnd = append(longEnd, make([]byte, 19)...)
	for _, s := range []struct {
		raw   []byte
		flags uint8
	}{
		{ok, 0},
		{ok, 1},
		{ok, 2},
		{ok[:len(ok)-4], 0},
		{ok[:20], 0},
		{padded, 0},
		{withStderr, 0},
		{longEnd, 0},
		{longEnd[:len(longEnd)-5], 0},
		{appendEnd(appendHeader(nil, typeStdout, requestID, 0, 0), 0, statusRequestComplete), 0},
		{appendEnd(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100), 0, statusOverloaded), 0},
		{appendEnd(appendStream(nil, typeStdout, "A: b\r\n", 100), 0, statusCantMpxConn), 0},
		{appendEnd(nil, 0, statusUnknownRole), 0},
		{appendEnd(nil, 0, 9), 0},
		{appendStream(nil, typeStdout, "A: "+strings.Repeat("x", 300)+"\r\n\r\n", 100), 0},
		{append(appendStream(nil, typeStdout, "A: b\r\n\r\nbody", 100), appendHeader(nil, typeGetValuesResult, requestID, 0, 0)...), 0},
		{appendHeader(nil, typeStdout, 2, 0, 0), 0},
		{[]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0},
		{append(ok, "trailing garbage"...), 0},
		{nil, 0},
	} {
		f.Add(s.raw, s.flags)
	}

	var current atomic.Pointer[[]byte]
	c := startFake(f, func(c *fakeConn) {
		if _, err := c.readRequest(); err != nil {
			return
		}
		c.Write(*current.Load())
		// End the connection as php-fpm does at pm.max_requests: a
		// request the client sends on it meanwhile is discarded, and
		// retried on a new connection.
		c.Conn.(*net.UnixConn).CloseWrite()
		io.Copy(io.Discard, c.r)
	})
	c.MaxConns = 2
	c.ReadTimeout = 10 * time.Second
	c.MaxHeaderBytes = fuzzMaxHeader
	c.MaxStderrBytes = fuzzMaxStderr

	// flags: bit 0 sends a request body (never replayed, never on a kept
	// connection); bit 1 reads the body in 1-byte reads, asking Pending
	// before each.
	f.Fuzz(func(t *testing.T, raw []byte, flags uint8) {
		raw = bytes.Clone(raw)
		current.Store(&raw)
		ref := decodeRef(raw)
		want := expectFor(ref)

		req := &gofast.Request{Params: baseParams("GET")}
		if flags&1 != 0 {
			req.Params = baseParams("POST")
			req.Params["CONTENT_LENGTH"] = "5"
			req.Stdin = io.NopCloser(strings.NewReader("hello"))
		}
		resp, err := c.Do(context.Background(), req)
		if want.doErr != nil || err != nil {
			if err == nil {
				resp.Body.Close()
				t.Fatalf("Do(%q) succeeded; want %v", raw, want.doErr)
			}
			if want.doErr == nil || !errors.Is(err, want.doErr) {
				t.Fatalf("Do(%q) = %v; want %v", raw, err, want.doErr)
			}
			checkIdle(t, c)
			return
		}
		var body []byte
		if flags&2 != 0 {
			var one [1]byte
			for {
				resp.Pending() // peeks at buffered records: must change nothing
				n, rerr := resp.Body.Read(one[:])
				body = append(body, one[:n]...)
				if rerr != nil {
					err = rerr
					break
				}
			}
		} else {
			body, err = io.ReadAll(resp.Body)
			if err == nil {
				err = io.EOF
			}
		}
		resp.Body.Close()
		if resp.Status != want.status || !reflect.DeepEqual(resp.Header, want.header) {
			t.Errorf("%q: header %d %v; want %d %v", raw, resp.Status, resp.Header, want.status, want.header)
		}
		if !bytes.Equal(body, want.body) {
			t.Errorf("%q: body %q; want %q", raw, body, want.body)
		}
		if want.readErr == nil {
			if err != io.EOF {
				t.Errorf("%q: body ended with %v; want io.EOF", raw, err)
			}
			p, dropped := resp.Stderr()
			keep := min(len(ref.stderr), fuzzMaxStderr)
			if !bytes.Equal(p, ref.stderr[:keep]) || dropped != int64(len(ref.stderr)-keep) {
				t.Errorf("%q: stderr %q, %d dropped; want %q, %d", raw, p, dropped, ref.stderr[:keep], len(ref.stderr)-keep)
			}
			if resp.AppStatus() != ref.appStatus {
				t.Errorf("%q: app status %d; want %d", raw, resp.AppStatus(), ref.appStatus)
			}
		} else if !errors.Is(err, want.readErr) || errors.Is(err, io.EOF) {
			t.Errorf("%q: body ended with %v; want %v, never io.EOF", raw, err, want.readErr)
		}
		checkIdle(t, c)
	})
}

// checkIdle fails unless every connection of c is back in the pool or
// closed once an exchange is over.
func checkIdle(t *testing.T, c *Client) {
	t.Helper()
	if s := c.Stats(); s.InUse != 0 || s.Waiting != 0 || s.Open > 2 {
		t.Fatalf("after the exchange: %+v; want nothing in use", s)
	}
}

// FuzzParams: any set of params is encoded into records of at most
// maxContent bytes that decode to the same set, or refused whole with
// ErrParamTooLong when one pair cannot fit in a record.
func FuzzParams(f *testing.F) {
	f.Add("SCRIPT_FILENAME", "/srv/x.php", "", "", 0, 0)
	f.Add("A", "b", "N", "v", 127, 128)
	f.Add("X", "", "Y", "", maxContent-9, 40000)
	f.Add("X", "y", "Y", "z", maxContent, 1)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, pad1, pad2 int) {
		// Pads make values of any size up to past a record, cheaply.
		pad := func(v string, n int) string {
			return v + strings.Repeat("p", min(max(n, 0)%(maxContent+64), 1<<17))
		}
		params := map[string]string{k1: pad(v1, pad1), k2: pad(v2, pad2)}
		b, err := appendParams([]byte("prefix"), requestID, params)
		tooLong := false
		for k, v := range params {
			tooLong = tooLong || pairLen(k, v) > maxContent
		}
		if tooLong {
			if !errors.Is(err, ErrParamTooLong) || string(b) != "prefix" {
				t.Fatalf("oversized pair: %d bytes, %v; want ErrParamTooLong and b unchanged", len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(b[len("prefix"):])
		var stream []byte
		for {
			rec, err := readRecord(r)
			if err != nil {
				t.Fatalf("reading the records back: %v", err)
			}
			if rec.typ != typeParams || rec.id != requestID || len(rec.content) > maxContent {
				t.Fatalf("record type %d id %d with %d bytes", rec.typ, rec.id, len(rec.content))
			}
			if len(rec.content) == 0 {
				break
			}
			// php-fpm parses each record on its own: every record holds
			// whole pairs.
			if _, err := parsePairs(rec.content); err != nil {
				t.Fatalf("a record does not hold whole pairs: %v", err)
			}
			stream = append(stream, rec.content...)
		}
		if r.Len() != 0 {
			t.Fatalf("%d bytes after the empty FCGI_PARAMS record", r.Len())
		}
		got, err := parsePairs(stream)
		if err != nil || !maps.Equal(got, params) {
			t.Fatalf("decoded %d params, %v; want %d", len(got), err, len(params))
		}
	})
}
