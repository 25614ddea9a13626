package h1

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHeaderTimeout(t *testing.T) {
	addr, _ := startH1(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 5 * time.Second
	})
	c := dial(t, addr)
	start := time.Now()
	c.send("GET / HTTP/1.1\r\nHost: a\r\n") // never ends
	rest, _ := c.rest()
	if d := time.Since(start); rest != "" || d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("got %q after %v; want nothing, closed after ~200ms", rest, d)
	}
}

func TestIdleTimeout(t *testing.T) {
	addr, _ := startH1(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 5 * time.Second
		s.IdleTimeout = 300 * time.Millisecond
	})
	c := dial(t, addr)
	for range 3 { // well within the idle timeout: kept
		c.send(get("a", "/"))
		if res, _ := c.response("GET"); res.StatusCode != 200 {
			t.Fatalf("got %d; want 200", res.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	if !c.closed(3 * time.Second) {
		t.Fatal("kept connection not closed after IdleTimeout")
	}
	// The deadline was armed lazily: up to IdleTimeout/16 early, never late.
	if d := time.Since(start); d > time.Second {
		t.Errorf("closed after %v idle; want about 200ms", d)
	}
}

// clientGone serves requests whose handler reports when r.Context() is done.
func clientGone(t *testing.T) (string, chan time.Time) {
	done := make(chan time.Time, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			done <- time.Now()
		case <-time.After(5 * time.Second):
			t.Error("r.Context() not done 5s after the client went")
		}
	}))
	return addr, done
}

func TestClientGoneCancelsContext(t *testing.T) {
	for _, tt := range []struct{ name, req string }{
		{"GET", get("a", "/")},
		{"POST", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, done := clientGone(t)
			c := dial(t, addr)
			c.send(tt.req)
			time.Sleep(50 * time.Millisecond) // the handler runs past watchDelay
			closed := time.Now()
			c.c.Close()
			if d := (<-done).Sub(closed); d > watchDelay+200*time.Millisecond {
				t.Errorf("r.Context() done %v after the close; want within watchDelay", d)
			}
		})
	}
	// Closed before watchDelay: noticed once it has passed.
	addr, done := clientGone(t)
	c := dial(t, addr)
	c.send(get("a", "/"))
	closed := time.Now()
	c.c.Close()
	if d := (<-done).Sub(closed); d > watchDelay+200*time.Millisecond {
		t.Errorf("early close: r.Context() done %v after the close; want within watchDelay", d)
	}
}

// A connection's timer is armed by the first of its requests and outlives
// the quick ones: a long request that starts while it is pending for an
// earlier one gets it re-armed, and is still watched.
func TestClientGoneAfterQuickRequests(t *testing.T) {
	done := make(chan time.Time, 1)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			return
		}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
			t.Error("r.Context() not done 5s after the client went")
		}
		done <- time.Now()
	}))
	c := dial(t, addr)
	for range 3 {
		c.send(get("a", "/quick"))
		if res, _ := c.response("GET"); res.StatusCode != 200 {
			t.Fatalf("got %d; want 200", res.StatusCode)
		}
	}
	c.send(get("a", "/wait"))
	time.Sleep(3 * watchDelay) // past the re-armed timer too
	closed := time.Now()
	c.c.Close()
	if d := (<-done).Sub(closed); d > 2*watchDelay+200*time.Millisecond {
		t.Errorf("r.Context() done %v after the close; want within 2*watchDelay", d)
	}
}

func TestPipelinedWhileHandlerRuns(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(100 * time.Millisecond) // the watch reads the next request's first byte
		}
		if err := r.Context().Err(); err != nil {
			t.Errorf("%s: context %v; want live", r.URL.Path, err)
		}
		io.WriteString(w, r.URL.Path)
	}))
	c := dial(t, addr)
	c.send(get("a", "/slow"))
	time.Sleep(30 * time.Millisecond)
	c.send(get("a", "/next"))
	for _, want := range []string{"/slow", "/next"} {
		if res, body := c.response("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q; want 200 %q", res.StatusCode, body, want)
		}
	}
	// Then a half-sent request during a slow handler: completed later.
	c.send(get("a", "/slow") + "GET /third HTTP/1.1\r\n")
	time.Sleep(150 * time.Millisecond)
	c.send("Host: a\r\n\r\n")
	for _, want := range []string{"/slow", "/third"} {
		if res, body := c.response("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q; want 200 %q", res.StatusCode, body, want)
		}
	}
}

func TestResponseControllerDeadlines(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Errorf("SetReadDeadline: %v", err)
		}
		if err := rc.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
		_, err := io.ReadAll(r.Body)
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("body read past the deadline: got %v; want a timeout", err)
		}
		w.WriteHeader(http.StatusRequestTimeout)
	}))
	c := dial(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
	if res, _ := c.response("POST"); res.StatusCode != http.StatusRequestTimeout || !res.Close {
		t.Errorf("got %d close=%v; want 408 and close", res.StatusCode, res.Close)
	}
}
