package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/nginxtest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// TestNginxParityH2 is TestNginxParity (nginx_parity_test.go) over HTTP/2
// with prior knowledge (h2c): nginx runs the same server block with
// `listen ... http2`, realroot's Handler is served as `realroot serve --h2c`
// serves it (h2cServer), and Go's client speaks only unencrypted HTTP/2 to
// both, so each front parses real h2 frames (HPACK, :authority, split
// cookie fields). What PHP sees is compared as TestNginxParity compares it
// (parityCompare, with the same normalizing and parityGlobalDiffs); every
// difference is listed, exactly, in its case.
//
// Without nginx's HTTP/2 module (--with-http_v2_module) the test skips,
// but fails under CI=true: Debian's nginx, which scripts/deps.sh
// installs, always has it (nginx-light included).
func TestNginxParityH2(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx and php-fpm")
	}
	nginxtest.Require(t)
	if !nginxtest.HasModule("v2") {
		const msg = "nginx was built without --with-http_v2_module: no h2c to compare with"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: Debian's nginx has it; not skipping)")
		}
		t.Skip(msg)
	}

	dir := newDeploy(t, paritySite, "r1")
	parityTouch(t, dir)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	docroot := filepath.Join(dir, "current", "public")

	rs := newReleases(t, docroot)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := New(rs, &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second},
		Options{FrontController: "/index.php"})
	rrAddr := h2cServer(t, h)
	root := rs.Current().Root

	tmpl := strings.Replace(parityNginxConf, "listen 127.0.0.1:{{port}};", "listen 127.0.0.1:{{port}} http2;", 1)
	if tmpl == parityNginxConf {
		t.Fatal("parityNginxConf has no `listen 127.0.0.1:{{port}};` to add http2 to")
	}
	conf, _ := parityNginxConfig(tmpl, docroot, fpm.Socket, "")
	ngAddr := nginxtest.Start(t, nginxtest.Options{HTTP: conf}).Addr

	// One client per front: requests share its connection, and so its
	// HPACK dynamic table, as a browser's would.
	ngClient, rrClient := h2cClient(t), h2cClient(t)
	seenGlobal := map[string]bool{}
	for _, c := range parityH2Cases {
		t.Run(c.name, func(t *testing.T) {
			if c.skip != "" {
				t.Skip(c.skip)
			}
			c.target = parityVars.Replace(c.target)
			ng := parityDoH2(t, ngClient, ngAddr, c)
			re := parityDoH2(t, rrClient, rrAddr, c)
			norm := func(s string) string {
				s = strings.ReplaceAll(s, root, "$ROOT")
				return strings.ReplaceAll(s, dir, "$DEPLOY")
			}
			ng, re = ng.normalize(c.parityCase, norm), re.normalize(c.parityCase, norm)
			parityExpect(t, c.parityCase, parityCompare(ng, re), ng, re, seenGlobal, norm)
		})
	}
	parityExpectGlobals(t, seenGlobal)
}

// parityH2Case is a parityCase sent over h2c. Its header lines become
// header fields (Go's client writes names in lower case, and a Cookie
// field per cookie); a Host line is not sent as a field (Go's client
// drops it): authority is the :authority instead, "" for the front's
// host:port.
type parityH2Case struct {
	parityCase
	authority string
	skip      string // why the case cannot be sent: it is skipped
}

var parityH2Cases = []parityH2Case{
	{parityCase: parityCase{name: "hello", target: "/hello.php"}},
	{parityCase: parityCase{name: "hello query", target: "/hello.php?a=1&b=%20x"}},
	{parityCase: parityCase{name: "path info", target: "/hello.php/extra/path",
		diffs: parityPathInfo("/extra/path")}},
	{parityCase: parityCase{name: "front controller", target: "/app/route?id=1"}},
	{parityCase: parityCase{name: "dir with index", target: "/sub/"}},
	{parityCase: parityCase{name: "head php", target: "/hello.php", meth: "HEAD"}},
	{parityCase: parityCase{name: "post form", target: "/hello.php", meth: "POST",
		header: []string{"Content-Type: application/x-www-form-urlencoded"}, body: "name=real+root&x=1"}},
	{parityCase: parityCase{name: "post front controller", target: "/app/route", meth: "POST",
		header: []string{"Content-Type: text/plain"}, body: "hi"}},
	// Two cookie fields: RFC 9113 §8.2.3 has them joined with "; ".
	{parityCase: parityCase{name: "two cookie fields", target: "/hello.php",
		header: []string{"Cookie: a=1", "Cookie: b=2"}}},
	{parityCase: parityCase{name: "custom header", target: "/hello.php", header: []string{"X-Custom-Header: v"}}},
	// As over HTTP/1.1: nginx 1.22 sends a param per field, php-fpm
	// keeps the last; realroot joins them, as nginx >= 1.23 does.
	{parityCase: parityCase{name: "repeated header", target: "/hello.php", header: []string{"X-Dup: a", "X-Dup: b"},
		diffs: []string{`HTTP_X_DUP: nginx "b"; realroot "a, b"`}}},
	// nginx makes its Host of :authority, and Debian's HTTP_HOST $host
	// lower-cases it and drops the port; realroot sends it as it came.
	// SERVER_NAME: nginx's server_name ""; realroot's, the host.
	{parityCase: parityCase{name: "authority other port", target: "/hello.php", diffs: []string{
		`HTTP_HOST: nginx "example.com"; realroot "example.com:8443"`,
		`SERVER_NAME: nginx ""; realroot "example.com"`,
	}}, authority: "example.com:8443"},
	{parityCase: parityCase{name: "authority upper case", target: "/hello.php", diffs: []string{
		`HTTP_HOST: nginx "example.com"; realroot "Example.COM"`,
		`SERVER_NAME: nginx ""; realroot "Example.COM"`,
	}}, authority: "Example.COM"},
	// RFC 9113 §8.3.1: a server SHOULD treat a host field that differs
	// from :authority as malformed.
	{parityCase: parityCase{name: "authority and host", target: "/hello.php", header: []string{"Host: other.test"}},
		skip: "Go's HTTP/2 client sends no host field beside :authority (it drops Request.Header's Host)"},
	// An 8 KiB value: HPACK Huffman-codes "a" (5 bits: 5 KiB on the
	// wire); "~" it sends as is (13 bits), 8 KiB. Over HTTP/1.1 nginx
	// answers a line over 8 KiB with 400 (large_client_header_buffers).
	{parityCase: parityCase{name: "large header", target: "/hello.php",
		header: []string{"X-Large: " + strings.Repeat("a", 8<<10)}}},
	{parityCase: parityCase{name: "large header raw", target: "/hello.php",
		header: []string{"X-Large: " + strings.Repeat("~", 8<<10)}}},
	// Not full (parityCompareHTTP): status, Content-Type and what answered.
	{parityCase: parityCase{name: "static", target: "/static.txt", diffs: []string{parityCharset("text/plain")}}},
	{parityCase: parityCase{name: "missing script", target: "/missing.php"}}, // 404 both
}

// h2cServer serves h on a free port of 127.0.0.1 the way cmd/realroot's
// serve does with --h2c (serve.go's http.Server, its protocols set by
// frontend.configure: HTTP/1.1 and unencrypted HTTP/2, prior knowledge
// only) with conf's default timeouts, and returns its address.
func h2cServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 60 * time.Second,
		IdleTimeout:       75 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs.Protocols = p
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return ln.Addr().String()
}

// h2cClient speaks only HTTP/2 with prior knowledge, follows no redirect
// and asks for no compression (as parityDo sends no Accept-Encoding).
func h2cClient(t *testing.T) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       5 * time.Second,
	}
}

// parityDoH2 sends c to addr over client (h2c) and reduces the answer as
// parityDo does.
func parityDoH2(t *testing.T, client *http.Client, addr string, c parityH2Case) parityAnswer {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method(), "http://"+addr+c.target, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.URL.RequestURI(); got != c.target {
		t.Fatalf(":path would be %q, not %q", got, c.target)
	}
	req.Host = addr
	if c.authority != "" {
		req.Host = c.authority
	}
	for _, h := range c.header {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s answered over %s, not HTTP/2", addr, resp.Proto)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", addr, err)
	}
	return parityAnswerOf(t, c.parityCase, port, resp, b, nil)
}
