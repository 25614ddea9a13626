package proxy

import (
	"bufio"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"realroot/internal/nginxtest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// TestNginxParityFault is TestNginxParity (nginx_parity_test.go) for a PHP
// or php-fpm that misbehaves: a fatal error, exit(1), stderr, response
// headers too big for nginx's fastcgi_buffer_size, a script past the read
// timeout or killed by request_terminate_timeout, php-fpm unreachable, bad
// headers from PHP, a Content-Length that lies, an upload past realroot's
// in-memory spool. The same raw HTTP/1.1 request goes to a real nginx
// (README.md's server block) and to realroot, both with the same timeouts
// in front of the same php-fpm, and the answers are compared: the status,
// every header a user sees (not Server, Date, Connection, Keep-Alive,
// X-Request-Id; not the type and length of a front's own error page), the
// framing, the body unless both are a front's own error page, whether the
// body ended cleanly, and any bytes after the response. Every difference
// must be listed in the case, exactly: a new one fails, and so does a
// listed one that went away. A front that hangs (no end of the answer
// within 6s) fails, and so does an upload whose md5 PHP did not see.
//
// Four pairs of fronts: "main" over a php-fpm of 8 workers, with every
// timeout 1s (nginx's fastcgi_connect/send/read_timeout, fcgi.Client's
// DialTimeout, WriteTimeout, ReadTimeout); "terminate" over a php-fpm with
// request_terminate_timeout 1s, the fronts' timeouts 3s; "down" and
// "refused", whose socket does not exist or has no listener.
func TestNginxParityFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx and php-fpm")
	}
	nginxtest.Require(t)

	dir := newDeploy(t, parityFaultSite, "r1")
	docroot := filepath.Join(dir, "current", "public")
	rs := newReleases(t, docroot)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 8})
	fpmTerm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2,
		Pool: map[string]string{"request_terminate_timeout": "1s"}})
	down := filepath.Join(t.TempDir(), "missing.sock")
	refused := filepath.Join(t.TempDir(), "refused.sock")
	l, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the socket file stays; connecting to it is refused

	type front struct{ ng, rr string }
	pair := func(sock string, timeout time.Duration) front {
		s := fmt.Sprint(int(timeout / time.Second))
		ng, _ := startParityNginxExtra(t, docroot, sock, fmt.Sprintf(
			"fastcgi_connect_timeout %ss; fastcgi_send_timeout %ss; fastcgi_read_timeout %ss;", s, s, s))
		c := &fcgi.Client{Network: "unix", Address: sock, DialTimeout: timeout, WriteTimeout: timeout,
			ReadTimeout: timeout, IdleTimeout: 500 * time.Millisecond}
		rr := newTestServer(t, New(rs, c, Options{FrontController: "/index.php"}))
		t.Cleanup(func() { rr.Close(); c.Close() })
		return front{ng: ng, rr: rr.Listener.Addr().String()}
	}
	fronts := map[string]front{
		"main":      pair(fpm.Socket, time.Second),
		"terminate": pair(fpmTerm.Socket, 3*time.Second),
		"down":      pair(down, time.Second),
		"refused":   pair(refused, time.Second),
	}

	start := time.Now()
	for _, c := range parityFaultCases {
		t.Run(c.name, func(t *testing.T) {
			f, ok := fronts[c.front]
			if c.front == "" {
				f, ok = fronts["main"], true
			}
			if !ok {
				t.Fatalf("no front %q", c.front)
			}
			// Both at once: the slow cases cost their timeout once.
			var ng, re parityFaultAnswer
			var wg sync.WaitGroup
			wg.Go(func() { ng = parityFaultDo(t, f.ng, c) })
			wg.Go(func() { re = parityFaultDo(t, f.rr, c) })
			wg.Wait()
			for _, a := range []struct {
				name string
				parityFaultAnswer
			}{{"nginx", ng}, {"realroot", re}} {
				if a.end == "timeout" || strings.HasSuffix(a.end, ": timeout") {
					t.Errorf("%s hung: no end within the client's 6s", a.name)
				}
				if c.wantBody != "" && a.body != c.wantBody {
					t.Errorf("%s: body %q; want %q", a.name, a.body, c.wantBody)
				}
			}
			got := parityFaultCompare(c, ng, re)
			want := slices.Clone(c.diffs)
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
			switch {
			case t.Failed():
				t.Logf("%s %s\nnginx:    %s\nrealroot: %s", c.method(), c.target, ng.summary(), re.summary())
			case testing.Verbose():
				t.Logf("%s %s: %d known diffs\nnginx:    %s\nrealroot: %s", c.method(), c.target, len(want), ng.brief(), re.brief())
			}
		})
	}
	t.Logf("cases took %v", time.Since(start).Round(10*time.Millisecond))
}

// parityFaultSite is the deploy of TestNginxParityFault. Every body PHP
// sends holds "PHPOUT", to tell it from a front's own error page.
var parityFaultSite = map[string]string{
	"public/index.php": `<?php echo "PHPOUT index\n";`,
	// display_errors is Off (php.ini-production): PHP answers 500, and
	// the fatal error goes to stderr.
	"public/fatal.php": `<?php undefined_function();`,
	// output_buffering = 4096 (php.ini-production): the echo is still
	// buffered when the error comes, so no header went out yet.
	"public/fatal-after-output.php": `<?php echo "PHPOUT before fatal\n"; undefined_function();`,
	"public/exit1.php":              `<?php echo "PHPOUT exit1\n"; exit(1);`,
	"public/status500.php":          `<?php http_response_code(500); echo "PHPOUT status500\n";`,
	"public/stderr.php": `<?php error_log("parity: error_log line");
file_put_contents('php://stderr', "parity: php://stderr line\n");
echo "PHPOUT stderr\n";`,
	"public/header5k.php":  `<?php header('X-Big: ' . str_repeat('a', 5 << 10)); echo "PHPOUT header5k\n";`,
	"public/header70k.php": `<?php header('X-Big: ' . str_repeat('a', 70 << 10)); echo "PHPOUT header70k\n";`,
	"public/sleep.php":     `<?php sleep(2); echo "PHPOUT sleep\n";`,
	// Past output_buffering: the header and the first bytes go out, then
	// the script stalls.
	"public/sleep-after-output.php": `<?php while (ob_get_level()) ob_end_flush();
echo "PHPOUT partial\n"; flush(); sleep(2); echo "PHPOUT rest\n";`,
	"public/terminate.php": `<?php sleep(5); echo "PHPOUT never\n";`,
	"public/terminate-after-output.php": `<?php while (ob_get_level()) ob_end_flush();
echo "PHPOUT partial\n"; flush(); sleep(5); echo "PHPOUT never\n";`,
	// PHP refuses a header with a newline (a warning; nothing set).
	"public/header-newline.php": `<?php header("X: a\r\nY: b"); echo "PHPOUT header-newline\n";`,
	"public/status-abc.php":     `<?php header("Status: abc"); echo "PHPOUT status-abc\n";`,
	"public/status304-body.php": `<?php header("Status: 304 Not Modified"); echo "PHPOUT 304\n";`,
	"public/length-short.php":   `<?php header('Content-Length: 5'); echo "PHPOUT-cl\n";`,  // 10 bytes
	"public/length-long.php":    `<?php header('Content-Length: 20'); echo "PHPOUT-cl\n";`, // 10 bytes
	"public/chunked.php":        `<?php header('Transfer-Encoding: chunked'); echo "PHPOUT chunked\n";`,
	"public/md5.php": `<?php $b = file_get_contents('php://input');
echo "PHPOUT md5 ", md5($b), " ", strlen($b), "\n";`,
}

// parityFaultBody is over realroot's in-memory spool (BodyMemory, 64 KiB)
// and nginx's client_body_buffer_size (16k on 64-bit), under both fronts'
// 1m limit: both spool it to a file.
var parityFaultBody = func() string {
	b := make([]byte, 200<<10)
	for i := range b {
		b[i] = byte('a' + i*7%26)
	}
	return string(b)
}()

// parityFaultMD5 is md5.php's answer to parityFaultBody.
var parityFaultMD5 = fmt.Sprintf("PHPOUT md5 %x %d\n", md5.Sum([]byte(parityFaultBody)), len(parityFaultBody))

// parityFaultCase is one request sent to both fronts of a pair.
type parityFaultCase struct {
	name    string
	front   string // "" (main), "terminate", "down" or "refused"
	target  string
	meth    string // "" means GET
	body    string
	chunked bool // send body chunked, else with Content-Length
	// freeFraming: PHP sends no length: Content-Length or chunked is
	// each front's (and each HTTP/1 server's) choice.
	freeFraming bool
	diffs       []string // every expected difference, as parityFaultCompare writes it
	wantBody    string   // when set, what both must send
}

func (c parityFaultCase) method() string {
	if c.meth == "" {
		return "GET"
	}
	return c.meth
}

// parityFaultStreamed: PHP flushed its first bytes, then stalled or was
// killed. nginx sent the header but holds the bytes (fastcgi_buffering on:
// they wait for a full buffer or the end); realroot streams them as PHP
// flushes (docs/reliability.md: "flushing whenever php-fpm has nothing more
// ready"), as nginx does with fastcgi_buffering off. Both then cut the
// connection, so that the body never looks whole; proxy/h1 with a reset
// (SO_LINGER 0, proxy/h1/conn.go), net/http with a plain close, as nginx.
var parityFaultStreamed = func() []string {
	d := []string{`body: nginx ""; realroot "PHPOUT partial\n"`}
	if os.Getenv("REALROOT_HTTP1_SERVER") != "net/http" {
		d = append(d, `end: nginx unexpected EOF; realroot reset`)
	}
	return d
}()

// parityFaultBigHeader: nginx's fastcgi_buffer_size (4k) must hold PHP's
// whole header block, else 502 "upstream sent too big header"; realroot's
// bound is fcgi.Client.MaxHeaderBytes, 1 MiB.
func parityFaultBigHeader(name string) []string {
	return []string{
		`status: nginx 502; realroot 200`,
		`x-big: nginx <unset>; realroot "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"`,
		fmt.Sprintf(`body: nginx "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad"; realroot "PHPOUT %s\n"`, name),
	}
}

var parityFaultCases = []parityFaultCase{
	{name: "index", target: "/index.php", freeFraming: true},
	// 500, no body, from both. PHP sends no length: nginx chunks the
	// empty body, realroot (both HTTP/1 servers) sends Content-Length: 0.
	{name: "fatal error", target: "/fatal.php", diffs: []string{
		`content-length: nginx <unset>; realroot "0"`,
		`framing: nginx chunked; realroot length`,
	}},
	// 500 with the buffered output, both.
	{name: "fatal error after output", target: "/fatal-after-output.php", freeFraming: true},
	{name: "exit 1 after output", target: "/exit1.php", freeFraming: true},      // 200, the body
	{name: "status 500 with body", target: "/status500.php", freeFraming: true}, // 500, PHP's body
	{name: "stderr", target: "/stderr.php", freeFraming: true},                  // 200, the body; stderr logged
	{name: "header 5k", target: "/header5k.php", diffs: parityFaultBigHeader("header5k")},
	{name: "header 70k", target: "/header70k.php", diffs: parityFaultBigHeader("header70k")},
	// 504 from both, after the read timeout (realroot's moves lazily:
	// 0.875s to 1s).
	{name: "sleep past read timeout", target: "/sleep.php"},
	{name: "sleep past read timeout after output", target: "/sleep-after-output.php", freeFraming: true,
		diffs: parityFaultStreamed},
	// php-fpm kills the worker (SIGTERM) after 1s: 502 from both.
	{name: "request_terminate_timeout", front: "terminate", target: "/terminate.php"},
	{name: "request_terminate_timeout after output", front: "terminate", target: "/terminate-after-output.php",
		freeFraming: true, diffs: parityFaultStreamed},
	{name: "php-fpm socket missing", front: "down", target: "/index.php"},    // 502 both
	{name: "php-fpm socket refused", front: "refused", target: "/index.php"}, // 502 both
	// PHP drops the header with a warning: 200, the body, both.
	{name: "header with newline", target: "/header-newline.php", freeFraming: true},
	// PHP passes "Status: abc" on; 502 from both.
	{name: "status abc", target: "/status-abc.php", freeFraming: true},
	// 304 from both, PHP's body dropped. nginx keeps PHP's Content-Type;
	// realroot (both HTTP/1 servers) sends none on a 304, which RFC 9110
	// §15.4.5 advises.
	{name: "status 304 with body", target: "/status304-body.php", freeFraming: true, diffs: []string{
		`content-type: nginx "text/html; charset=UTF-8"; realroot <unset>`,
	}},
	// PHP's Content-Length: 5 over 10 bytes: both send the 5 bytes
	// ("upstream sent more data than specified") and drop the rest.
	{name: "content-length short", target: "/length-short.php"},
	// Content-Length: 20 over 10 bytes: both send the 10 and close.
	{name: "content-length long", target: "/length-long.php"},
	// PHP's own Transfer-Encoding: chunked: both chunk the body once.
	{name: "transfer-encoding from php", target: "/chunked.php", freeFraming: true},
	// 200 KiB, whole to PHP through both (the same md5 and length).
	{name: "post 200k", target: "/md5.php", meth: "POST", body: parityFaultBody, freeFraming: true,
		wantBody: parityFaultMD5},
	{name: "post 200k chunked", target: "/md5.php", meth: "POST", body: parityFaultBody, chunked: true, freeFraming: true,
		wantBody: parityFaultMD5},
}

// parityFaultAnswer is one front's answer, as a client sees it.
type parityFaultAnswer struct {
	status   int // 0: no response
	header   http.Header
	body     string
	framing  string // "length", "chunked" or "none"
	end      string // how the body ended: "clean", "unexpected EOF", "reset", "timeout", ...
	trailing string // bytes after the response, before the connection closed
	took     time.Duration
}

func (a parityFaultAnswer) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d framing %s, end %s, took %v", a.status, a.framing, a.end, a.took.Round(time.Millisecond))
	for _, k := range slices.Sorted(maps.Keys(a.header)) {
		fmt.Fprintf(&b, "\n    %s: %s", k, parityFaultValues(a.header[k]))
	}
	fmt.Fprintf(&b, "\n    body %.300q", a.body)
	if a.trailing != "" {
		fmt.Fprintf(&b, "\n    trailing %.300q", a.trailing)
	}
	return b.String()
}

// brief is one line of summary.
func (a parityFaultAnswer) brief() string {
	return fmt.Sprintf("%d, %s, %d body bytes, end %s, %d trailing, in %v",
		a.status, a.framing, len(a.body), a.end, len(a.trailing), a.took.Round(10*time.Millisecond))
}

// page reports whether a is a front's own error page: an error status
// with a body that is not PHP's.
func (a parityFaultAnswer) page() bool {
	return a.status >= 400 && a.body != "" && !strings.Contains(a.body, "PHPOUT")
}

// parityFaultIgnored are each server's own, or the connection's.
var parityFaultIgnored = map[string]bool{
	"Server": true, "Date": true, "Connection": true, "Keep-Alive": true, "X-Request-Id": true,
}

// parityFaultCompare lists the differences between nginx's answer ng and
// realroot's re.
func parityFaultCompare(c parityFaultCase, ng, re parityFaultAnswer) []string {
	var d []string
	diff := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s: nginx %s; realroot %s", field, a, b))
		}
	}
	diff("status", fmt.Sprint(ng.status), fmt.Sprint(re.status))
	page := ng.page() || re.page()
	for _, k := range unionKeys(ng.header, re.header) {
		if parityFaultIgnored[k] || page && parityPageHeaders[k] || c.freeFraming && k == "Content-Length" {
			continue
		}
		diff(strings.ToLower(k), parityFaultValues(ng.header[k]), parityFaultValues(re.header[k]))
	}
	if !page && !c.freeFraming {
		diff("framing", ng.framing, re.framing)
	}
	if !(ng.page() && re.page()) && ng.body != re.body {
		diff("body", fmt.Sprintf("%.80q", ng.body), fmt.Sprintf("%.80q", re.body))
	}
	diff("end", ng.end, re.end)
	diff("trailing", fmt.Sprintf("%.80q", ng.trailing), fmt.Sprintf("%.80q", re.trailing))
	return d
}

// parityFaultValues writes a header's values for a difference, each cut
// at 80 bytes (a 70 KiB header would be written whole).
func parityFaultValues(v []string) string {
	if len(v) == 0 {
		return "<unset>"
	}
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%.80q", s)
	}
	if len(v) == 1 {
		return q[0]
	}
	return "[" + strings.Join(q, " ") + "]"
}

// parityFaultDo sends c to addr on a new connection, as raw HTTP/1.1 with
// Connection: close, and reads the answer and whatever follows it until
// the connection closes. A broken answer is recorded, not fatal.
func parityFaultDo(t *testing.T, addr string, c parityFaultCase) parityFaultAnswer {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", c.method(), c.target, addr)
	switch {
	case c.body != "" && c.chunked:
		b.WriteString("Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
		for s := c.body; s != ""; {
			n := min(len(s), 50000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
			s = s[n:]
		}
		b.WriteString("0\r\n\r\n")
	case c.body != "":
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			len(c.body), c.body)
	default:
		b.WriteString("Connection: close\r\n\r\n")
	}

	begin := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("%s: %v", addr, err)
		return parityFaultAnswer{end: "dial: " + err.Error()}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(6 * time.Second))
	written := make(chan error, 1)
	go func() { _, err := io.WriteString(conn, b.String()); written <- err }()
	defer func() { conn.Close(); <-written }()

	br := bufio.NewReader(conn)
	a := parityFaultAnswer{framing: "none", end: "clean"}
	resp, err := http.ReadResponse(br, &http.Request{Method: c.method()})
	if err != nil {
		a.end = "no response: " + parityFaultErr(err)
		a.took = time.Since(begin)
		return a
	}
	a.status, a.header = resp.StatusCode, resp.Header
	switch {
	case slices.Contains(resp.TransferEncoding, "chunked"):
		a.framing = "chunked"
	case resp.Header.Get("Content-Length") != "":
		a.framing = "length"
	}
	body, err := io.ReadAll(resp.Body)
	a.body = string(body)
	if err != nil {
		a.end = parityFaultErr(err)
	} else {
		rest, err := io.ReadAll(br)
		a.trailing = string(rest)
		if err != nil {
			a.trailing += " <" + parityFaultErr(err) + ">"
		}
	}
	a.took = time.Since(begin)
	return a
}

// parityFaultErr names a read error the same way whichever front caused it.
func parityFaultErr(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}
