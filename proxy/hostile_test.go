package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// rawRequest sends req on a new connection and returns the status line and
// whether php-fpm (the recording responder) was asked.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "no response: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// TestHostileRequests: malicious requests get a clear status and never reach
// php-fpm with anything they should not.
func TestHostileRequests(t *testing.T) {
	dir := newDeploy(t, map[string]string{
		"index.php":        "<?php",
		"uploads/evil.jpg": "<?php system('id');",
	}, "A")
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	h := New(newReleases(t, filepath.Join(dir, "current")),
		&fcgi.Client{Network: "unix", Address: fpm.Socket},
		Options{FrontController: "/index.php", MaxBodySize: 1 << 10, BodyTimeout: 200 * time.Millisecond})
	ts := httptest.NewUnstartedServer(h)
	ts.Config.MaxHeaderBytes = 16 << 10
	ts.Start()
	defer ts.Close()
	addr := ts.Listener.Addr().String()

	tests := []struct {
		name string
		req  string
		want string // status line prefix
		fpm  bool   // whether php-fpm may be asked
	}{
		{"nul byte", "GET /index.php%00.jpg HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400", false},
		{"trace", "TRACE /index.php HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\n\r\n", "HTTP/1.1 405", false}, // never echoed, as nginx
		{"dot-dot", "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400", false},         // above the root, as nginx
		{"encoded dot-dot", "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400", false},
		{"dot-dot inside", "GET /a/../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200", true}, // /etc/passwd in the release: front controller
		{"encoded slash", "GET /uploads%2fevil.jpg/x.php HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404", false},
		{"upload as script", "GET /uploads/evil.jpg/x.php HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404", false},
		{"long uri", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 414", false},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 40000) + "\r\n\r\n", "HTTP/1.1 431", false},
		{"many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 3000) + "\r\n", "HTTP/1.1 431", false},
		{"body over the limit", "POST /index.php HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", "HTTP/1.1 413", false},
		{"chunked body over the limit", "POST /index.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("100\r\n"+strings.Repeat("z", 256)+"\r\n", 5) + "0\r\n\r\n", "HTTP/1.1 413", false},
		// RFC 9112 6.3: Transfer-Encoding wins; php-fpm gets the exact
		// spooled length, so nothing can be smuggled to it.
		{"te and cl", "POST /index.php HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 200", true},
		{"two content lengths", "POST /index.php HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "HTTP/1.1 400", false},
		{"invalid method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400", false},
		{"http/1.0 without host", "GET /index.php HTTP/1.0\r\n\r\n", "HTTP/1.0 200", true},
		{"slow body", "POST /index.php HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", "HTTP/1.1 408", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fpm.Requests())
			got := rawRequest(t, addr, tt.req)
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q; want %s", got, tt.want)
			}
			if asked := len(fpm.Requests()) > before; asked && !tt.fpm {
				t.Errorf("php-fpm was asked: %v", fpm.Last().Params["SCRIPT_FILENAME"])
			}
		})
	}

	// Whatever was asked of php-fpm named a PHP script inside the release.
	root := mustEval(t, filepath.Join(dir, "releases/A"))
	for _, r := range fpm.Requests() {
		if sf := r.Params["SCRIPT_FILENAME"]; sf != root+"/index.php" {
			t.Errorf("SCRIPT_FILENAME %q; want %s/index.php", sf, root)
		}
	}
}

// TestChunkedRequestCloses: a request with a chunked body, with a
// Content-Length beside it (CL.TE smuggling: a proxy in front framed it by
// the length) or without, is answered and its connection closed: the bytes
// after the chunked body are never read as a request (RFC 9112 §6.3).
func TestChunkedRequestCloses(t *testing.T) {
	ts := newFakeServer(t, Options{}, func(req *fcgitest.Request, w io.Writer) error {
		_, err := fmt.Fprintf(w, "Content-Type: text/plain\r\n\r\n%s %s", req.Params["REQUEST_METHOD"], req.Stdin)
		return err
	})
	for _, cl := range []string{"Content-Length: 30\r\n", ""} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST /index.php HTTP/1.1\r\nHost: a\r\n%sTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"+
			"GET /index.php?smuggled HTTP/1.1\r\nHost: a\r\n\r\n", cl)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", cl, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "POST hello" || !resp.Close {
			t.Errorf("%q: %d %q, close %v; want 200 %q and Connection: close", cl, resp.StatusCode, b, resp.Close, "POST hello")
		}
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			t.Errorf("%q: after the response: %q; want the connection closed, the smuggled GET unanswered", cl, rest)
		}
		conn.Close()
	}
}

// TestHTTP2Authority: an HTTP/2 request whose host could mislead PHP is 400,
// as in nginx; Go's HTTP/2 server hands all of these to the handler.
func TestHTTP2Authority(t *testing.T) {
	dir := newDeploy(t, map[string]string{"a.txt": "a"}, "r1")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	for _, tt := range []struct {
		name  string
		host  string   // :authority, or the Host field when there is none
		field []string // a Host field beside it
		want  int
	}{
		{name: "authority", host: "a.test:8443", want: 200},
		{name: "same host field", host: "a.test", field: []string{"a.test"}, want: 200},
		{name: "ip literal", host: "[::1]:8443", want: 200},
		{name: "none", host: "", want: 400},
		{name: "other host field", host: "a.test", field: []string{"b.test"}, want: 400},
		{name: "two host fields", host: "a.test", field: []string{"a.test", "b.test"}, want: 400},
		{name: "space", host: "a b", want: 400},
		{name: "slash", host: "a.test/x", want: 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/a.txt", nil)
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
			r.Host = tt.host
			if tt.field != nil {
				r.Header["Host"] = tt.field
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("Host %q, field %q: %d; want %d", tt.host, tt.field, w.Code, tt.want)
			}
			// Over HTTP/1.1 the handler leaves Host to the server.
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
			r.Header.Del("Host")
			w = httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if tt.host != "" && w.Code != 200 {
				t.Errorf("HTTP/1.1, Host %q: %d; want 200", tt.host, w.Code)
			}
		})
	}
}
