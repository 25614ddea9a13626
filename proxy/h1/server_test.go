package h1

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestKeepAliveManyRequests(t *testing.T) {
	var local net.Addr
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "%s %s %s %s %v", r.Method, r.RequestURI, r.Host, r.RemoteAddr, r.TLS == nil)
	}))
	c := dial(t, addr)
	for i := range 100 {
		uri := "/p/" + strconv.Itoa(i) + "?q=1"
		c.send(get("example.com", uri))
		res, body := c.response("GET")
		want := fmt.Sprintf("GET %s example.com %s true", uri, c.c.LocalAddr())
		if res.StatusCode != 200 || body != want {
			t.Fatalf("request %d: got %d %q; want 200 %q", i, res.StatusCode, body, want)
		}
		if res.ContentLength != int64(len(want)) || res.Close {
			t.Fatalf("request %d: ContentLength %d, Close %v; want %d, false", i, res.ContentLength, res.Close, len(want))
		}
		if res.Header.Get("Date") == "" || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("request %d: header %v; want Date and sniffed Content-Type", i, res.Header)
		}
	}
	if local == nil || local.String() != addr {
		t.Errorf("LocalAddrContextKey: got %v; want %s", local, addr)
	}
}

func TestNetHTTPClientReusesConnection(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, r.Method)
	}))
	conns := 0
	tr := &http.Transport{Dial: func(n, a string) (net.Conn, error) {
		conns++
		return net.Dial(n, a)
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	for i := range 20 {
		var res *http.Response
		var err error
		if i%2 == 0 {
			res, err = cl.Get("http://" + addr + "/")
		} else {
			res, err = cl.Post("http://"+addr+"/", "text/plain", strings.NewReader(strings.Repeat("x", i*100)))
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := map[bool]string{true: "GET", false: "POST"}[i%2 == 0]; string(b) != want {
			t.Fatalf("got %q; want %q", b, want)
		}
	}
	if conns != 1 {
		t.Errorf("got %d connections; want 1", conns)
	}
}

func TestPipelining(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	c := dial(t, addr)
	c.send(get("a", "/one") + "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + get("a", "/three"))
	for _, want := range []string{"/one", "/two", "/three"} {
		if res, body := c.response("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q; want 200 %q", res.StatusCode, body, want)
		}
	}
}

func TestFraming(t *testing.T) {
	big := strings.Repeat("b", bodyBufferSize+1)
	tests := []struct {
		name      string
		proto     string
		conn      string // request Connection header
		setCL     bool
		body      string
		wantCL    int64 // -1: none
		wantTE    []string
		wantClose bool
	}{
		{name: "small", proto: "HTTP/1.1", body: "hello", wantCL: 5},
		{name: "empty", proto: "HTTP/1.1", body: "", wantCL: 0},
		{name: "big chunked", proto: "HTTP/1.1", body: big, wantCL: -1, wantTE: []string{"chunked"}},
		{name: "big declared", proto: "HTTP/1.1", setCL: true, body: big, wantCL: int64(len(big))},
		{name: "1.0 small", proto: "HTTP/1.0", body: "hello", wantCL: 5, wantClose: true},
		{name: "1.0 keep-alive", proto: "HTTP/1.0", conn: "keep-alive", body: "hello", wantCL: 5},
		{name: "1.0 big", proto: "HTTP/1.0", conn: "keep-alive", body: big, wantCL: -1, wantClose: true},
		{name: "close", proto: "HTTP/1.1", conn: "close", body: "hello", wantCL: 5, wantClose: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.setCL {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				}
				for b := tt.body; b != ""; {
					n := min(len(b), 1000)
					w.Write([]byte(b[:n]))
					b = b[n:]
				}
			}))
			c := dial(t, addr)
			req := "GET / " + tt.proto + "\r\nHost: a\r\n"
			if tt.conn != "" {
				req += "Connection: " + tt.conn + "\r\n"
			}
			c.send(req + "\r\n")
			res, body := c.response("GET")
			if body != tt.body {
				t.Errorf("body: got %d bytes; want %d", len(body), len(tt.body))
			}
			if res.ContentLength != tt.wantCL || fmt.Sprint(res.TransferEncoding) != fmt.Sprint(tt.wantTE) {
				t.Errorf("got Content-Length %d, Transfer-Encoding %v; want %d, %v", res.ContentLength, res.TransferEncoding, tt.wantCL, tt.wantTE)
			}
			if got := c.closed(200 * time.Millisecond); got != tt.wantClose {
				t.Errorf("connection closed: got %v; want %v", got, tt.wantClose)
			}
		})
	}
}

func TestDeclaredContentLength(t *testing.T) {
	errc := make(chan error, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		_, err := io.WriteString(w, r.URL.Path[1:])
		if r.URL.Path == "/long" {
			errc <- err
		}
	}))
	c := dial(t, addr)
	c.send(get("a", "/long"))
	if err := <-errc; !errors.Is(err, http.ErrContentLength) {
		t.Errorf("Write past Content-Length: got %v; want http.ErrContentLength", err)
	}
	raw, _ := c.rest()
	// Short of its declared length: the client must see the connection end.
	if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.Contains(raw, "Content-Length: 3\r\n") || !strings.HasSuffix(raw, "\r\n\r\n") {
		t.Errorf("long body: got %q; want a 200 with Content-Length 3, no body, then close", raw)
	}

	c = dial(t, addr)
	c.send(get("a", "/s"))
	raw, _ = c.rest()
	if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(raw, "\r\n\r\ns") {
		t.Errorf("short body: got %q; want a 200 with body \"s\" then close", raw)
	}
}

func TestFlushMidResponse(t *testing.T) {
	read := make(chan struct{})
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-read
		io.WriteString(w, "second")
	}))
	c := dial(t, addr)
	c.send(get("a", "/"))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("before the handler ends: got %q, %v; want \"first\"", buf, err)
	}
	close(read)
	rest, _ := io.ReadAll(res.Body)
	if string(rest) != "second" || res.TransferEncoding[0] != "chunked" {
		t.Errorf("got %q, %v; want \"second\", chunked", rest, res.TransferEncoding)
	}
}

func TestNoBodyResponses(t *testing.T) {
	errs := make(chan error, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Path[1:])
		w.Header().Set("Content-Type", "text/plain")
		if code == 103 {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(103)
			code = 200
		}
		w.WriteHeader(code)
		_, err := io.WriteString(w, "body")
		errs <- err
	}))
	tests := []struct {
		method, path, wantRaw string
		wantErr               error
	}{
		{"HEAD", "/200", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: D\r\nContent-Length: 4\r\n\r\n", nil},
		{"GET", "/204", "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nDate: D\r\n\r\n", http.ErrBodyNotAllowed},
		{"GET", "/304", "HTTP/1.1 304 Not Modified\r\nDate: D\r\n\r\n", http.ErrBodyNotAllowed},
		{"GET", "/103", "HTTP/1.1 103 Early Hints\r\nContent-Type: text/plain\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nLink: </a.css>; rel=preload\r\nDate: D\r\nContent-Length: 4\r\n\r\nbody", nil},
	}
	for _, tt := range tests {
		c := dial(t, addr)
		c.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		raw, _ := c.rest()
		if err := <-errs; err != tt.wantErr {
			t.Errorf("%s %s: Write: got %v; want %v", tt.method, tt.path, err, tt.wantErr)
		}
		if got := normalize(raw); got != normalize(tt.wantRaw) {
			t.Errorf("%s %s:\ngot  %q\nwant %q", tt.method, tt.path, got, normalize(tt.wantRaw))
		}
	}
}

// normalize sorts each header block's lines (h1 does not sort), replaces
// the Date and drops Connection: close.
func normalize(raw string) string {
	var out []string
	for raw != "" {
		head, body, ok := strings.Cut(raw, "\r\n\r\n")
		lines := strings.Split(head, "\r\n")
		var keep []string
		for _, l := range lines[1:] {
			switch {
			case strings.HasPrefix(l, "Date: "):
				l = "Date: D"
			case l == "Connection: close":
				continue
			}
			keep = append(keep, l)
		}
		sortStrings(keep)
		out = append(out, lines[0], strings.Join(keep, "|"))
		if !ok {
			break
		}
		if strings.HasPrefix(body, "HTTP/1.1 ") {
			raw = body
			continue
		}
		out = append(out, body)
		break
	}
	return strings.Join(out, "\n")
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

func TestHeaderHygiene(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Bad Name"] = []string{"x"}
		w.Header().Set("X-Split", "a\r\nSet-Cookie: evil=1")
		w.Header().Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT")
		w.WriteHeader(200)
		w.Header().Set("X-Late", "1") // after WriteHeader: not sent
		io.WriteString(w, "<html><body>hi</body></html>")
	}))
	c := dial(t, addr)
	c.send(get("a", "/"))
	res, _ := c.response("GET")
	if _, ok := res.Header["Bad Name"]; ok {
		t.Error("invalid header name sent")
	}
	if got := res.Header.Get("X-Split"); got != "a  Set-Cookie: evil=1" || res.Header.Get("Set-Cookie") != "" {
		t.Errorf("X-Split: got %q, Set-Cookie %q; want CR/LF as spaces", got, res.Header.Get("Set-Cookie"))
	}
	if got := res.Header.Get("Date"); got != "Mon, 01 Jan 2001 00:00:00 GMT" {
		t.Errorf("Date: got %q; want the handler's", got)
	}
	if res.Header.Get("X-Late") != "" {
		t.Error("header set after WriteHeader was sent")
	}
	if got := res.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type: got %q; want sniffed text/html", got)
	}
}

func TestConnectionClose(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
	}))
	for _, tt := range []struct{ name, req string }{
		{"server", get("a", "/close")},
		{"client", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"},
	} {
		c := dial(t, addr)
		c.send(tt.req + get("a", "/"))
		res, _ := c.response("GET")
		if !res.Close {
			t.Errorf("%s: got no Connection: close", tt.name)
		}
		if rest, _ := c.rest(); rest != "" {
			t.Errorf("%s: got %q after a close response; want nothing", tt.name, rest)
		}
	}
}
