package fcgi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/fcgi"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// baseParams are the params net/http/fcgi needs to build a request.
func baseParams(method string) map[string]string {
	return map[string]string{
		"REQUEST_METHOD":  method,
		"SERVER_PROTOCOL": "HTTP/1.1",
		"REQUEST_URI":     "/t.php",
		"SCRIPT_NAME":     "/t.php",
	}
}

// fetch runs a request and reads the whole body.
func fetch(t testing.TB, c *Client, req *gofast.Request) (*Response, string, error) {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestParamsRoundTrip(t *testing.T) {
	got := make(chan map[string]string, 1)
	c := startStdlib(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- fcgi.ProcessEnv(r)
		fmt.Fprintf(w, "%s %s", r.Method, r.Header.Get("X-Long"))
	}))
	extra := map[string]string{
		"SCRIPT_FILENAME":         "/srv/www/current/public/t.php",
		"DOCUMENT_ROOT":           "/srv/www/current/public",
		"EMPTY":                   "",
		strings.Repeat("N", 200):  "long name",
		"LONG_VALUE":              strings.Repeat("v", 128),
		"BIG_A":                   strings.Repeat("a", 40000), // with BIG_B: several records
		"BIG_B":                   strings.Repeat("b", 40000),
		"UTF8":                    "héllo wörld",
		"HTTP_PROXY_NOT_FILTERED": "x",
	}
	params := baseParams("PATCH")
	maps.Copy(params, extra)
	params["HTTP_X_LONG"] = strings.Repeat("h", 3000)
	_, body, err := fetch(t, c, &gofast.Request{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if want := "PATCH " + params["HTTP_X_LONG"]; body != want {
		t.Errorf("body = %.40q; want %.40q", body, want)
	}
	env := <-got
	delete(extra, "HTTP_PROXY_NOT_FILTERED") // HTTP_* become headers
	for k, v := range extra {
		if env[k] != v {
			t.Errorf("param %.20s: got %.20q (%d bytes); want %.20q (%d bytes)", k, env[k], len(env[k]), v, len(v))
		}
	}
}

func TestResponseHeader(t *testing.T) {
	long16 := strings.Repeat("c", 16<<10)
	long60 := strings.Repeat("s", 60<<10)
	session := "X-Powered-By: PHP/8.2\r\nSet-Cookie: PHPSESSID=x; path=/\r\nExpires: Thu, 19 Nov 1981 08:52:00 GMT\r\n" +
		"Cache-Control: no-store, no-cache, must-revalidate\r\nPragma: no-cache\r\nContent-type: text/html; charset=UTF-8\r\n\r\n"
	sessionHeader := http.Header{
		"X-Powered-By": {"PHP/8.2"}, "Set-Cookie": {"PHPSESSID=x; path=/"}, "Expires": {"Thu, 19 Nov 1981 08:52:00 GMT"},
		"Cache-Control": {"no-store, no-cache, must-revalidate"}, "Pragma": {"no-cache"}, "Content-Type": {"text/html; charset=UTF-8"},
	}
	tests := []struct {
		name       string
		give       string // stdout
		chunk      int    // stdout record size
		wantStatus int
		wantHeader http.Header
		wantBody   string
	}{
		{"minimal", "Content-type: text/html; charset=UTF-8\r\n\r\nhi", 8192,
			200, http.Header{"Content-Type": {"text/html; charset=UTF-8"}}, "hi"},
		{"LF only", "A: 1\nB:2\n\nbody\r\n\r\nmore", 8192,
			200, http.Header{"A": {"1"}, "B": {"2"}}, "body\r\n\r\nmore"},
		{"no headers", "\r\nbody", 8192, 200, http.Header{}, "body"},
		{"no headers LF", "\nbody", 8192, 200, http.Header{}, "body"},
		{"empty body", "X-A: b\r\n\r\n", 8192, 200, http.Header{"X-A": {"b"}}, ""},
		{"one byte records", "Status: 201 Created\r\nX-A:  spaced \t\r\n\r\nbody", 1,
			201, http.Header{"X-A": {"spaced"}}, "body"},
		{"status 404", "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope", 8192,
			404, http.Header{"Content-Type": {"text/plain"}}, "nope"},
		{"status code only", "Status: 503\r\n\r\n", 8192, 503, http.Header{}, ""},
		{"location", "Location: /login\r\n\r\n", 8192,
			302, http.Header{"Location": {"/login"}}, ""},
		{"location with status", "Status: 301 Moved Permanently\r\nLocation: /new\r\n\r\n", 8192,
			301, http.Header{"Location": {"/new"}}, ""},
		{"set-cookies", "Set-Cookie: a=1\r\nset-cookie: b=2; HttpOnly\r\nSET-COOKIE: c=3\r\nX-Powered-By: PHP\r\n\r\n", 8192,
			200, http.Header{"Set-Cookie": {"a=1", "b=2; HttpOnly", "c=3"}, "X-Powered-By": {"PHP"}}, ""},
		{"session, 6 lines", session, 8192, 200, sessionHeader, ""},
		{"7 lines", "Status: 200 OK\r\n" + session, 8192, 200, sessionHeader, ""},
		{"16 KiB line", "Set-Cookie: " + long16 + "\r\nX-After: 1\r\n\r\nbody", 8192,
			200, http.Header{"Set-Cookie": {long16}, "X-After": {"1"}}, "body"},
		{"60 KiB line", "Content-Security-Policy: " + long60 + "\r\n\r\nbody", maxContent,
			200, http.Header{"Content-Security-Policy": {long60}}, "body"},
		{"big body", "A: b\r\n\r\n" + long60 + long60, 4096,
			200, http.Header{"A": {"b"}}, long60 + long60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, respond(tt.give, tt.chunk))
			resp, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.wantStatus {
				t.Errorf("Status = %d; want %d", resp.Status, tt.wantStatus)
			}
			if !reflect.DeepEqual(resp.Header, tt.wantHeader) {
				t.Errorf("Header = %.200v; want %.200v", resp.Header, tt.wantHeader)
			}
			// The values share a backing array: appending to one header's
			// must not overwrite another's.
			for k := range resp.Header {
				resp.Header.Add(k, "added")
			}
			for k, vv := range resp.Header {
				if want := append(slices.Clone(tt.wantHeader[k]), "added"); !slices.Equal(vv, want) {
					t.Errorf("after Add to each: Header[%q] = %.100q; want %.100q", k, vv, want)
				}
			}
			if body != tt.wantBody {
				t.Errorf("body = %.40q (%d bytes); want %.40q (%d bytes)", body, len(body), tt.wantBody, len(tt.wantBody))
			}
		})
	}
}

func TestResponseHeaderErrors(t *testing.T) {
	tests := []struct {
		name      string
		give      string
		maxHeader int
	}{
		{"no colon", "Content-Type text/html\r\n\r\n", 0},
		{"empty name", ": x\r\n\r\n", 0},
		{"space in name", "Content Type: x\r\n\r\n", 0},
		{"folded line", "A: b\r\n c\r\n\r\n", 0},
		{"bad status", "Status: abc\r\n\r\n", 0},
		{"status too low", "Status: 099\r\n\r\n", 0},
		{"status 100", "Status: 100 Continue\r\n\r\n", 0},
		{"status 101", "Status: 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 0},
		{"status 199", "Status: 199\r\n\r\n", 0},
		{"status 4 digits", "Status: 2000\r\n\r\n", 0},
		{"no header block", "just some output", 0},
		{"empty stdout", "", 0},
		{"block over max", "A: " + strings.Repeat("x", 100) + "\r\n\r\n", 64},
		{"unterminated over max", "A: " + strings.Repeat("x", 100), 64},
		{"block over default max", "A: " + strings.Repeat("x", 1<<20) + "\r\n\r\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, respond(tt.give, maxContent))
			c.MaxHeaderBytes = tt.maxHeader
			resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("got %v; want ErrProtocol", err)
			}
		})
	}
}

func TestMaxHeaderBytesExact(t *testing.T) {
	block := "A: " + strings.Repeat("x", 57) + "\r\n" // 62 bytes
	for _, tt := range []struct {
		max     int
		wantErr bool
	}{{62, false}, {61, true}} {
		c := startFake(t, respond(block+"\r\nbody", 7))
		c.MaxHeaderBytes = tt.max
		_, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
		if gotErr := errors.Is(err, ErrProtocol); gotErr != tt.wantErr || (!tt.wantErr && body != "body") {
			t.Errorf("max %d: got %q, %v; want error %v", tt.max, body, err, tt.wantErr)
		}
	}
}

// TestStreaming proves that a chunk is readable before php-fpm sends the
// next one: the application waits for the client to have read the first.
func TestStreaming(t *testing.T) {
	readFirst := make(chan struct{})
	c := startStdlib(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-readFirst
		io.WriteString(w, "data: two\n\n")
	}))
	c.ReadTimeout = 5 * time.Second // fail, not hang, if the client waits for more
	resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type = %q; want text/event-stream", got)
	}
	buf := make([]byte, 4096)
	var got []byte
	for len(got) < len("data: one\n\n") {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("read first chunk: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "data: one\n\n" {
		t.Errorf("first chunk = %q; want %q", got, "data: one\n\n")
	}
	if resp.Pending() {
		t.Errorf("Pending() = true after the first chunk; want false")
	}
	close(readFirst)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "data: two\n\n" {
		t.Errorf("rest = %q; want %q", rest, "data: two\n\n")
	}
	if resp.AppStatus() != 0 {
		t.Errorf("AppStatus() = %d; want 0", resp.AppStatus())
	}
}

func TestRequestBody(t *testing.T) {
	c := startStdlib(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	for _, size := range []int{1, stdinChunk, stdinChunk + 1, 5<<20 + 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := make([]byte, size)
			rand.NewChaCha8([32]byte{1}).Read(data)
			sum := sha256.Sum256(data)
			stdin := &closeTracker{Reader: bytes.NewReader(data)}
			params := baseParams("POST")
			params["CONTENT_LENGTH"] = fmt.Sprint(size)
			resp, body, err := fetch(t, c, &gofast.Request{Params: params, Stdin: stdin})
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(sum[:])); body != want || resp.Status != 200 {
				t.Errorf("got %d %q; want 200 %q", resp.Status, body, want)
			}
			if !stdin.isClosed() {
				t.Errorf("Stdin not closed")
			}
		})
	}
}

// TestAnswerBeforeBody: an application that writes its whole (large)
// response before reading the body must not deadlock with us.
func TestAnswerBeforeBody(t *testing.T) {
	out := "A: b\r\n\r\n" + strings.Repeat("o", 4<<20)
	received := make(chan [32]byte, 1)
	c := startFake(t, func(c *fakeConn) {
		if _, err := c.readHead(); err != nil {
			return
		}
		if _, err := c.Write(appendStream(nil, typeStdout, out, maxContent)); err != nil {
			return
		}
		h := sha256.New()
		if err := c.readStdin(h); err != nil {
			return
		}
		received <- [32]byte(h.Sum(nil))
		c.Write(appendEnd(nil, 0, statusRequestComplete))
	})
	data := bytes.Repeat([]byte("i"), 4<<20)
	_, body, err := fetch(t, c, &gofast.Request{Params: baseParams("POST"), Stdin: io.NopCloser(bytes.NewReader(data))})
	if err != nil {
		t.Fatal(err)
	}
	if body != out[8:] {
		t.Errorf("got %d bytes; want %d", len(body), len(out)-8)
	}
	if got := <-received; got != sha256.Sum256(data) {
		t.Errorf("application received a different body")
	}
}

func TestStderr(t *testing.T) {
	flood := strings.Repeat("e", 10<<20)
	tests := []struct {
		name        string
		stderr      string
		max         int
		wantStderr  string
		wantDropped int64
	}{
		{"small", "PHP Warning: x\n", 0, "PHP Warning: x\n", 0},
		{"flood", flood, 0, flood[:64<<10], 10<<20 - 64<<10},
		{"exact", strings.Repeat("e", 100), 100, strings.Repeat("e", 100), 0},
		{"small max", strings.Repeat("e", 100), 10, strings.Repeat("e", 10), 90},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, func(c *fakeConn) {
				if _, err := c.readRequest(); err != nil {
					return
				}
				// stderr before, between and after stdout records.
				half := len(tt.stderr) / 2
				b := appendStream(nil, typeStderr, tt.stderr[:half], 1000)
				b = appendStream(b, typeStdout, "A: b\r\n\r\nbo", 8192)
				b = appendStream(b, typeStderr, tt.stderr[half:], maxContent)
				b = appendStream(b, typeStdout, "dy", 8192)
				b = appendHeader(b, typeStderr, requestID, 0, 0)
				b = appendHeader(b, typeStdout, requestID, 0, 0)
				c.Write(appendEnd(b, 0, statusRequestComplete))
			})
			c.MaxStderrBytes = tt.max
			resp, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
			if err != nil {
				t.Fatal(err)
			}
			if body != "body" {
				t.Errorf("body = %q; want %q", body, "body")
			}
			got, dropped := resp.Stderr()
			if string(got) != tt.wantStderr || dropped != tt.wantDropped {
				t.Errorf("Stderr() = %d bytes, %d dropped; want %d bytes, %d dropped",
					len(got), dropped, len(tt.wantStderr), tt.wantDropped)
			}
		})
	}
}

func TestPadding(t *testing.T) {
	c := startFake(t, func(c *fakeConn) {
		if _, err := c.readRequest(); err != nil {
			return
		}
		var b []byte
		for _, s := range []string{"A: b\r\n\r\n", "bo", "dy"} {
			b = appendHeader(b, typeStdout, requestID, len(s), 8-len(s)%8)
			b = append(b, s...)
			b = append(b, make([]byte, 8-len(s)%8)...)
		}
		b = appendHeader(b, typeStderr, requestID, 3, 5)
		b = append(b, "err\x00\x00\x00\x00\x00"...)
		c.Write(appendEnd(b, 3, statusRequestComplete))
	})
	resp, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
	if err != nil {
		t.Fatal(err)
	}
	stderr, _ := resp.Stderr()
	if body != "body" || string(stderr) != "err" || resp.AppStatus() != 3 {
		t.Errorf("got %q, stderr %q, app status %d; want %q, %q, 3", body, stderr, resp.AppStatus(), "body", "err")
	}
}

func TestBeginRequest(t *testing.T) {
	tests := []struct {
		name             string
		disableKeepAlive bool
		wantFlags        byte
	}{
		{"keep-alive", false, flagKeepConn},
		{"disabled", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan fakeRequest, 1)
			c := startFake(t, func(c *fakeConn) {
				req, err := c.readRequest()
				if err != nil {
					return
				}
				got <- req
				c.Write(appendEnd(appendStream(nil, typeStdout, "\r\n", 10), 0, statusRequestComplete))
			})
			c.DisableKeepAlive = tt.disableKeepAlive
			if _, _, err := fetch(t, c, &gofast.Request{Params: map[string]string{"A": "b"}}); err != nil {
				t.Fatal(err)
			}
			req := <-got
			if req.role != roleResponder || req.flags != tt.wantFlags || !reflect.DeepEqual(req.params, map[string]string{"A": "b"}) {
				t.Errorf("got role %d flags %d params %v; want %d, %d, map[A:b]", req.role, req.flags, req.params, roleResponder, tt.wantFlags)
			}
		})
	}
}
