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
	// From a differential review (the cases after "review:" below).
	"public/sub/.well-known/x.txt":       "STATIC sub/.well-known/x.txt\n",
	"public/idxdir/index.php/keep.txt":   "STATIC keep\n",
	"public/idxdir/index.html":           "STATIC idxdir/index.html\n",
	"public/htmldir/index.html/keep.txt": "STATIC keep\n",
	"public/paren(d)/index.html":         "STATIC paren(d)/index.html\n",
}

// paritySymlinks are links made in the release after paritySite's files:
// name -> target.
var paritySymlinks = map[string]string{"public/loop": "loop"}

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

	// review: a differential review against nginx found each of these
	// different, and realroot was changed to match.
	// A last "." or ".." names a directory: its slash stays (RFC 3986
	// §5.2.4); realroot redirected, and gave PATH_INFO "".
	{name: "review: dir dot", target: "/sub/."},
	{name: "review: dir encoded dot", target: "/sub/%2e"},
	{name: "review: dir dot dot", target: "/sub/deeper/.."},
	{name: "review: php dot", target: "/hello.php/.", diffs: parityPathInfo("/")},
	{name: "review: php dot dot", target: "/hello.php/x/..", diffs: parityPathInfo("/")},
	// A name too long or a symlink loop is no file: try_files moves on
	// (realroot answered 403).
	{name: "review: segment over 255 bytes", target: "/" + strings.Repeat("n", 300)},
	{name: "review: cyrillic slug of 260 bytes", target: "/" + strings.Repeat("%D0%B6", 130)},
	{name: "review: path over PATH_MAX", target: strings.Repeat("/a", 2100)},
	{name: "review: symlink loop", target: "/loop"},
	// A declared empty body is CONTENT_LENGTH "0" (realroot sent "").
	{name: "review: post content-length 0", target: "/hello.php", meth: "POST",
		header: []string{"Content-Length: 0", "Content-Type: application/x-www-form-urlencoded"}},
	{name: "review: put content-length 0", target: "/hello.php", meth: "PUT", header: []string{"Content-Length: 0"}},
	{name: "review: get content-length 0", target: "/app/x", header: []string{"Content-Length: 0"}},
	// Absolute form: an empty path is "/"; REQUEST_URI is the target as
	// sent from its path on; no authority, or user info, is a 400.
	// nginx's REQUEST_URI for a query without a path is "?x=1".
	{name: "review: absolute no path", target: "http://other.test",
		diffs: []string{`SERVER_NAME: nginx ""; realroot "other.test"`}},
	{name: "review: absolute no path query", target: "http://other.test?x=1", diffs: []string{
		`REQUEST_URI: nginx "?x=1"; realroot "/?x=1"`, `SERVER_NAME: nginx ""; realroot "other.test"`}},
	{name: "review: absolute raw utf-8", target: "http://other.test/caf\xc3\xa9.php"},
	{name: "review: absolute raw braces", target: "http://other.test/app/{x}|y^",
		diffs: []string{`SERVER_NAME: nginx ""; realroot "other.test"`}},
	{name: "review: absolute fragment", target: "http://other.test/hello.php#x",
		diffs: []string{`SERVER_NAME: nginx ""; realroot "other.test"`}},
	{name: "review: absolute empty host", target: "http:///hello.php"},
	{name: "review: absolute user info", target: "http://u@other.test/hello.php"},
	// Header names with other bytes than letters, digits and "-" are
	// dropped (nginx's ignore_invalid_headers).
	{name: "review: header tilde", target: "/hello.php", header: []string{"X-A~B: v"}},
	{name: "review: header bang", target: "/hello.php", header: []string{"X!Y: v"}},
	{name: "review: header plus", target: "/hello.php", header: []string{"X+Y: v"}},

	// review, left different on purpose (docs/migrating.md):
	// a method other than GET, HEAD and POST on a directory runs its index
	// (a CORS preflight OPTIONS / reaches the app); nginx answers 405.
	{name: "review: options root", target: "/", meth: "OPTIONS", diffs: parityNot405("php $ROOT/index.php", 200)},
	{name: "review: delete root", target: "/", meth: "DELETE", diffs: parityNot405("php $ROOT/index.php", 200)},
	{name: "review: put index", target: "/sub/", meth: "PUT", body: "x", diffs: parityNot405("php $ROOT/sub/index.php", 200)},
	{name: "review: delete dir without index", target: "/empty/", meth: "DELETE",
		diffs: []string{"status: nginx 405; realroot 403"}},
	{name: "review: delete dir no slash", target: "/sub", meth: "DELETE",
		diffs: []string{`location: nginx ""; realroot "/sub/"`, "status: nginx 405; realroot 301"}},
	// .well-known is exempt from the hidden paths at the root only (RFC
	// 8615); the README's nginx block exempts it anywhere.
	{name: "review: nested well-known", target: "/sub/.well-known/x.txt", diffs: []string{
		"answer: nginx static sub/.well-known/x.txt; realroot other", "status: nginx 200; realroot 404"}},
	// An index name that is a directory: nginx's index module takes it
	// anyway (404, or a redirect into it); realroot takes the next regular
	// file, or 403.
	{name: "review: index.php is a directory", target: "/idxdir/", diffs: []string{
		"answer: nginx other; realroot static idxdir/index.html", "status: nginx 404; realroot 200"}},
	{name: "review: index.html is a directory", target: "/htmldir/", diffs: []string{
		`location: nginx "http://127.0.0.1:PORT/htmldir/index.html/"; realroot ""`, "status: nginx 301; realroot 403"}},
	// A line feed in the path: nginx's split regex stops at it (404);
	// realroot's split is not a regex.
	{name: "review: LF in path info", target: "/hello.php/a%0Ab", diffs: []string{
		"answer: nginx other; realroot php $ROOT/hello.php", "status: nginx 404; realroot 200"}},
	// nginx: the whole request line within 8k; realroot: the target.
	{name: "review: target 8180 bytes", target: "/hello.php?q=" + strings.Repeat("a", 8180-len("/hello.php?q=")), diffs: []string{
		"answer: nginx other; realroot php $ROOT/hello.php", "status: nginx 414; realroot 200"}},
	// A lower-case method is a method (RFC 9110 §9.1); nginx refuses it.
	{name: "review: lower-case method", target: "/hello.php", meth: "get", diffs: []string{
		"answer: nginx other; realroot php $ROOT/hello.php", "status: nginx 400; realroot 200"}},
	// Go escapes sub-delims in the redirect; nginx keeps them.
	{name: "review: redirect parens", target: "/paren(d)",
		diffs: []string{`location: nginx "http://127.0.0.1:PORT/paren(d)/"; realroot "/paren%28d%29/"`}},
}

// parityNot405 is the difference of a method nginx refuses with 405 on a
// directory, where realroot runs what (its answer) with status.
func parityNot405(what string, status int) []string {
	return []string{"answer: nginx other; realroot " + what, fmt.Sprintf("status: nginx 405; realroot %d", status)}
}
