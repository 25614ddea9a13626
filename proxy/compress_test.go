package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// htmlPage is a PHP-like page of about n bytes: repetitive, as HTML is.
func htmlPage(n int) string {
	var b strings.Builder
	b.WriteString("<!doctype html><html><head><title>Orders</title></head><body><table>\n")
	for i := 0; b.Len() < n-30; i++ {
		fmt.Fprintf(&b, "<tr class=\"row\"><td>%d</td><td>Order #%05d</td><td>%d.%02d EUR</td></tr>\n", i, i*7919%100000, i*37%500, i%100)
	}
	b.WriteString("</table></body></html>\n")
	return b.String()[:n]
}

// newFakeSite serves a release holding files through a recording FastCGI
// responder answering with fake. It returns the server and the deploy dir.
func newFakeSite(t *testing.T, files map[string]string, opts Options, fake fcgitest.Handler) (*httptest.Server, string) {
	t.Helper()
	dir := newDeploy(t, files, "A")
	srv := fcgitest.Start(t, fake)
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket}, opts)
	ts := newTestServer(t, h)
	t.Cleanup(ts.Close)
	return ts, dir
}

// rawGet sends a GET (or HEAD) with the headers given and returns the
// response with its body as sent: identityClient never decodes.
func rawGet(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := getWithin(t, method, url, time.Minute, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, b
}

// decode undoes Content-Encoding enc.
func decode(t *testing.T, enc string, b []byte) string {
	t.Helper()
	var r io.Reader
	switch enc {
	case "":
		return string(b)
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	default:
		t.Fatalf("unexpected Content-Encoding %q", enc)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return string(out)
}

// TestCompressPHP: PHP responses are compressed on the fly as the client
// accepts, when their type and size are worth it and nothing says no; the
// decoded body is the original.
func TestCompressPHP(t *testing.T) {
	page := htmlPage(20 << 10)
	png := strings.Repeat("\x89PNG", 2000)
	// Each case's CGI response, by QUERY_STRING.
	responses := map[string]string{
		"page":         "Content-Type: text/html; charset=UTF-8\r\n\r\n" + page,
		"small":        "Content-Type: text/html; charset=UTF-8\r\n\r\n" + page[:1024],
		"just-over":    "Content-Type: text/html; charset=UTF-8\r\n\r\n" + page[:1025],
		"json":         "Content-Type: application/json\r\n\r\n" + strings.Repeat(`{"a":1},`, 500),
		"png":          "Content-Type: image/png\r\n\r\n" + png,
		"encoded":      "Content-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n" + page,
		"length":       "Content-Type: text/html\r\nContent-Length: 5000\r\n\r\n" + page[:5000],
		"length-tiny":  "Content-Type: text/html\r\nContent-Length: 500\r\n\r\n" + page[:500],
		"etag":         "Content-Type: text/html\r\nETag: \"v1\"\r\nVary: Cookie\r\n\r\n" + page,
		"weak-etag":    "Content-Type: text/html\r\nETag: W/\"v1\"\r\nVary: Accept-Encoding\r\n\r\n" + page,
		"no-transform": "Content-Type: text/html\r\nCache-Control: public, no-transform\r\n\r\n" + page,
		"unbuffered":   "Content-Type: text/html\r\nX-Accel-Buffering: no\r\n\r\n" + page,
		"no-content":   "Status: 204 No Content\r\n\r\n",
		"not-modified": "Status: 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
		"not-found":    "Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n" + page,
	}
	core, logs := observer.New(zap.InfoLevel)
	ts, _ := newFakeSite(t, map[string]string{"index.php": "<?php"}, Options{AccessLog: zap.New(core)},
		func(req *fcgitest.Request, w io.Writer) error {
			_, err := io.WriteString(w, responses[req.Params["QUERY_STRING"]])
			return err
		})

	tests := []struct {
		name     string
		method   string
		give     string // the query: which response
		ae       string // Accept-Encoding
		wantEnc  string
		wantBody string
		wantHdrs map[string]string // "" means absent
		status   int
	}{
		// No Content-Length of the uncompressed page; the server may count
		// the compressed one (proxy/h1 does when it fits its buffer):
		// checked against the bytes sent below.
		{name: "gzip", give: "page", ae: "gzip, deflate", wantEnc: "gzip", wantBody: page,
			wantHdrs: map[string]string{"Vary": "Accept-Encoding"}},
		{name: "brotli", give: "page", ae: "br", wantEnc: "br", wantBody: page},
		{name: "brotli preferred", give: "page", ae: "gzip, deflate, br, zstd", wantEnc: "br", wantBody: page},
		{name: "q prefers gzip", give: "page", ae: "br;q=0.5, gzip", wantEnc: "gzip", wantBody: page},
		{name: "br refused by q=0", give: "page", ae: "br;q=0, gzip", wantEnc: "gzip", wantBody: page},
		{name: "star", give: "page", ae: "*", wantEnc: "br", wantBody: page},
		{name: "star but gzip refused", give: "page", ae: "*;q=0.1, br;q=0", wantEnc: "gzip", wantBody: page},
		{name: "no accept-encoding", give: "page", wantBody: page,
			wantHdrs: map[string]string{"Vary": ""}},
		{name: "gzip q=0", give: "page", ae: "gzip;q=0", wantBody: page},
		{name: "identity only", give: "page", ae: "identity", wantBody: page},
		{name: "json", give: "json", ae: "gzip", wantEnc: "gzip", wantBody: strings.Repeat(`{"a":1},`, 500)},
		{name: "small body", give: "small", ae: "gzip, br", wantBody: page[:1024],
			wantHdrs: map[string]string{"Content-Length": "1024", "Vary": ""}},
		{name: "just over the minimum", give: "just-over", ae: "gzip", wantEnc: "gzip", wantBody: page[:1025]},
		{name: "image", give: "png", ae: "gzip, br", wantBody: png},
		{name: "encoded by PHP", give: "encoded", ae: "gzip, br", wantEnc: "gzip-raw", wantBody: page},
		// PHP's Content-Length is dropped; net/http may set the compressed
		// one (checked below for every case).
		{name: "content-length over the minimum", give: "length", ae: "gzip", wantEnc: "gzip", wantBody: page[:5000]},
		{name: "content-length under the minimum", give: "length-tiny", ae: "gzip", wantBody: page[:500],
			wantHdrs: map[string]string{"Content-Length": "500"}},
		{name: "strong etag made weak", give: "etag", ae: "gzip", wantEnc: "gzip", wantBody: page,
			wantHdrs: map[string]string{"Etag": `W/"v1"`, "Vary": "Cookie, Accept-Encoding"}},
		{name: "weak etag kept, vary not doubled", give: "weak-etag", ae: "br", wantEnc: "br", wantBody: page,
			wantHdrs: map[string]string{"Etag": `W/"v1"`, "Vary": "Accept-Encoding"}},
		{name: "uncompressed etag stays strong", give: "etag", wantBody: page,
			wantHdrs: map[string]string{"Etag": `"v1"`}},
		{name: "no-transform", give: "no-transform", ae: "gzip", wantBody: page},
		{name: "x-accel-buffering no", give: "unbuffered", ae: "gzip", wantBody: page},
		{name: "head", method: "HEAD", give: "page", ae: "gzip, br"},
		{name: "204", give: "no-content", ae: "gzip", status: 204},
		{name: "304", give: "not-modified", ae: "gzip", status: 304, wantHdrs: map[string]string{"Etag": `"v1"`}},
		{name: "404 page", give: "not-found", ae: "gzip", status: 404, wantEnc: "gzip", wantBody: page},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			resp, body := rawGet(t, method, ts.URL+"/index.php?"+tt.give, "Accept-Encoding", tt.ae)
			status := tt.status
			if status == 0 {
				status = 200
			}
			if resp.StatusCode != status {
				t.Fatalf("status %d; want %d", resp.StatusCode, status)
			}
			enc := resp.Header.Get("Content-Encoding")
			wantEnc := tt.wantEnc
			if wantEnc == "gzip-raw" { // PHP's own: passed as it is
				wantEnc = "gzip"
				if string(body) != tt.wantBody {
					t.Errorf("PHP's encoded body was changed")
				}
			} else if got := decode(t, enc, body); got != tt.wantBody {
				t.Errorf("decoded body: %d bytes, want %d (equal prefix: %v)", len(got), len(tt.wantBody), strings.HasPrefix(tt.wantBody, got))
			}
			if enc != wantEnc {
				t.Errorf("Content-Encoding %q; want %q", enc, wantEnc)
			}
			if wantEnc != "" && tt.wantEnc != "gzip-raw" && len(body) >= len(tt.wantBody) {
				t.Errorf("compressed body is %d bytes, no smaller than %d", len(body), len(tt.wantBody))
			}
			if cl := resp.Header.Get("Content-Length"); cl != "" && method != "HEAD" && cl != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %s; %d bytes sent", cl, len(body))
			}
			for k, v := range tt.wantHdrs {
				if got := strings.Join(resp.Header.Values(k), ", "); got != v {
					t.Errorf("%s: %q; want %q", k, got, v)
				}
			}
		})
	}

	t.Run("access log counts the bytes sent", func(t *testing.T) {
		logs.TakeAll()
		_, body := rawGet(t, "GET", ts.URL+"/index.php?page", "Accept-Encoding", "gzip")
		var entries []observer.LoggedEntry
		for deadline := time.Now().Add(5 * time.Second); len(entries) == 0 && time.Now().Before(deadline); {
			entries = logs.FilterMessage("request").All() // written after the response is done
			time.Sleep(5 * time.Millisecond)
		}
		if len(entries) != 1 {
			t.Fatalf("%d access log lines; want 1", len(entries))
		}
		if got := entries[0].ContextMap()["bytes"]; got != int64(len(body)) {
			t.Errorf("bytes = %v; want %d (compressed, as sent)", got, len(body))
		}
	})
}

// TestCompressStatic: static files without a precompressed sibling are
// compressed on the fly; ranges, HEAD and 304 are not; a sibling wins.
func TestCompressStatic(t *testing.T) {
	css := strings.Repeat("body{color:red}\n", 1024) // 16 KiB
	dir := newDeploy(t, map[string]string{
		"app.css":    css,
		"site.js":    css,
		"site.js.gz": "GZ",
		"logo.png":   css, // by its type, not its content
		"tiny.css":   "a{}",
	}, "A")
	mtime := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "releases/A/app.css"), mtime, mtime)
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	strong := etag(mtime.Unix(), int64(len(css)))

	tests := []struct {
		name     string
		method   string
		target   string
		header   http.Header
		status   int
		wantEnc  string
		wantBody string
		wantHdrs map[string]string
	}{
		{name: "compressed", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip"}}, status: 200,
			wantEnc: "gzip", wantBody: css,
			wantHdrs: map[string]string{"Etag": "W/" + strong, "Vary": "Accept-Encoding", "Content-Length": "", "Accept-Ranges": "",
				"Last-Modified": "Sat, 21 Nov 2026 12:00:00 GMT", "Content-Type": "text/css; charset=utf-8"}},
		{name: "brotli", target: "/app.css", header: http.Header{"Accept-Encoding": {"br"}}, status: 200, wantEnc: "br", wantBody: css},
		{name: "304 on the weak etag", target: "/app.css",
			header: http.Header{"Accept-Encoding": {"gzip"}, "If-None-Match": {"W/" + strong}}, status: 304},
		{name: "range served uncompressed", target: "/app.css",
			header: http.Header{"Accept-Encoding": {"gzip, br"}, "Range": {"bytes=16-31"}}, status: 206, wantBody: css[16:32],
			wantHdrs: map[string]string{"Content-Range": fmt.Sprintf("bytes 16-31/%d", len(css)), "Etag": strong}},
		{name: "if-range on the weak etag: whole, compressed", target: "/app.css",
			header: http.Header{"Accept-Encoding": {"gzip"}, "Range": {"bytes=16-31"}, "If-Range": {"W/" + strong}}, status: 200,
			wantEnc: "gzip", wantBody: css},
		{name: "head", method: "HEAD", target: "/app.css", header: http.Header{"Accept-Encoding": {"gzip, br"}}, status: 200,
			wantHdrs: map[string]string{"Content-Length": strconv.Itoa(len(css)), "Etag": strong}},
		{name: "not accepted", target: "/app.css", status: 200, wantBody: css,
			wantHdrs: map[string]string{"Content-Length": strconv.Itoa(len(css)), "Etag": strong, "Accept-Ranges": "bytes"}},
		{name: "sibling wins", target: "/site.js", header: http.Header{"Accept-Encoding": {"gzip, br"}}, status: 200,
			wantEnc: "gzip-raw", wantBody: "GZ", wantHdrs: map[string]string{"Vary": "Accept-Encoding"}},
		{name: "range with a sibling: of the file itself", target: "/site.js",
			header: http.Header{"Accept-Encoding": {"gzip, br"}, "Range": {"bytes=0-3"}}, status: 206, wantBody: "body"},
		{name: "image", target: "/logo.png", header: http.Header{"Accept-Encoding": {"gzip, br"}}, status: 200, wantBody: css},
		{name: "tiny", target: "/tiny.css", header: http.Header{"Accept-Encoding": {"gzip, br"}}, status: 200, wantBody: "a{}",
			wantHdrs: map[string]string{"Content-Length": "3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r := httptest.NewRequest(method, "http://example.test"+tt.target, nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d; want %d", w.Code, tt.status)
			}
			enc := w.Header().Get("Content-Encoding")
			wantEnc := tt.wantEnc
			if wantEnc == "gzip-raw" {
				wantEnc = "gzip"
				if w.Body.String() != tt.wantBody {
					t.Errorf("body %q; want the sibling's %q", w.Body.String(), tt.wantBody)
				}
			} else if got := decode(t, enc, w.Body.Bytes()); got != tt.wantBody {
				t.Errorf("decoded body: %d bytes; want %d", len(got), len(tt.wantBody))
			}
			if enc != wantEnc {
				t.Errorf("Content-Encoding %q; want %q", enc, wantEnc)
			}
			for k, v := range tt.wantHdrs {
				if got := strings.Join(w.Header().Values(k), ", "); got != v {
					t.Errorf("%s: %q; want %q", k, got, v)
				}
			}
		})
	}
}

// TestCompressDisabled: DisableCompression sends everything as it is.
func TestCompressDisabled(t *testing.T) {
	css := strings.Repeat("body{color:red}\n", 1024)
	dir := newDeploy(t, map[string]string{"app.css": css}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	r := httptest.NewRequest("GET", "http://example.test/app.css", nil)
	r.Header.Set("Accept-Encoding", "gzip, br")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "" || w.Body.String() != css {
		t.Fatalf("got %d Content-Encoding %q, %d bytes; want 200, none, %d bytes",
			w.Code, w.Header().Get("Content-Encoding"), w.Body.Len(), len(css))
	}
}

// TestCompressStreams: with compression on, a stream still arrives piece by
// piece. Event streams and X-Accel-Buffering: no are never compressed (nor
// held back); a compressed response's flushes pass through the encoder.
// Each response writes a first part, then waits for the test's gate: the
// test can only open it once it has read (and decoded) that part.
func TestCompressStreams(t *testing.T) {
	first := strings.Repeat("<p>first part</p>\n", 256) // 4.5 KiB: over the minimum
	responses := map[string]string{
		"sse":        "Content-Type: text/event-stream\r\n\r\n",
		"unbuffered": "Content-Type: text/html\r\nX-Accel-Buffering: no\r\n\r\n",
		"html":       "Content-Type: text/html\r\n\r\n",
	}
	firsts := map[string]string{"sse": "data: one\n\n", "unbuffered": "<p>tiny</p>\n", "html": first}
	var gates sync.Map // request id -> chan struct{}
	ts, _ := newFakeSite(t, map[string]string{"index.php": "<?php"}, Options{},
		func(req *fcgitest.Request, w io.Writer) error {
			kind := req.Params["QUERY_STRING"]
			io.WriteString(w, responses[kind]+firsts[kind])
			gate, _ := gates.Load(req.Params["HTTP_X_REQUEST_ID"])
			select {
			case <-gate.(chan struct{}):
			case <-time.After(5 * time.Second):
				io.WriteString(w, "gate never opened\n")
				return nil
			}
			_, err := io.WriteString(w, "the rest\n")
			return err
		})

	for _, tt := range []struct {
		kind, ae, wantEnc string
	}{
		{"sse", "gzip, br", ""},
		{"unbuffered", "gzip, br", ""},
		{"html", "gzip", "gzip"},
		{"html", "br", "br"},
	} {
		t.Run(tt.kind+"/"+tt.ae, func(t *testing.T) {
			gate := make(chan struct{})
			gates.Store(t.Name(), gate)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			defer time.AfterFunc(3*time.Second, cancel).Stop() // a held part fails the read, not the gate
			req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/index.php?"+tt.kind, nil)
			req.Header.Set("Accept-Encoding", tt.ae)
			req.Header.Set("X-Request-Id", t.Name())
			resp, err := identityClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if enc := resp.Header.Get("Content-Encoding"); enc != tt.wantEnc {
				t.Fatalf("Content-Encoding %q; want %q", enc, tt.wantEnc)
			}
			var body io.Reader = resp.Body
			switch tt.wantEnc {
			case "gzip":
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			case "br":
				body = brotli.NewReader(resp.Body)
			}
			br := bufio.NewReader(body)
			want := firsts[tt.kind]
			got := make([]byte, len(want))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
				t.Fatalf("first part: %q, %v; want %q", got, err, want)
			}
			close(gate) // the first part arrived while the script still waits
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "the rest\n" {
				t.Fatalf("rest: %q, %v", rest, err)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	for _, tt := range []struct{ give, want string }{
		{"", ""},
		{"gzip", "gzip"},
		{"GZIP", "gzip"},
		{"x-gzip", "gzip"},
		{"deflate", ""},
		{"gzip, deflate, br", "br"},
		{"br;q=0.9, gzip", "gzip"},
		{"br;q=1.0, gzip;q=1.0", "br"},
		{"gzip;q=0, br;q=0", ""},
		{"gzip; q=0.5", "gzip"},
		{"gzip;q=bogus", ""},
		{"*", "br"},
		{"*;q=0", ""},
		{"gzip, *;q=0", "gzip"},
		{"identity;q=1, *;q=0", ""},
		{" br ; q=0.1 , gzip ; q=0.2 ", "gzip"},
	} {
		if got := negotiate(tt.give); got != tt.want {
			t.Errorf("negotiate(%q) = %q; want %q", tt.give, got, tt.want)
		}
	}
}

func TestCompressibleType(t *testing.T) {
	for give, want := range map[string]bool{
		"text/html; charset=UTF-8":      true,
		"TEXT/CSS":                      true,
		"application/json":              true,
		"application/ld+json":           true,
		"application/javascript":        true,
		"image/svg+xml":                 true,
		"application/atom+xml":          true,
		"application/wasm":              true,
		"text/event-stream":             false,
		"image/png":                     false,
		"application/octet-stream":      false,
		"font/woff2":                    false,
		"application/zip":               false,
		"":                              false,
		"application/json;charset=utf8": true,
	} {
		if got := compressibleType(give); got != want {
			t.Errorf("compressibleType(%q) = %v; want %v", give, got, want)
		}
	}
}
