package h1

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestExpectContinue(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ignore" {
			io.WriteString(w, "no thanks")
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		w.Write(b)
	}))

	// The client waits for 100 Continue before it sends the body.
	c := dial(t, addr)
	c.send("PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want 100 Continue", line, err)
	}
	if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("got %q after 100 Continue; want CRLF", blank)
	}
	c.send("hello")
	if res, body := c.response("PUT"); res.StatusCode != 200 || body != "hello" || res.Close {
		t.Fatalf("got %d %q close=%v; want 200 hello, kept", res.StatusCode, body, res.Close)
	}

	// The handler answers without reading: no 100, the connection closes.
	c.send("PUT /ignore HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	res, body := c.response("PUT")
	if res.StatusCode != 200 || body != "no thanks" || !res.Close {
		t.Fatalf("got %d %q close=%v; want 200 \"no thanks\", close", res.StatusCode, body, res.Close)
	}

	// net/http's client waits for 100 Continue too.
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("PUT", "http://"+addr+"/echo", strings.NewReader("world"))
	req.Header.Set("Expect", "100-continue")
	res, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "world" {
		t.Errorf("net/http client: got %q; want world", b)
	}
}

func TestExpectationFailed(t *testing.T) {
	rejected := make(chan rejection, 2)
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("handler called")
	}), func(s *Server) { recordRejected(s, rejected) })
	raw := rawRoundTrip(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx")
	if got := statusLine(raw); got != "HTTP/1.1 417 Expectation Failed" {
		t.Errorf("got %q; want 417", got)
	}
	expectRejected(t, rejected, raw)
}

func TestUnreadBodyDrained(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			r.Body.Close()
			if _, err := r.Body.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
				t.Errorf("read after Close: got %v; want http.ErrBodyReadAfterClose", err)
			}
		}
		io.WriteString(w, "ok")
	}))
	for _, tt := range []struct {
		name, path string
		size       int
		chunked    bool
		wantKept   bool
	}{
		{"small", "/", 1000, false, true},
		{"small chunked", "/", 1000, true, true},
		{"256 KiB", "/", maxDrain, false, true},
		{"closed by handler", "/close", 5000, false, true},
		{"over 256 KiB", "/", maxDrain + 1, false, false},
		{"over 256 KiB chunked", "/", maxDrain + 10, true, false},
		{"over 256 KiB closed", "/close", 1 << 20, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			body := strings.Repeat("x", tt.size)
			req := "POST " + tt.path + " HTTP/1.1\r\nHost: a\r\n"
			if tt.chunked {
				req += "Transfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n0\r\n\r\n"
			} else {
				req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			}
			go c.c.Write([]byte(req)) // may block: the server does not read it all
			res, got := c.response("POST")
			if res.StatusCode != 200 || got != "ok" {
				t.Fatalf("got %d %q; want 200 ok", res.StatusCode, got)
			}
			if res.Close == tt.wantKept {
				t.Errorf("Connection: close: got %v; want %v", res.Close, !tt.wantKept)
			}
			if !tt.wantKept {
				return
			}
			c.send(get("a", "/"))
			if res, got := c.response("GET"); res.StatusCode != 200 || got != "ok" {
				t.Errorf("next request: got %d %q; want 200 ok", res.StatusCode, got)
			}
		})
	}
}

// TestRefusedBodyAnswered: a handler that refuses a large body unread and
// says Connection: close (realroot's 413) gets its answer to a client still
// sending, not a reset: the close waits for the client (or 500 ms).
func TestRefusedBodyAnswered(t *testing.T) {
	addr, _ := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "too large")
	}))
	for i := range 5 {
		resp, err := http.Post("http://"+addr+"/", "application/octet-stream", strings.NewReader(strings.Repeat("x", 4<<20)))
		if err != nil {
			t.Fatalf("POST %d: %v; want the 413", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too large" {
			t.Errorf("POST %d: %d %q; want 413 too large", i, resp.StatusCode, body)
		}
	}
}
