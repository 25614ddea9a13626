package h1

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echo answers with the method, host and body it read.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	io.WriteString(w, r.Method+" "+r.Host+" "+string(b))
})

var badRequests = []struct {
	name, give, want string
}{
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"PRI", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"no host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header"},
	{"absolute without host", "GET http://a/ HTTP/1.1\r\nX: y\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header"},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bad host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"bad host quote", "GET / HTTP/1.1\r\nHost: \"a\"\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"bad header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", "HTTP/1.1 400 Bad Request: invalid header name"},
	{"bad header name byte", "GET / HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bad header value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bad request line", "GET/ HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"header continuation", "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	// Request smuggling.
	{"two content-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400 Bad Request"},
	{"content-length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab", "HTTP/1.1 400 Bad Request"},
	{"bad content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", "HTTP/1.1 400 Bad Request"},
	{"negative content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\na", "HTTP/1.1 400 Bad Request"},
	{"gzip transfer-encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"two transfer-encodings", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"transfer-encoding list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
}

// rejection is one call of Server.Rejected.
type rejection struct {
	addr   string
	status int
	reason string
	bytes  int
}

// recordRejected sets s.Rejected to send each call on the returned channel.
func recordRejected(s *Server, ch chan rejection) {
	s.Rejected = func(addr string, status int, reason string, n int) { ch <- rejection{addr, status, reason, n} }
}

// expectRejected checks the one call of Rejected for the response raw, made
// before the connection closed.
func expectRejected(t *testing.T, ch chan rejection, raw string) {
	t.Helper()
	select {
	case r := <-ch:
		_, body, _ := strings.Cut(raw, "\r\n\r\n")
		if code := strings.Fields(statusLine(raw))[1]; strconv.Itoa(r.status) != code || r.reason == "" ||
			!strings.HasPrefix(r.addr, "127.0.0.1:") || r.bytes != len(body) {
			t.Errorf("Rejected(%q, %d, %q, %d); want 127.0.0.1:port, %s, a reason and %d bytes",
				r.addr, r.status, r.reason, r.bytes, code, len(body))
		}
	default:
		t.Errorf("Rejected not called for %q", statusLine(raw))
	}
	if len(ch) > 0 {
		t.Errorf("Rejected called again: %+v", <-ch)
	}
}

func TestBadRequests(t *testing.T) {
	rejected := make(chan rejection, 4)
	addr, srv := startH1(t, echo, func(s *Server) { recordRejected(s, rejected) })
	for _, tt := range badRequests {
		t.Run(tt.name, func(t *testing.T) {
			// A valid request follows: it must not be answered.
			raw := rawRoundTrip(t, addr, tt.give+get("a", "/"))
			if got := statusLine(raw); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			if n := strings.Count(raw, "HTTP/1.1 "); n != 1 {
				t.Errorf("got %d responses; want 1 then close:\n%s", n, raw)
			}
			// The server's own answers are reported, the handler's not.
			if tt.name == "bad chunk size" {
				if len(rejected) > 0 {
					t.Errorf("the handler answered; Rejected called: %+v", <-rejected)
				}
				return
			}
			expectRejected(t, rejected, raw)
		})
	}
	// A connection closed before its first byte carried no request: nothing
	// to report. (One closed mid-header is a 400, as in nginx's log.)
	dial(t, addr).c.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after 5s", n)
		}
	}
	if len(rejected) > 0 {
		t.Errorf("connection closed unused: Rejected called: %+v", <-rejected)
	}
}

// Accepted as net/http does: chunked wins over Content-Length, which is
// dropped (RFC 9112 section 6.3); HTTP/1.0 ignores Transfer-Encoding. Unlike
// net/http, the connection then closes after the response (sections 6.1
// and 6.3): a proxy in front may have framed the body otherwise, so what
// follows is never read as a request.
func TestSmugglingAcceptedAsNetHTTP(t *testing.T) {
	addr, _ := startH1(t, echo)
	for _, tt := range []struct{ name, give, want string }{
		{"chunked and content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "POST a hello"},
		{"same content-length twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", "POST a hi"},
		{"1.0 transfer-encoding", "POST / HTTP/1.0\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi", "POST  hi"},
	} {
		c := dial(t, addr)
		c.send(tt.give)
		if res, body := c.response("POST"); res.StatusCode != 200 || body != tt.want {
			t.Errorf("%s: got %d %q; want 200 %q", tt.name, res.StatusCode, body, tt.want)
		}
		if tt.name != "same content-length twice" && !c.closed(2*time.Second) {
			t.Errorf("%s: connection kept open; want it closed after the response", tt.name)
		}
	}
}

func TestHeaderTooLarge(t *testing.T) {
	addr, _ := startH1(t, echo, func(s *Server) { s.MaxHeaderBytes = 1 << 10 })
	// Within MaxHeaderBytes plus the 4 KiB of read buffer net/http allows.
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 4000) + "\r\n\r\n")
	if res, _ := c.response("GET"); res.StatusCode != 200 {
		t.Errorf("header under the limit: got %d; want 200", res.StatusCode)
	}
	raw := rawRoundTrip(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX: "+strings.Repeat("y", 6000)+"\r\n\r\n")
	if want := "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large"; raw != want {
		t.Errorf("got %q; want %q", raw, want)
	}
	// The default is 64 KiB.
	addr, _ = startH1(t, echo)
	raw = rawRoundTrip(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX: "+strings.Repeat("y", 70<<10)+"\r\n\r\n")
	if got := statusLine(raw); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Errorf("default limit: got %q; want 431", got)
	}
}
