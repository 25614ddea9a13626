// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package h1

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A pipelined request whose header is already buffered when a slow request
// (one the client-gone watch read for) ends inherits the past read deadline
// stopWatch set to end that read: waitRequest re-arms no deadline when the
// next header is whole in the buffer. The drain of its unread body then
// fails at once: its context is cancelled while the client is there, and
// the connection is closed. net/http re-arms the deadline per request.
func TestPipelinedAfterWatchDeadline(t *testing.T) {
	ctxErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(50 * time.Millisecond) // past watchDelay: the watch reads
		case "/upload":
			// Does not read the body (a 404, a static file): it is drained
			// when the response begins.
			io.WriteString(w, "ok")
			w.(http.Flusher).Flush()
			ctxErr <- r.Context().Err()
			return
		}
		io.WriteString(w, r.URL.Path)
	})
	body := strings.Repeat("x", 20<<10) // more than the 4 KiB read buffer
	for name, addr := range map[string]string{"h1": func() string { a, _ := startH1(t, h); return a }(), "net/http": startStd(t, h)} {
		c := dial(t, addr)
		// The upload's header comes with the slow request; its body is
		// still on its way when the slow request ends (a streamed upload).
		c.send(get("a", "/slow") + "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 20480\r\n\r\n" + body[:100])
		if res, got := c.response("GET"); got != "/slow" {
			t.Fatalf("%s: got %d %q; want /slow", name, res.StatusCode, got)
		}
		time.Sleep(10 * time.Millisecond)
		c.send(body[100:] + get("a", "/last"))
		res, got := c.response("POST")
		if err := <-ctxErr; err != nil {
			t.Errorf("%s: /upload's context after its flush: %v; want live (the client is there)", name, err)
		}
		if got != "ok" || res.Close {
			t.Errorf("%s: /upload: got %q close=%v; want ok, kept (20 KiB body drained)", name, got, res.Close)
			continue
		}
		if res, got := c.response("GET"); got != "/last" {
			t.Errorf("%s: /last: got %d %q", name, res.StatusCode, got)
		}
	}
}

// The drain of a body the handler left unread runs under the header
// deadline armed for the request's header: a handler that takes longer
// than ReadHeaderTimeout without reading the body (it is all in the
// kernel's buffer by then) gets its body "drain" failed at once, its
// context cancelled as the response begins, and its connection closed.
// net/http drains with the deadline lifted after the header.
func TestDrainUnderHeaderDeadline(t *testing.T) {
	ctxErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ignore" {
			time.Sleep(300 * time.Millisecond) // longer than ReadHeaderTimeout
			io.WriteString(w, "ok")
			w.(http.Flusher).Flush()
			ctxErr <- r.Context().Err()
			return
		}
		io.WriteString(w, r.URL.Path)
	})
	h1addr, _ := startH1(t, h, func(s *Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	stdaddr := startStdRHT(t, h, 200*time.Millisecond)
	body := strings.Repeat("x", 20<<10)
	for name, addr := range map[string]string{"h1": h1addr, "net/http": stdaddr} {
		c := dial(t, addr)
		c.send("POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 20480\r\n\r\n" + body)
		res, got := c.response("POST")
		if err := <-ctxErr; err != nil {
			t.Errorf("%s: context after the flush: %v; want live (the client is there)", name, err)
		}
		if got != "ok" || res.Close {
			t.Errorf("%s: got %q close=%v; want ok, kept (20 KiB body drained)", name, got, res.Close)
			continue
		}
		c.send(get("a", "/last"))
		if res, got := c.response("GET"); got != "/last" {
			t.Errorf("%s: /last: got %d %q", name, res.StatusCode, got)
		}
	}
}

// RFC 9112 section 6.3 (3): a request with both Transfer-Encoding and
// Content-Length may be processed by Transfer-Encoding alone, but
// "regardless, the server MUST close the connection after responding";
// section 6.1: an HTTP/1.0 message with Transfer-Encoding is to be taken
// as faulty framing, the connection closed after it. h1 (like net/http,
// which TestSmugglingAcceptedAsNetHTTP pins) keeps both connections and
// reads the next request from where its own framing ended: an upstream
// proxy that framed the request the other way is then desynchronised
// from realroot (CL.TE / TE.CL smuggling).
func TestAmbiguousFramingCloses(t *testing.T) {
	addr, _ := startH1(t, echo)
	for _, tt := range []struct{ name, give string }{
		{"1.1 chunked and content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"1.0 keep-alive with transfer-encoding", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi"},
	} {
		c := dial(t, addr)
		c.send(tt.give)
		res, _ := c.response("POST")
		if !res.Close {
			t.Errorf("%s: response without Connection: close; want the connection closed after it", tt.name)
		}
		if !c.closed(time.Second) {
			t.Errorf("%s: connection kept open; want it closed (RFC 9112 6.1, 6.3)", tt.name)
		}
	}
}
