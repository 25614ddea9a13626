package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// TestNginxParity is a differential test: the same requests go to a real
// nginx and to realroot, both in front of one php-fpm and one deploy
// (releases/r1 behind a current symlink). For each request it compares the
// status, the Location of a redirect, what answered (which PHP script, which
// static file, or an error page) and every $_SERVER key PHP saw. Every
// difference must be listed, exactly, in the case's diffs or in
// parityGlobalDiffs: a new divergence fails the test, and so does a listed
// one that went away. The cases of parityHTTPCases
// (nginx_parity_static_test.go) are compared at the HTTP level too:
// response headers, framing, body and interim responses, for static files,
// request limits and PHP's own headers (parityCompareHTTP).
//
// nginx runs the server block README.md gives as realroot's nginx
// equivalent ("What it does, in nginx terms"), inside the shape of
// scripts/bench.sh's nginx.conf (temp prefix, pid, error_log and temp paths
// inside it, access_log off, mime.types), with gzip_static on when the
// binary has it (startParityNginx).
func TestNginxParity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx and php-fpm")
	}
	nginxBin := parityNginxBinary(t)

	site := maps.Clone(paritySite)
	maps.Copy(site, parityStaticSite)
	dir := newDeploy(t, site, "r1")
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
	rr := newTestServer(t, h)
	t.Cleanup(rr.Close)
	rrAddr := rr.Listener.Addr().String()
	root := rs.Current().Root

	ngAddr, gzipStatic := startParityNginx(t, nginxBin, docroot, fpm.Socket)

	cases := slices.Clone(parityCases)
	for _, c := range parityHTTPCases {
		c.full = true
		if !gzipStatic && c.noGzipStatic != nil {
			c.diffs = c.noGzipStatic
		}
		cases = append(cases, c)
	}
	seenGlobal := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.target = parityVars.Replace(c.target)
			c.header = slices.Clone(c.header)
			for i, h := range c.header {
				c.header[i] = parityVars.Replace(h)
			}
			ng := parityDo(t, ngAddr, c)
			re := parityDo(t, rrAddr, c)
			norm := func(s string) string {
				s = strings.ReplaceAll(s, root, "$ROOT")
				return strings.ReplaceAll(s, dir, "$DEPLOY")
			}
			ng, re = ng.normalize(c, norm), re.normalize(c, norm)
			got := parityCompare(ng, re)
			if c.full {
				got = append(got, parityCompareHTTP(c, ng, re)...)
			}
			var diffs []string
			for _, d := range got {
				if parityGlobalDiffs[d] && ng.php && re.php {
					seenGlobal[d] = true
					continue
				}
				diffs = append(diffs, d)
			}
			want := slices.Clone(c.diffs)
			slices.Sort(want)
			slices.Sort(diffs)
			for _, d := range diffs {
				if !slices.Contains(want, d) {
					t.Errorf("new divergence from nginx: %s", d)
				}
			}
			for _, d := range want {
				if !slices.Contains(diffs, d) {
					t.Errorf("listed divergence not seen (fixed? update the case): %s", d)
				}
			}
			switch {
			case t.Failed():
				t.Logf("%s %.200s\nnginx:    %s\nrealroot: %s", c.method(), c.target, ng.summary(), re.summary())
			case testing.Verbose():
				t.Logf("%s %.200s: nginx %d %s; realroot %d %s; %d known diffs",
					c.method(), c.target, ng.status, norm(ng.what), re.status, norm(re.what), len(want))
			}
		})
	}
	for d := range parityGlobalDiffs {
		if !seenGlobal[d] {
			t.Errorf("global divergence never seen (fixed? update parityGlobalDiffs): %s", d)
		}
	}
}

// paritySite is the deploy both fronts serve. dump.inc prints, sorted, every
// $_SERVER key with a scalar value, plus __FILE__, $_GET, $_POST and the
// request body; a HEAD response carries the same dump base64 in X-Dump.
var paritySite = map[string]string{
	"public/dump.inc": `<?php
$s = [];
foreach ($_SERVER as $k => $v) {
	if (is_scalar($v)) $s[$k] = (string)$v;
}
ksort($s, SORT_STRING);
$o = "PHPDUMP\n";
foreach ($s as $k => $v) $o .= $k . '=' . addcslashes($v, "\0..\37\\") . "\n";
$o .= '__FILE__=' . $file . "\n";
$o .= '__GET=' . json_encode($_GET) . "\n";
$o .= '__POST=' . json_encode($_POST) . "\n";
$o .= '__INPUT=' . addcslashes(file_get_contents('php://input'), "\0..\37\\") . "\n";
header('Content-Type: text/plain');
if ($_SERVER['REQUEST_METHOD'] === 'HEAD') header('X-Dump: ' . base64_encode($o));
echo $o;
`,
	"public/index.php":          `<?php $file = __FILE__; include __DIR__ . '/dump.inc';`,
	"public/hello.php":          `<?php $file = __FILE__; include __DIR__ . '/dump.inc';`,
	"public/.hidden.php":        `<?php $file = __FILE__; include __DIR__ . '/dump.inc';`,
	"public/a b.php":            `<?php $file = __FILE__; include __DIR__ . '/dump.inc';`,
	"public/Upper.PHP":          `<?php $file = __FILE__; include __DIR__ . '/dump.inc';`,
	"public/sub/index.php":      `<?php $file = __FILE__; include __DIR__ . '/../dump.inc';`,
	"public/dir.php/index.php":  `<?php $file = __FILE__; include __DIR__ . '/../dump.inc';`,
	"public/htmlsub/index.html": "STATIC htmlsub/index.html\n",
	"public/empty/.keep":        "",
	"public/static.txt":         "STATIC static.txt\n",
	"public/.hidden.txt":        "STATIC .hidden.txt\n",
	"public/.well-known/x.txt":  "STATIC .well-known/x.txt\n",
	"public/style.css":          "STATIC style.css\n",
}

// parityCase is one request sent to both fronts, and how their answers are
// known to differ.
type parityCase struct {
	name   string
	target string   // request target, sent as is
	meth   string   // "" means GET
	proto  string   // "" means HTTP/1.1
	header []string // raw header lines; Host: 127.0.0.1:PORT is added unless one is given
	body   string   // sent with Content-Length unless a Transfer-Encoding header is given
	diffs  []string // every expected difference, as parityCompare (or parityCompareHTTP) writes it

	// For parityHTTPCases (nginx_parity_static_test.go), compared by
	// parityCompareHTTP too:
	full         bool     // set for each of parityHTTPCases
	multipart    bool     // a multipart range answer: status and type only
	freeFraming  bool     // PHP sends no length: Content-Length or chunked is each front's choice
	noGzipStatic []string // diffs instead, when nginx lacks gzip_static
}

func (c parityCase) method() string {
	if c.meth == "" {
		return "GET"
	}
	return c.meth
}

func (c parityCase) sendsHeader(name string) bool {
	for _, h := range c.header {
		if k, _, _ := strings.Cut(h, ":"); strings.EqualFold(strings.TrimSpace(k), name) {
			return true
		}
	}
	return false
}

// parityGlobalDiffs are accepted in every case where both fronts ran PHP;
// each must show up at least once.
var parityGlobalDiffs = map[string]bool{
	// Debian's fastcgi_params sets HTTP_HOST $host (its workaround for
	// absolute-form targets), which drops the port; realroot sends the Host
	// header as it came.
	`HTTP_HOST: nginx "127.0.0.1"; realroot "127.0.0.1:PORT"`: true,
	// fastcgi_params sends REMOTE_USER $remote_user, empty without auth;
	// realroot does no authentication and sends none (RFC 3875: only for
	// an authenticated user).
	`REMOTE_USER: nginx ""; realroot <unset>`: true,
	// No server_name in the block: nginx's $server_name is ""; realroot
	// uses the Host without its port (docs/migrating.md).
	`SERVER_NAME: nginx ""; realroot "127.0.0.1"`: true,
}

// parityPathInfo lists what differs for a script with PATH_INFO: realroot
// sends PATH_TRANSLATED (root + PATH_INFO, RFC 3875) and nginx's
// fastcgi_params has none.
func parityPathInfo(pathInfo string) []string {
	return []string{fmt.Sprintf(`PATH_TRANSLATED: nginx <unset>; realroot "$ROOT%s"`, pathInfo)}
}

// parityCharset: nginx's mime.types gives a bare text type (no charset
// directive); realroot's Go mime table adds "; charset=utf-8".
func parityCharset(ct string) string {
	return fmt.Sprintf(`content-type: nginx %q; realroot "%s; charset=utf-8"`, ct, ct)
}

var parityCases = []parityCase{
	{name: "root", target: "/"},
	{name: "index.php", target: "/index.php"},
	{name: "hello", target: "/hello.php"},
	{name: "hello query", target: "/hello.php?a=1&b=%20x"},
	{name: "path info", target: "/hello.php/extra/path",
		diffs: parityPathInfo("/extra/path")},
	{name: "path info slash", target: "/hello.php/",
		diffs: parityPathInfo("/")},
	{name: "index.php path info", target: "/index.php/x?y=1",
		diffs: parityPathInfo("/x")},
	{name: "path info escaped", target: "/hello.php/a%20b/%2e%2e/c", // both clean it to /hello.php/c
		diffs: parityPathInfo("/c")},
	{name: "encoded slash", target: "/hello.php%2fx", // both decode %2f: /hello.php + /x
		diffs: parityPathInfo("/x")},
	{name: "dir with index", target: "/sub/"},
	{name: "dir with index query", target: "/sub/?q=1"},
	{name: "dir index direct", target: "/sub/index.php"},
	// nginx's 301 has an absolute Location built from the Host
	// (absolute_redirect on); realroot's is relative.
	{name: "dir no slash", target: "/sub",
		diffs: []string{`location: nginx "http://127.0.0.1:PORT/sub/"; realroot "/sub/"`}},
	{name: "dir no slash query", target: "/sub?q=1&r=%20",
		diffs: []string{`location: nginx "http://127.0.0.1:PORT/sub/?q=1&r=%20"; realroot "/sub/?q=1&r=%20"`}},
	{name: "html index", target: "/htmlsub/", diffs: []string{parityCharset("text/html")}},
	{name: "dir without index", target: "/empty/"}, // 403 both
	{name: "missing dir", target: "/nodir/"},
	{name: "front controller", target: "/app/route?id=1"},
	{name: "front controller slash", target: "/app/route/"},
	{name: "front controller no query", target: "/app/route"},
	{name: "static", target: "/static.txt", diffs: []string{parityCharset("text/plain")}},
	{name: "static path info", target: "/static.txt/x"}, // ENOTDIR: front controller both
	{name: "static query", target: "/style.css?v=2", diffs: []string{parityCharset("text/css")}},
	{name: "missing script", target: "/missing.php"},
	{name: "missing script path info", target: "/missing.php/x"},
	{name: "script below a file", target: "/static.txt/x.php"},
	{name: "missing script in dir", target: "/app/x.php"},
	{name: "dot dot", target: "/up/../hello.php"},
	{name: "dot dot above root", target: "/../hello.php"},            // 400 both
	{name: "dot dot above root later", target: "/a/../../hello.php"}, // 400 both
	{name: "encoded name", target: "/%68ello.php"},
	{name: "encoded dot", target: "/hello%2ephp"},
	{name: "double slash", target: "//hello.php"},
	{name: "double slash inside", target: "/sub//index.php"},
	{name: "hidden script", target: "/.hidden.php"}, // 404 both
	{name: "hidden static", target: "/.hidden.txt"}, // 404 both
	{name: "well-known", target: "/.well-known/x.txt", diffs: []string{parityCharset("text/plain")}},
	{name: "dir named .php", target: "/dir.php/"},         // 404 both: the script is a directory
	{name: "dir named .php no slash", target: "/dir.php"}, // 404 both
	{name: "space in name", target: "/a%20b.php"},
	// nginx's `~` location is case-sensitive: /Upper.PHP is a static file
	// and nginx sends the PHP source (application/octet-stream); realroot
	// matches .php case-insensitively and sends it to php-fpm, whose
	// security.limit_extensions (.php) refuses it: 403 "Access denied.".
	{name: "upper case extension", target: "/Upper.PHP", diffs: []string{
		`status: nginx 200; realroot 403`,
		`answer: nginx php source; realroot other`,
	}},
	// No such file: nginx falls to the front controller (not a .php
	// location); realroot takes it for a missing script: 404.
	{name: "upper case missing", target: "/HELLO.PHP", diffs: []string{
		`status: nginx 200; realroot 404`,
		`answer: nginx php $ROOT/index.php; realroot other`,
	}},
	{name: "php suffix not ext", target: "/hello.phpx"},
	{name: "semicolon", target: "/hello.php;x"},
	// A fragment is not part of a request target; both end it at "#".
	{name: "fragment", target: "/hello.php#frag"},
	{name: "fragment in query", target: "/hello.php?a=1#frag"},
	{name: "fragment front controller", target: "/app/x#frag?y=1"},
	{name: "fragment empty", target: "/hello.php#"},
	{name: "encoded hash", target: "/a%23b.php"},
	{name: "query brackets", target: "/index.php?x[]=1"},
	{name: "query nul", target: "/hello.php?a=%00b"},
	{name: "query empty", target: "/hello.php?"},
	{name: "utf-8 query", target: "/hello.php?q=\xc3\xa9"},
	{name: "path nul", target: "/hello%00.php"},   // 400 both
	{name: "bad escape", target: "/hello%zz.php"}, // 400 both
	{name: "head php", target: "/hello.php", meth: "HEAD"},
	{name: "head static", target: "/static.txt", meth: "HEAD", diffs: []string{parityCharset("text/plain")}},
	{name: "post form", target: "/hello.php", meth: "POST",
		header: []string{"Content-Type: application/x-www-form-urlencoded"}, body: "name=real+root&x=1"},
	// Both give CONTENT_LENGTH 7 after reading the body; nginx also
	// passes the Transfer-Encoding header, realroot (Go) does not.
	{name: "post chunked", target: "/hello.php", meth: "POST",
		header: []string{"Content-Type: application/x-www-form-urlencoded", "Transfer-Encoding: chunked"},
		body:   "7\r\nname=ab\r\n0\r\n\r\n",
		diffs:  []string{`HTTP_TRANSFER_ENCODING: nginx "chunked"; realroot <unset>`}},
	{name: "post front controller", target: "/app/route", meth: "POST",
		header: []string{"Content-Type: text/plain"}, body: "hi"},
	{name: "post static", target: "/static.txt", meth: "POST", body: "x"}, // 405 both
	{name: "delete php", target: "/hello.php", meth: "DELETE"},
	{name: "options php", target: "/hello.php", meth: "OPTIONS"},
	{name: "trace php", target: "/hello.php", meth: "TRACE"},     // 405 both
	{name: "trace front", target: "/app/route", meth: "TRACE"},   // 405 both
	{name: "trace static", target: "/static.txt", meth: "TRACE"}, // 405 both
	{name: "custom header", target: "/hello.php", header: []string{"X-Custom-Header: v"}},
	// No HTTP_PROXY either way as PHP sees it: php-fpm itself drops it
	// (httpoxy), so whether nginx forwards it is not visible here.
	{name: "httpoxy", target: "/hello.php", header: []string{"Proxy: x"}},
	{name: "underscore header", target: "/hello.php", header: []string{"X_Under: v"}}, // dropped by both
	{name: "dot header", target: "/hello.php", header: []string{"X.Dot: v"}},          // dropped by both
	{name: "empty header", target: "/hello.php", header: []string{"X-Empty:"}},
	{name: "lower-case header", target: "/hello.php", header: []string{"x-lower: v"}},
	// nginx 1.22 sends one param per header line and php-fpm keeps the
	// last; realroot joins them (", ", cookies "; "), as nginx >= 1.23 does.
	{name: "repeated header", target: "/hello.php", header: []string{"X-Dup: a", "X-Dup: b"},
		diffs: []string{`HTTP_X_DUP: nginx "b"; realroot "a, b"`}},
	{name: "repeated cookie", target: "/hello.php", header: []string{"Cookie: a=1", "Cookie: b=2"},
		diffs: []string{`HTTP_COOKIE: nginx "b=2"; realroot "a=1; b=2"`}},
	{name: "client request id", target: "/hello.php", header: []string{"X-Request-Id: abc"}},
	// HTTP_HOST: Debian's `fastcgi_param HTTP_HOST $host` lower-cases
	// it; realroot sends the header as it came. SERVER_NAME: nginx's
	// $server_name is "" without server_name; realroot's is the Host.
	{name: "host case", target: "/hello.php", header: []string{"Host: Example.COM"}, diffs: []string{
		`HTTP_HOST: nginx "example.com"; realroot "Example.COM"`,
		`SERVER_NAME: nginx ""; realroot "Example.COM"`,
	}},
	// Both take the host of an absolute-form target over the Host header.
	{name: "absolute form", target: "http://other.test/hello.php?q=1", header: []string{"Host: example.com"},
		diffs: []string{`SERVER_NAME: nginx ""; realroot "other.test"`}},
	// No Host: nginx sends HTTP_HOST $host, empty; realroot none.
	{name: "http/1.0 no host", target: "/hello.php", proto: "HTTP/1.0", header: []string{"Host:"},
		diffs: []string{`HTTP_HOST: nginx ""; realroot <unset>`}},
	// fastcgi_params' REMOTE_USER $remote_user is the Basic user even
	// without auth_basic, unchecked: an app trusting REMOTE_USER (set by
	// a server that authenticated) would take any client's word for it.
	// realroot sends none; PHP still sets PHP_AUTH_USER from the header.
	{name: "basic auth", target: "/hello.php", header: []string{"Authorization: Basic dTpw"}, // u:p
		diffs: []string{`REMOTE_USER: nginx "u"; realroot <unset>`}},
}

// parityAnswer is one front's answer, reduced to what is compared.
type parityAnswer struct {
	status   int
	location string
	what     string            // "php FILE", "static NAME", "php source", "head" or "other"
	ctype    string            // Content-Type, compared unless what is "other"
	php      bool              // PHP answered (params are its $_SERVER and extras)
	params   map[string]string // PHP's dump
	port     string
	raw      string // the body as sent
	header   http.Header
	framing  string // "length", "chunked" or "none" (no length: to the close, or no body)
	interim  []int  // 1xx statuses before the answer
}

func (a parityAnswer) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s (%s)", a.status, a.what, a.ctype)
	if a.location != "" {
		fmt.Fprintf(&b, " Location: %s", a.location)
	}
	fmt.Fprintf(&b, " framing %s, interim %v", a.framing, a.interim)
	for _, k := range slices.Sorted(maps.Keys(a.header)) {
		if k != "X-Dump" {
			fmt.Fprintf(&b, "\n    %s: %.200q", k, a.header[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(a.params)) {
		fmt.Fprintf(&b, "\n    %s=%.200s", k, a.params[k])
	}
	if !a.php && a.what == "other" {
		fmt.Fprintf(&b, "\n    body %.300q", a.raw)
	}
	return b.String()
}

// normalize rewrites what legitimately differs between two servers.
func (a parityAnswer) normalize(c parityCase, norm func(string) string) parityAnswer {
	a.location = strings.ReplaceAll(a.location, ":"+a.port, ":PORT")
	hd := make(http.Header, len(a.header))
	for k, vs := range a.header {
		for _, v := range vs {
			hd[k] = append(hd[k], strings.ReplaceAll(v, ":"+a.port, ":PORT"))
		}
	}
	a.header = hd
	a.what = norm(a.what)
	p := make(map[string]string, len(a.params))
	for k, v := range a.params {
		switch k {
		case "SERVER_SOFTWARE", // nginx/1.22.1 vs realroot: the product's name
			"REMOTE_PORT",                        // the client's ephemeral port
			"REQUEST_TIME", "REQUEST_TIME_FLOAT": // when PHP started the request
			continue
		case "SERVER_PORT": // each front listens on its own port
			v = strings.ReplaceAll(v, a.port, "PORT")
		case "HTTP_HOST": // the Host header names the front's own port
			v = strings.ReplaceAll(v, ":"+a.port, ":PORT")
		case "HTTP_X_REQUEST_ID":
			// realroot makes an id when the client sent none (nginx
			// passes the header only); a client's id must match.
			if !c.sendsHeader("X-Request-Id") {
				continue
			}
		}
		p[k] = norm(v)
	}
	a.params = p
	return a
}

// parityCompare lists the differences between nginx's answer ng and
// realroot's re.
func parityCompare(ng, re parityAnswer) []string {
	var d []string
	diff := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s: nginx %s; realroot %s", field, a, b))
		}
	}
	diff("status", fmt.Sprint(ng.status), fmt.Sprint(re.status))
	diff("location", fmt.Sprintf("%q", ng.location), fmt.Sprintf("%q", re.location))
	diff("answer", ng.what, re.what)
	if ng.what != "other" && re.what != "other" {
		diff("content-type", fmt.Sprintf("%q", ng.ctype), fmt.Sprintf("%q", re.ctype))
	}
	if ng.php && re.php {
		keys := slices.Collect(maps.Keys(ng.params))
		for k := range re.params {
			if _, ok := ng.params[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			a, aok := ng.params[k]
			b, bok := re.params[k]
			qa, qb := "<unset>", "<unset>"
			if aok {
				qa = fmt.Sprintf("%q", a)
			}
			if bok {
				qb = fmt.Sprintf("%q", b)
			}
			diff(k, qa, qb)
		}
	}
	return d
}

// parityDo sends c to addr on a new connection, as raw HTTP/1.x.
func parityDo(t *testing.T, addr string, c parityCase) parityAnswer {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	proto := c.proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", c.method(), strings.ReplaceAll(c.target, "{{addr}}", addr), proto)
	if !c.sendsHeader("Host") {
		fmt.Fprintf(&b, "Host: %s\r\n", addr)
	}
	for _, h := range c.header {
		if h == "Host:" { // no Host header at all
			continue
		}
		fmt.Fprintf(&b, "%s\r\n", h)
	}
	if c.body != "" && !c.sendsHeader("Transfer-Encoding") {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(c.body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(c.body)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Written while the answer is read: a front may answer (413) before
	// it read the request, and stop reading; a write error then is no
	// failure, only a missing answer is.
	written := make(chan error, 1)
	go func() { _, err := io.WriteString(conn, b.String()); written <- err }()
	defer func() { conn.Close(); <-written }()
	br := bufio.NewReader(conn)
	var interim []int
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(br, &http.Request{Method: c.method()})
		if err != nil {
			t.Fatalf("%s: reading response: %v", addr, err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode < 100 {
			break
		}
		interim = append(interim, resp.StatusCode)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", addr, err)
	}
	a := parityAnswer{status: resp.StatusCode, location: resp.Header.Get("Location"), port: port, raw: string(body),
		ctype: resp.Header.Get("Content-Type"), header: resp.Header, interim: interim, framing: "none"}
	switch {
	case slices.Contains(resp.TransferEncoding, "chunked"):
		a.framing = "chunked"
	case resp.Header.Get("Content-Length") != "":
		a.framing = "length"
	}
	if x := resp.Header.Get("X-Dump"); x != "" && len(body) == 0 {
		dec, err := base64.StdEncoding.DecodeString(x)
		if err != nil {
			t.Fatalf("X-Dump: %v", err)
		}
		body = dec
	}
	switch {
	case bytes.HasPrefix(body, []byte("PHPDUMP\n")):
		a.php, a.what = true, "php"
		a.params = map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(string(body[len("PHPDUMP\n"):]), "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			a.params[k] = v
		}
		a.what = "php " + a.params["__FILE__"]
	case bytes.HasPrefix(body, []byte("STATIC ")):
		a.what = "static " + strings.TrimSpace(string(body[len("STATIC "):]))
	case bytes.HasPrefix(body, []byte("<?php")):
		a.what = "php source"
	case bytes.HasPrefix(body, []byte("PHPOUT ")):
		a.what = "php output " + strings.TrimSpace(string(body[len("PHPOUT "):]))
	case c.method() == "HEAD" && resp.StatusCode == 200:
		a.what = "head, Content-Length " + resp.Header.Get("Content-Length")
	case len(body) == 0 && resp.StatusCode < 300:
		a.what = "empty"
	default:
		a.what = "other"
	}
	return a
}

// parityNginxBinary finds nginx; without it the test skips, or fails under
// CI=true (as internal/phpfpmtest does for php-fpm).
func parityNginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx"
	}
	err := errors.New("nginx not found: run scripts/deps.sh")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: not skipping)", err)
	}
	t.Skip(err)
	return ""
}

// parityNginxConf is README.md's server block ("What it does, in nginx
// terms"), verbatim but for the paths and with Debian's fastcgi_params, in
// scripts/bench.sh's nginx.conf shape (one worker, daemon off, everything in
// the temp prefix; user root when run as root), plus gzip_static on when the
// binary has it (startParityNginx).
const parityNginxConf = `{{user}}worker_processes 1;
daemon off;
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log warn;
events { worker_connections 64; }
http {
	{{types}}
	default_type application/octet-stream;
	access_log off;
	sendfile on;
	{{gzip_static}}
	client_body_temp_path {{prefix}}/body;
	fastcgi_temp_path {{prefix}}/fastcgi;
	proxy_temp_path {{prefix}}/proxy;
	scgi_temp_path {{prefix}}/scgi;
	uwsgi_temp_path {{prefix}}/uwsgi;
	server {
		listen 127.0.0.1:{{port}};
		root {{root}};
		index index.php index.html;
		location ~ /\.(?!well-known/) { return 404; }
		location / { try_files $uri $uri/ /index.php?$query_string; }
		location ~ [^/]\.php(/|$) {
			fastcgi_split_path_info ^(.+?\.php)(/.*)$;
			try_files $fastcgi_script_name =404;
			set $path_info $fastcgi_path_info;
			include /etc/nginx/fastcgi_params;
			fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
			fastcgi_param DOCUMENT_ROOT   $realpath_root;
			fastcgi_param PATH_INFO       $path_info;
			fastcgi_pass unix:{{sock}};
		}
	}
}
`

// startParityNginx starts nginx serving root through the php-fpm at sock,
// on a free port of 127.0.0.1, and returns its address, and whether it has
// gzip_static (then on: docs/migrating.md maps it to realroot's built-in
// precompressed siblings; Debian's nginx-light may lack the module).
// t.Cleanup stops it.
func startParityNginx(t *testing.T, bin, root, sock string) (addr string, gzipStatic bool) {
	t.Helper()
	prefix := t.TempDir()
	v, _ := exec.Command(bin, "-V").CombinedOutput()
	gzipStatic = bytes.Contains(v, []byte("--with-http_gzip_static_module"))
	gz := "# no gzip_static module"
	if gzipStatic {
		gz = "gzip_static on;"
	}
	types := "types { text/html html; text/css css; text/plain txt; }"
	if _, err := os.Stat("/etc/nginx/mime.types"); err == nil {
		types = "include /etc/nginx/mime.types;"
	}
	user := ""
	if os.Geteuid() == 0 {
		// nginx's workers would run as nobody, who cannot enter the
		// test's 0700 temp dirs.
		user = "user root;\n"
	}
	var lastErr string
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		_, port, _ := net.SplitHostPort(addr)
		l.Close()
		conf := strings.NewReplacer("{{user}}", user, "{{prefix}}", prefix, "{{types}}", types,
			"{{port}}", port, "{{root}}", root, "{{sock}}", sock, "{{gzip_static}}", gz).Replace(parityNginxConf)
		confPath := filepath.Join(prefix, "nginx.conf")
		errLog := filepath.Join(prefix, "error.log")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(errLog)
		var out phpfpmtest.Buffer
		cmd := exec.Command(bin, "-p", prefix, "-c", confPath, "-e", errLog)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		ready := parityWaitPort(addr, exited)
		if ready {
			// nginx's master stops its workers before it exits.
			t.Cleanup(stop)
			return addr, gzipStatic
		}
		stop()
		log, _ := os.ReadFile(errLog)
		lastErr = string(log) + out.String()
		if !strings.Contains(lastErr, "in use") {
			break
		}
	}
	t.Fatalf("nginx did not start:\n%s", lastErr)
	return "", false
}

// parityWaitPort waits up to 5s for addr to accept a connection; false when
// it does not, or the process exits first.
func parityWaitPort(addr string, exited <-chan struct{}) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
