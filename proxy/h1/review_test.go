package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A handler that sets Transfer-Encoding itself and returns without a
// flush: its response is chunked, and must end with the last chunk, or the
// next response is read as part of its body.
func TestHandlerTransferEncodingTerminated(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if te := r.URL.Query().Get("te"); te != "" {
			w.Header().Set("Transfer-Encoding", te)
		}
		io.WriteString(w, r.URL.Path)
	}))
	c := dial(t, addr)
	c.send(get("a", "/a?te=chunked") + get("a", "/b") + get("a", "/c?te=gzip") + get("a", "/d"))
	for _, tt := range []struct {
		want string
		te   []string
	}{
		{"/a", []string{"chunked"}},
		{"/b", nil},
	} {
		res, body := c.response("GET")
		if body != tt.want || strings.Join(res.TransferEncoding, ",") != strings.Join(tt.te, ",") {
			t.Fatalf("got %q, Transfer-Encoding %v; want %q, %v", body, res.TransferEncoding, tt.want, tt.te)
		}
	}
	// net/http's client does not decode gzip framing: read the raw bytes.
	c.c.SetReadDeadline(time.Now().Add(time.Second))
	raw, _ := io.ReadAll(c.br)
	if !strings.Contains(string(raw), "\r\n\r\n2\r\n/c\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n") {
		t.Errorf("gzip: got %q; want chunk /c, then the last chunk, then /d's response", raw)
	}
}

// Issue: the client-gone watch read a byte into the one-byte buffer that
// still held the byte of an earlier watch, when the requests in between
// were already buffered: a byte of the stream was lost.
func TestWatchKeepsPendingByte(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			time.Sleep(100 * time.Millisecond) // past watchDelay: the watch reads
		}
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	c := dial(t, addr)
	c.send(get("a", "/slow1") + get("a", "/slow2")) // both buffered at once
	time.Sleep(30 * time.Millisecond)
	c.send(get("a", "/third")) // its first byte goes to /slow1's watch
	for _, want := range []string{"GET /slow1", "GET /slow2", "GET /third"} {
		if res, body := c.response("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q; want 200 %q", res.StatusCode, body, want)
		}
	}
}

// A body read after the handler has returned (a Transport still sending
// it, a goroutine not waited for) fails, as with net/http: it must never
// read the next request's body, on this connection or another.
func TestBodyReadAfterHandlerReturns(t *testing.T) {
	late := make(chan io.Reader, 1)
	next := make(chan struct{})
	lateRead := make(chan string, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/leak":
			late <- r.Body
		case "/next":
			close(next)
			<-lateRead // the late read is done: what is left is ours
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	}))
	go func() {
		body := <-late
		<-next
		b, err := io.ReadAll(body)
		lateRead <- string(b)
		if err == nil {
			t.Errorf("late read: got %q, no error; want an error", b)
		}
	}()
	c := dial(t, addr)
	c.send("POST /leak HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	c.response("POST")
	c.send("POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nsecret")
	if res, body := c.response("POST"); body != "secret" {
		t.Errorf("next request: got %d %q; want its body \"secret\"", res.StatusCode, body)
	}
}

// A connection accepted before Shutdown whose request comes after it
// started is served (with Connection: close), as net/http does for a
// connection younger than 5 seconds (issue 22682): a client does not retry
// a request that failed on a fresh connection.
func TestShutdownServesNewConnection(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	addr, served := serve(t, s)
	fresh := dial(t, addr)
	time.Sleep(20 * time.Millisecond) // accepted
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	fresh.send(get("a", "/late"))
	if res, body := fresh.response("GET"); res.StatusCode != 200 || body != "/late" || !res.Close {
		t.Errorf("got %d %q close=%v; want 200 /late, close", res.StatusCode, body, res.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v; want http.ErrServerClosed", err)
	}
}

// A new connection that says nothing is closed by Shutdown once it is
// newConnGrace old, even with a longer ReadHeaderTimeout.
func TestShutdownClosesSilentNewConnection(t *testing.T) {
	defer func(d time.Duration) { newConnGrace = d }(newConnGrace)
	newConnGrace = 300 * time.Millisecond
	s := &Server{Handler: echo, ReadHeaderTimeout: time.Minute}
	addr, served := serve(t, s)
	silent := dial(t, addr)
	time.Sleep(20 * time.Millisecond) // accepted
	start := time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("Shutdown returned after %v; want about newConnGrace (300ms)", d)
	}
	if !silent.closed(time.Second) {
		t.Error("silent connection still open after Shutdown")
	}
	<-served
}

// A new connection that says nothing is closed after ReadHeaderTimeout
// from the accept, as net/http does, not after the (longer) IdleTimeout.
func TestFirstRequestHeaderTimeout(t *testing.T) {
	addr, _ := startH1(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 10 * time.Second
	})
	c := dial(t, addr)
	start := time.Now()
	if !c.closed(5 * time.Second) {
		t.Fatal("silent connection still open after 5s")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent connection closed after %v; want about ReadHeaderTimeout (200ms)", d)
	}
	// A header begun at once still has ReadHeaderTimeout from the accept.
	c = dial(t, addr)
	start = time.Now()
	c.send("GET / HTTP/1.1\r\n")
	time.Sleep(100 * time.Millisecond)
	c.send("Host: a\r\n")
	rest, _ := c.rest()
	if d := time.Since(start); rest != "" || d > 2*time.Second {
		t.Errorf("got %q after %v; want nothing, closed after ~200ms", rest, d)
	}
}

// The Content-Length a response goes out with is the one the framing
// follows: a header map kept by the handler and changed after WriteHeader
// must not make them differ (net/http copies the map at WriteHeader).
func TestContentLengthChangedAfterWriteHeader(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Length", "3")
		w.WriteHeader(http.StatusOK)
		switch r.URL.Path {
		case "/change":
			h.Set("Content-Length", "100")
		case "/remove":
			h.Del("Content-Length")
		}
		io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
	}))
	c := dial(t, addr)
	c.send(get("a", "/change") + get("a", "/remove") + get("a", "/last"))
	for range 3 {
		if res, body := c.response("GET"); res.StatusCode != 200 || body != "abc" || res.ContentLength != 3 {
			t.Fatalf("got %d %q Content-Length %d; want 200 abc 3", res.StatusCode, body, res.ContentLength)
		}
	}
}

// A late read still waiting for body bytes when the response is done is
// ended: the connection closes (its framing is lost) and the read fails,
// where net/http would wait for the client.
func TestBodyReadBlockedAfterHandlerReturns(t *testing.T) {
	lateErr := make(chan error, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reading := make(chan struct{})
		go func() {
			buf := make([]byte, 10)
			n, _ := r.Body.Read(buf) // the 2 bytes sent
			close(reading)
			_, err := io.ReadFull(r.Body, buf[n:]) // the rest never comes
			lateErr <- err
		}()
		<-reading
		time.Sleep(20 * time.Millisecond) // the goroutine blocks in its read
		io.WriteString(w, "ok")
	}))
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
	if res, body := c.response("POST"); res.StatusCode != 200 || body != "ok" || !res.Close {
		t.Errorf("got %d %q close=%v; want 200 ok, close", res.StatusCode, body, res.Close)
	}
	if !c.closed(2 * time.Second) {
		t.Error("connection not closed")
	}
	select {
	case err := <-lateErr:
		if err == nil {
			t.Error("late read: no error")
		}
	case <-time.After(2 * time.Second):
		t.Error("late read still blocked 2s after the response")
	}
}

// Every way a connection ends leaves no goroutine (goleak, in TestMain) and
// no file descriptor behind.
func TestNoLeakAfterErrors(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	before := fds()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/wait":
			<-r.Context().Done()
		case "/read":
			io.ReadAll(r.Body)
		}
		io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 100 * time.Millisecond, MaxHeaderBytes: 1 << 10, ErrorLog: zap.NewNop()}
	addr, served := serve(t, s)
	for _, raw := range []string{
		"GET /panic HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /abort HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 8<<10) + "\r\n\r\n", // 431
		"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",                                        // 400
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",              // 501
		"POST /read HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", // bad chunk
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc",           // body too big to drain
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n", // header timeout
		"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		c := dial(t, addr)
		c.send(raw)
		time.Sleep(20 * time.Millisecond)
		c.c.Close() // client gone, before or after the answer
	}
	// A request in flight and an idle connection at Shutdown.
	idle := dial(t, addr)
	idle.send(get("a", "/"))
	idle.response("GET")
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-served
	idle.c.Close()
	// Closed sockets can take a moment to leave the table.
	for i := 0; fds() > before && i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if n := fds(); n > before {
		t.Errorf("%d file descriptors open after Shutdown; want %d as before", n, before)
	}
}

// The CRLF a client may send after a POST's body (tolerated, as net/http)
// does not pass for the end of the next request's header: the header
// timeout still applies to it.
func TestHeaderTimeoutAfterStrayCRLF(t *testing.T) {
	addr, _ := startH1(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 10 * time.Second
	})
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	if res, body := c.response("POST"); body != "POST a hi" {
		t.Fatalf("got %d %q; want POST a hi", res.StatusCode, body)
	}
	start := time.Now()
	c.send("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n") // never ends
	rest, _ := c.rest()
	if d := time.Since(start); rest != "" || d > 2*time.Second {
		t.Errorf("got %q after %v; want nothing, closed after ~200ms", rest, d)
	}
}

// The Content-Type is sniffed from the first 512 bytes of the body, however
// the handler's writes split them: a first write too big to be held, or a
// short one then a big one (net/http sniffs what its buffer flushes).
func TestSniffAcrossWrites(t *testing.T) {
	html := "<html>" + strings.Repeat("x", 5000)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/one":
			io.WriteString(w, html)
		case "/two":
			io.WriteString(w, html[:3])
			io.WriteString(w, html[3:])
		}
	}))
	c := dial(t, addr)
	for _, path := range []string{"/one", "/two"} {
		c.send(get("a", path))
		res, body := c.response("GET")
		if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" || body != html {
			t.Errorf("%s: got Content-Type %q, %d bytes; want text/html, %d", path, ct, len(body), len(html))
		}
	}
}

// A client gone halfway through its request body: the handler's read
// fails and the request's context is done by then, as with net/http
// (handleReadError), so that the handler can tell a client gone (realroot
// logs 499) from a malformed body (400). Checked on both servers.
func TestBodyReadErrorCancelsContext(t *testing.T) {
	got := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		if err == nil {
			got <- errors.New("body read: no error")
			return
		}
		got <- r.Context().Err()
	})
	for name, addr := range map[string]string{"h1": func() string { a, _ := startH1(t, h); return a }(), "net/http": startStd(t, h)} {
		c := dial(t, addr)
		c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 50))
		time.Sleep(20 * time.Millisecond)
		c.c.Close()
		select {
		case err := <-got:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: context after the failed body read: %v; want %v", name, err, context.Canceled)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the handler's body read did not fail", name)
		}
	}
}
