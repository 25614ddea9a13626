package proxy

import (
	"fmt"
	"strings"
)

// The requests of TestNginxParity (nginx_parity_test.go) that compare what
// PHP sees, the deploy they run against, and their known differences.

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
