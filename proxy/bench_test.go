package proxy

// Benchmarks of realroot's per-request work, each reporting its allocations.
// The whole-server comparison with nginx is scripts/bench.sh; the figures of
// both are in docs/performance.md. Compare two runs with benchstat:
//
//	go test -run '^$' -bench . -count 10 ./proxy > old.txt
//	go test -run '^$' -bench . -count 10 ./proxy > new.txt
//	benchstat old.txt new.txt

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// benchSite is scripts/bench.sh's site: a hello-world script, a front
// controller that includes 50 files, and a 1 KiB static file.
var benchSite = func() map[string]string {
	site := map[string]string{
		"public/hello.php":  "<?php\necho \"Hello, world!\\n\";\n",
		"public/static.css": strings.Repeat("body{color:#000}\n", 64)[:1024],
	}
	var front strings.Builder
	front.WriteString("<?php\n")
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&front, "require __DIR__ . '/../lib/Part%02d.php';\n", i)
		site[fmt.Sprintf("lib/Part%02d.php", i)] = fmt.Sprintf(
			"<?php\nfinal class Part%02d {\n\tpublic static function weight(): int { return %d; }\n}\n", i, i)
	}
	front.WriteString("$sum = 0;\n")
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&front, "$sum += Part%02d::weight();\n", i)
	}
	front.WriteString("echo \"front \", $_SERVER[\"REQUEST_URI\"], \" \", $sum, \"\\n\";\n")
	site["public/index.php"] = front.String()
	return site
}()

// newBenchHandler serves benchSite's public/ through upstream (nil: no
// php-fpm) with the command's defaults.
func newBenchHandler(b *testing.B, upstream Upstream) *Handler {
	b.Helper()
	dir := newDeploy(b, benchSite, "A")
	rs := newReleases(b, filepath.Join(dir, "current", "public"))
	return New(rs, upstream, Options{FrontController: "/index.php"})
}

// browserRequest is a GET for target as a browser sends it: 12 headers, a
// peer address and the local address net/http puts in the context.
func browserRequest(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Host = "www.example.test"
	r.RemoteAddr = "192.0.2.10:51234"
	r.Header = http.Header{
		"Accept":                    {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Encoding":           {"gzip, deflate, br"},
		"Accept-Language":           {"en-GB,en;q=0.9,fr;q=0.8"},
		"Cache-Control":             {"no-cache"},
		"Connection":                {"keep-alive"},
		"Cookie":                    {"session=4f2a9c1e8b7d6a5f; theme=dark", "consent=1"},
		"Referer":                   {"https://www.example.test/blog/"},
		"Sec-Fetch-Dest":            {"document"},
		"Sec-Fetch-Mode":            {"navigate"},
		"Upgrade-Insecure-Requests": {"1"},
		"User-Agent":                {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		"X-Custom-Trace":            {"abc123"}, // not among commonParamNames
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
}

// BenchmarkParams measures building a PHP request's FastCGI params: the
// route's (routeParams) and then the request's (the h.params chain).
func BenchmarkParams(b *testing.B) {
	h := newBenchHandler(b, nil)
	r := browserRequest("/app/route?id=1")
	rel := h.releases.Pin()
	defer rel.Unpin()
	x := exchange{start: time.Now(), rel: rel, id: "5f0c3a9e1b2d4c6f"}
	var err error
	if x.route, err = h.route(rel, "/app/route"); err != nil {
		b.Fatal(err)
	}
	req := &gofast.Request{Role: gofast.RoleResponder, Params: make(map[string]string, 48), Raw: r}
	b.ReportAllocs()
	for b.Loop() {
		clear(req.Params)
		h.routeParams(req.Params, r, &x, nil)
		h.params(nil, req)
	}
	b.ReportMetric(float64(len(req.Params)), "params")
}

// BenchmarkRoute measures mapping a cleaned URL path to a route: a static
// file, a script named in the URL, and a path naming nothing (the front
// controller, after a failed stat).
func BenchmarkRoute(b *testing.B) {
	h := newBenchHandler(b, nil)
	rel := h.releases.Pin()
	defer rel.Unpin()
	for _, tt := range []struct {
		name string
		give string
		want kind
	}{
		{name: "static", give: "/static.css", want: kindStatic},
		{name: "script", give: "/hello.php", want: kindPHP},
		{name: "front", give: "/app/route", want: kindFront},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rt, err := h.route(rel, tt.give)
				if err != nil || rt.kind != tt.want {
					b.Fatalf("route(%q) = %v, %v; want %v", tt.give, rt.kind, err, tt.want)
				}
			}
		})
	}
}

// BenchmarkStatic measures ServeHTTP of a 1 KiB file into an
// httptest.ResponseRecorder: as wrk asks (no Accept-Encoding), as a browser
// asks (Accept-Encoding: gzip, deflate, br: two sibling lookups that find
// nothing), and the recorder alone writing the same bytes, whose cost is in
// the other two.
func BenchmarkStatic(b *testing.B) {
	h := newBenchHandler(b, nil)
	plain := httptest.NewRequest(http.MethodGet, "/static.css", nil)
	browser := browserRequest("/static.css")
	for _, tt := range []struct {
		name string
		req  *http.Request
	}{
		{name: "wrk", req: plain},
		{name: "browser", req: browser},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, tt.req)
				if w.Code != http.StatusOK || w.Body.Len() != 1024 {
					b.Fatalf("got %d, %d bytes; want 200, 1024 bytes", w.Code, w.Body.Len())
				}
			}
		})
	}
	b.Run("recorder-only", func(b *testing.B) {
		data := []byte(benchSite["public/static.css"])
		b.ReportAllocs()
		for b.Loop() {
			w := httptest.NewRecorder()
			w.Header().Set("Content-Type", "text/css; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			w.Write(data)
		}
	})
}

// BenchmarkPHP measures whole requests through the handler to a real
// php-fpm (4 workers, OPcache on), one at a time: ns/op is mostly php-fpm's
// and the kernel's; B/op and allocs/op are realroot's alone.
func BenchmarkPHP(b *testing.B) {
	if testing.Short() {
		b.Skip("starts php-fpm: not in -short mode")
	}
	fpm := phpfpmtest.Start(b, phpfpmtest.Options{Workers: 4})
	h := newBenchHandler(b, &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second})
	for _, tt := range []struct {
		name   string
		target string
		want   string
	}{
		{name: "hello", target: "/hello.php", want: "Hello, world!\n"},
		{name: "front", target: "/app/route?id=1", want: "front /app/route?id=1 1275\n"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := browserRequest(tt.target)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK || w.Body.String() != tt.want {
					b.Fatalf("GET %s: got %d %q; want 200 %q", tt.target, w.Code, w.Body.String(), tt.want)
				}
			}
		})
	}
}

// BenchmarkPHPServer is BenchmarkPHP through the HTTP/1.1 server realroot
// runs (proxy/h1; Go's with REALROOT_HTTP1_SERVER=net/http), a wrk-like
// request on one kept loopback connection. Its allocations are the server's
// and handler's plus the client's http.ReadResponse (a constant share): a
// cost in the server, such as a header map copied per response, shows here
// and not in BenchmarkPHP's recorder.
func BenchmarkPHPServer(b *testing.B) {
	if testing.Short() {
		b.Skip("starts php-fpm: not in -short mode")
	}
	fpm := phpfpmtest.Start(b, phpfpmtest.Options{Workers: 4})
	h := newBenchHandler(b, &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second})
	ts := newTestServer(b, h)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for _, tt := range []struct{ name, target, want string }{
		{name: "hello", target: "/hello.php", want: "Hello, world!\n"},
		{name: "front", target: "/app/route?id=1", want: "front /app/route?id=1 1275\n"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			req := []byte("GET " + tt.target + " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
			body := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				body = body[:0]
				for {
					n, err := resp.Body.Read(body[len(body):cap(body)])
					body = body[:len(body)+n]
					if err == io.EOF {
						break
					}
					if err != nil || len(body) == cap(body) {
						b.Fatalf("GET %s: body %q, %v", tt.target, body, err)
					}
				}
				if resp.StatusCode != http.StatusOK || string(body) != tt.want {
					b.Fatalf("GET %s: got %d %q; want 200 %q", tt.target, resp.StatusCode, body, tt.want)
				}
			}
		})
	}
}
