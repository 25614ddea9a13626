package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"realroot/internal/nginxtest"
	"realroot/internal/phpfpmtest"
)

// TestAccessLogParity is a differential test of access-log = "combined":
// the same raw requests go to a real nginx (README.md's server block, with
// access_log ... combined) and to the realroot binary (--access-log
// combined), both over one docroot and one php-fpm, and the two log lines
// of each request are compared field by field: the remote address, the
// remote user, the request line, the status, the body bytes sent
// ($body_bytes_sent), the referer and the user agent, and that the line
// parses as nginx's combined format at all. The timestamp is checked to
// be a time of now in the same zone offset, not compared; the byte count of
// a front's own error page (a status of 400 or more, the count equal to
// the body the client got) is "<page>": each front's page is its own.
// Every difference must be listed in the case, exactly: a new one fails,
// and so does a listed one that went away (as proxy/nginx_parity_test.go).
//
// After each request, a marker request goes to both; the case's lines are
// those between the previous marker's line and this one's, waited for
// with a deadline.
func TestAccessLogParity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx, php-fpm and realroot")
	}
	nginxtest.Require(t)

	docroot := t.TempDir()
	if err := os.Chmod(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range alpSite {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(docroot, "static.txt"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	etag := fmt.Sprintf(`"%x-%x"`, mtime.Unix(), len(alpSite["static.txt"]))
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})

	ng := nginxtest.Start(t, nginxtest.Options{HTTP: strings.NewReplacer("{{root}}", docroot, "{{sock}}", fpm.Socket).
		Replace(alpNginxServer)})
	ngLog := filepath.Join(ng.Prefix, "access.log")
	rrLog := filepath.Join(t.TempDir(), "access.log")
	rr := startRealroot(t, nil, "--root", docroot, "--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0",
		"--access-log", "combined", "--access-log-file", rrLog)

	var ngSeen, rrSeen int // lines already taken, markers included
	for i, c := range alpCases {
		t.Run(c.name, func(t *testing.T) {
			raw := strings.ReplaceAll(c.raw, "{{etag}}", etag)
			ngBody := alpSend(t, ng.Addr, raw)
			rrBody := alpSend(t, rr.addr, raw)
			mark := fmt.Sprintf("GET /static.txt?mark=%d HTTP/1.1\r\nHost: a\r\nUser-Agent: mark\r\nConnection: close\r\n\r\n", i)
			alpSend(t, ng.Addr, mark)
			alpSend(t, rr.addr, mark)
			markReq := fmt.Sprintf(`"GET /static.txt?mark=%d HTTP/1.1"`, i)
			ngLines := alpWaitMark(t, ngLog, &ngSeen, markReq)
			rrLines := alpWaitMark(t, rrLog, &rrSeen, markReq)

			got := alpCompare(ngLines, rrLines, ngBody, rrBody)
			want := c.diffs
			if os.Getenv("REALROOT_HTTP1_SERVER") == "net/http" && c.netHTTPDiffs != nil {
				want = c.netHTTPDiffs
			}
			want = slices.Clone(want)
			slices.Sort(want)
			slices.Sort(got)
			for _, d := range got {
				if !slices.Contains(want, d) {
					t.Errorf("new divergence from nginx: %s", d)
				}
			}
			for _, d := range want {
				if !slices.Contains(got, d) {
					t.Errorf("listed divergence not seen (fixed? update the case): %s", d)
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("%q\nnginx:    %q (body %d)\nrealroot: %q (body %d)", raw, ngLines, ngBody, rrLines, rrBody)
			}
		})
	}
}

// alpSite is the docroot. No index.php: a missing file is a 404 from both
// (nginx's try_files falls back to /index.php, which is missing too).
var alpSite = map[string]string{
	"static.txt": "STATIC static.txt\n", // 18 bytes
	"echo.php":   `<?php echo "PHPOUT ", strlen(file_get_contents('php://input')), "\n";`,
}

// alpNginxServer is README.md's server block ("What it does, in nginx
// terms") with an access log in the combined format.
const alpNginxServer = `
	server {
		listen 127.0.0.1:{{port}};
		root {{root}};
		access_log {{prefix}}/access.log combined;
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
`

// alpCase is one raw request, sent as it is to both fronts on a new
// connection.
type alpCase struct {
	name  string
	raw   string   // the request; {{etag}} is static.txt's ETag
	diffs []string // every expected difference, as alpCompare writes it
	// netHTTPDiffs, when set, replace diffs under
	// REALROOT_HTTP1_SERVER=net/http.
	netHTTPDiffs []string
}

// alpReq is a request with Host: a and Connection: close around the given
// header lines.
func alpReq(line string, header ...string) string {
	var b strings.Builder
	b.WriteString(line + "\r\nHost: a\r\n")
	for _, h := range header {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

// alpRejected are the differences on a request realroot's HTTP/1 server
// (http1-server = lean) refuses before any handler (400), where nginx also
// answers 400 with reqLine, its request line as received.
// proxy.Handler.LogRejected has no method, target or protocol to log (its
// reason goes to the json format only), so the request is "- - -":
// deliberate, and a parser still finds three fields. Its byte count is
// that of its error page, as nginx's.
func alpRejected(reqLine string) []string {
	return []string{"request: nginx " + reqLine + "; realroot - - -"}
}

// alpNoLine: under http1-server = net/http a request the server refuses
// before any handler gets no access log line at all: net/http has no hook
// for it (TestAccessLogRejected).
var alpNoLine = []string{"lines: nginx 1; realroot 0"}

var alpCases = []alpCase{
	// A file, HEAD (0 bytes), a 304 (0 bytes), a 404 (each front's own
	// page), a 206 (the range's 4 bytes), a query string, no User-Agent
	// ("-"): the same line from both.
	{name: "get", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: t/1")},
	{name: "head", raw: alpReq("HEAD /static.txt HTTP/1.1", "User-Agent: t/1")},
	{name: "304", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: t/1", "If-None-Match: {{etag}}")},
	{name: "404", raw: alpReq("GET /missing.txt HTTP/1.1", "User-Agent: t/1")},
	{name: "206", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: t/1", "Range: bytes=0-3")},
	{name: "query", raw: alpReq("GET /static.txt?a=1&b=2 HTTP/1.1", "User-Agent: t/1")},
	{name: "no user agent", raw: alpReq("GET /static.txt HTTP/1.1")},
	// '"', '\\' and UTF-8 are \x22, \x5C and \xC3\xA9 in both; a tab \x09.
	{name: "referer and ua escaped", raw: alpReq("GET /static.txt HTTP/1.1",
		`Referer: http://x/"q"\é`, `User-Agent: a "b" \c é`)},
	{name: "tab in ua", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: a\tb")},
	// nginx takes a \x01 in a header value (logged as \x01); both of
	// realroot's HTTP/1 servers refuse it (400): a control byte is not
	// in RFC 9110's field-value. An HTTP difference, not the log's.
	{name: "control byte in ua", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: a\x01b"),
		diffs: []string{
			"status: nginx 200; realroot 400",
			"request: nginx GET /static.txt HTTP/1.1; realroot - - -",
			"bytes: nginx 18; realroot <page>",
			`agent: nginx a\x01b; realroot -`,
		},
		netHTTPDiffs: alpNoLine},
	// %22 stays as sent; a raw '"' in the target is taken by both and
	// logged as \x22, raw UTF-8 as \xC3\xA9.
	{name: "target %22", raw: alpReq("GET /static.txt?q=%22a%22 HTTP/1.1", "User-Agent: t/1")},
	{name: "target raw quote", raw: alpReq(`GET /static.txt?q="a" HTTP/1.1`, "User-Agent: t/1")},
	{name: "target raw utf-8", raw: alpReq("GET /static.txt?q=é HTTP/1.1", "User-Agent: t/1")},
	// 400 from both.
	{name: "control byte in target", raw: alpReq("GET /static.txt?q=\x01 HTTP/1.1", "User-Agent: t/1"),
		diffs: alpRejected(`GET /static.txt?q=\x01 HTTP/1.1`), netHTTPDiffs: alpNoLine},
	{name: "absolute form", raw: alpReq("GET http://a/static.txt HTTP/1.1", "User-Agent: t/1")},
	{name: "http/1.0", raw: "GET /static.txt HTTP/1.0\r\nUser-Agent: t/1\r\n\r\n"},
	// nginx's $remote_user is the Basic credentials' user name even
	// without auth_basic; realroot does no HTTP authentication and always
	// writes "-" (a valid value: a parser reads "no user").
	{name: "basic auth user", raw: alpReq("GET /static.txt HTTP/1.1", "User-Agent: t/1",
		"Authorization: Basic dXNlcjpwdw=="), // user:pw
		diffs: []string{"user: nginx user; realroot -"}},
	// Request lines both refuse (400); nginx logs the line as received
	// and, having read no header, "-" for the User-Agent.
	{name: "space in target", raw: alpReq("GET /a b HTTP/1.1", "User-Agent: t/1"),
		diffs: alpRejected("GET /a b HTTP/1.1"), netHTTPDiffs: alpNoLine},
	{name: "bad method", raw: alpReq("G@T /static.txt HTTP/1.1", "User-Agent: t/1"),
		diffs: alpRejected("G@T /static.txt HTTP/1.1"), netHTTPDiffs: alpNoLine},
	{name: "bad version", raw: alpReq("GET /static.txt HTTP/1.x", "User-Agent: t/1"),
		diffs: alpRejected("GET /static.txt HTTP/1.x"), netHTTPDiffs: alpNoLine},
	// nginx refuses a lowercase method (400, before the headers: agent
	// "-"); realroot takes "get" as the method token it is (RFC 9110
	// §9.1: case-sensitive) and answers 405, not GET on a static file.
	// An HTTP difference; both lines are well formed.
	{name: "lowercase method", raw: alpReq("get /static.txt HTTP/1.1", "User-Agent: t/1"),
		diffs: []string{"status: nginx 400; realroot 405", "agent: nginx -; realroot t/1"}},
	// 400 from both, after the headers: nginx logs the User-Agent too,
	// realroot's rejected line has none (its body here is 45 bytes).
	{name: "http/1.1 no host", raw: "GET /static.txt HTTP/1.1\r\nUser-Agent: t/1\r\nConnection: close\r\n\r\n",
		diffs: append(alpRejected("GET /static.txt HTTP/1.1"), "agent: nginx t/1; realroot -"), netHTTPDiffs: alpNoLine},
	// PHP's 9 bytes, no length from PHP: nginx chunks them in HTTP/1.1,
	// and its $body_bytes_sent counts the chunk framing (19: "9\r\n",
	// "\r\n", "0\r\n\r\n"); realroot counts the body only. In HTTP/1.0
	// (no chunking) both log 9. Harmless: realroot's count is the body.
	{name: "post php", raw: alpReq("POST /echo.php HTTP/1.1", "User-Agent: t/1",
		"Content-Type: application/x-www-form-urlencoded", "Content-Length: 3") + "a=1",
		diffs: []string{"bytes: nginx 19; realroot 9"}},
	{name: "post php http/1.0", raw: "POST /echo.php HTTP/1.0\r\nUser-Agent: t/1\r\n" +
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=1"},
	// 405 from both, each its own page.
	{name: "post static", raw: alpReq("POST /static.txt HTTP/1.1", "User-Agent: t/1",
		"Content-Type: application/x-www-form-urlencoded", "Content-Length: 3") + "a=1"},
}

// alpSend sends raw to addr on a new connection, reads the answer to the
// end and returns the length of its body (-1 when it is not a response).
func alpSend(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("%s: write: %v", addr, err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s: read: %v (%q so far)", addr, err, all)
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), &http.Request{Method: method})
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return len(body)
}

// alpWaitMark waits until the log at path has a line with request mark past
// the *seen lines already taken, and returns the lines before it, moving
// *seen past the marker.
func alpWaitMark(t *testing.T, path string, seen *int, mark string) []string {
	t.Helper()
	var lines []string
	eventually(t, 5*time.Second, func() string {
		b, _ := os.ReadFile(path)
		all := strings.SplitAfter(string(b), "\n")
		for i := *seen; i < len(all); i++ {
			if strings.HasSuffix(all[i], "\n") && strings.Contains(all[i], mark) {
				for _, l := range all[*seen:i] {
					lines = append(lines, strings.TrimSuffix(l, "\n"))
				}
				*seen = i + 1
				return ""
			}
		}
		return fmt.Sprintf("%s: no line with %s after line %d:\n%s", path, mark, *seen, b)
	})
	return lines
}

// alpCombined is nginx's combined format:
// $remote_addr - $remote_user [$time_local] "$request" $status
// $body_bytes_sent "$http_referer" "$http_user_agent", quoted fields
// escaped (no raw '"' inside).
var alpCombined = regexp.MustCompile(`^(\S+) - (\S+) \[([^]]+)\] "([^"]*)" (\S+) (\S+) "([^"]*)" "([^"]*)"$`)

// alpFields are the fields of a combined line compared, in order.
var alpFields = []string{"addr", "user", "time", "request", "status", "bytes", "referer", "agent"}

// alpParse splits a combined line into alpFields; nil when it does not
// parse. The time becomes "now" and its zone offset when it is a time
// within a minute of now, and the byte count of a front's own error page
// "<page>" (bodyLen: the length of the body the client got).
func alpParse(line string, bodyLen int) map[string]string {
	m := alpCombined.FindStringSubmatch(line)
	if m == nil {
		return nil
	}
	f := map[string]string{}
	for i, k := range alpFields {
		f[k] = m[i+1]
	}
	if tm, err := time.Parse(clfTime, f["time"]); err == nil && time.Since(tm).Abs() < time.Minute {
		f["time"] = "now " + tm.Format("-0700")
	}
	if f["status"] >= "400" && f["bytes"] == fmt.Sprint(bodyLen) {
		f["bytes"] = "<page>"
	}
	return f
}

// alpCompare lists the differences between nginx's log lines ng and
// realroot's re for one request; ngBody and reBody are the lengths of the
// bodies each sent.
func alpCompare(ng, re []string, ngBody, reBody int) []string {
	if len(ng) != len(re) || len(ng) != 1 {
		return []string{fmt.Sprintf("lines: nginx %d; realroot %d", len(ng), len(re))}
	}
	a, b := alpParse(ng[0], ngBody), alpParse(re[0], reBody)
	if a == nil || b == nil {
		return []string{fmt.Sprintf("format: nginx %s; realroot %s", alpParsed(a, ng[0]), alpParsed(b, re[0]))}
	}
	var d []string
	for _, k := range alpFields {
		if a[k] != b[k] {
			d = append(d, fmt.Sprintf("%s: nginx %s; realroot %s", k, a[k], b[k]))
		}
	}
	return d
}

func alpParsed(f map[string]string, line string) string {
	if f == nil {
		return "unparsable " + line
	}
	return "combined"
}
