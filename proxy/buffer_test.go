package proxy

import (
	"bufio"
	"errors"
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

func newFakeServer(t *testing.T, opts Options, fake fcgitest.Handler) *httptest.Server {
	t.Helper()
	dir := newDeploy(t, map[string]string{"index.php": "<?php", "big.php": "<?php"}, "A")
	srv := fcgitest.Start(t, fake)
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket}, opts)
	ts := newTestServer(t, h)
	t.Cleanup(ts.Close)
	return ts
}

// TestBufferedResponse: with BufferResponses, php-fpm's whole response is
// read (past memory into a temp file) before the client gets it, with a
// Content-Length; php-fpm failing midway is a clean 502, not a cut body.
func TestBufferedResponse(t *testing.T) {
	big := strings.Repeat("0123456789", 300_000) // 3 MB: past BufferMemory, into a file
	ts := newFakeServer(t, Options{BufferResponses: true, BufferMemory: 64 << 10},
		func(req *fcgitest.Request, w io.Writer) error {
			io.WriteString(w, "Content-Type: text/plain\r\n\r\n")
			if req.Params["SCRIPT_NAME"] == "/big.php" {
				_, err := io.WriteString(w, big)
				return err
			}
			io.WriteString(w, "half a resp")
			return errors.New("die before FCGI_END_REQUEST")
		})

	// Uncompressed (a compressed response has no Content-Length).
	resp, err := identityClient.Get(ts.URL + "/big.php")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != big || resp.ContentLength != int64(len(big)) {
		t.Fatalf("big.php: %d, %d bytes (Content-Length %d), %v; want 200 and %d bytes", resp.StatusCode, len(b), resp.ContentLength, err, len(big))
	}

	resp, err = http.Get(ts.URL + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(b), "half") {
		t.Fatalf("truncated upstream, buffered: %d %q; want a clean 502", resp.StatusCode, b)
	}
}

// TestStreamedTruncation: without buffering, a response php-fpm cuts short
// after the status went out aborts the client connection: the client sees
// an error, never a clean end.
//
// With compression the short first part is held (the compressor has not
// decided yet) and never sent: the client sees the connection end before a
// status, which is as much an error.
func TestStreamedTruncation(t *testing.T) {
	fake := func(req *fcgitest.Request, w io.Writer) error {
		io.WriteString(w, "Content-Type: text/plain\r\n\r\nfirst part, ")
		if req.Params["QUERY_STRING"] == "long" { // 6 KiB: past CompressMinSize, or held below a big one
			io.WriteString(w, strings.Repeat("more, ", 1000))
		}
		return errors.New("die before FCGI_END_REQUEST")
	}
	for _, opts := range []Options{{}, {CompressMinSize: 64 << 10}} {
		ts := newFakeServer(t, opts, fake)
		for _, c := range []struct {
			name   string
			client *http.Client
		}{{"identity", identityClient}, {"gzip", http.DefaultClient}} {
			for _, q := range []string{"short", "long"} {
				resp, err := c.client.Get(ts.URL + "/index.php?" + q)
				if err != nil {
					continue // aborted before the status: an error too
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("%s, %s, min size %d: truncated response read as complete: %d, %d bytes",
						c.name, q, opts.CompressMinSize, resp.StatusCode, len(b))
				}
			}
		}
	}
}

// identityClient asks for responses uncompressed (no Accept-Encoding), and
// follows no redirect.
var identityClient = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// TestBufferedStreamsEvents: text/event-stream is never buffered, even with
// BufferResponses on.
func TestBufferedStreamsEvents(t *testing.T) {
	gate := make(chan struct{})
	ts := newFakeServer(t, Options{BufferResponses: true}, func(req *fcgitest.Request, w io.Writer) error {
		io.WriteString(w, "Content-Type: text/event-stream\r\n\r\ndata: one\n\n")
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
			io.WriteString(w, "data: gate never opened\n\n")
			return nil
		}
		_, err := io.WriteString(w, "data: two\n\n")
		return err
	})
	resp, err := http.Get(ts.URL + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	close(gate)
	if rest, _ := io.ReadAll(br); string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest = %q", rest)
	}
}

// TestBufferedContentLength: a buffered response's whole length is known,
// so PHP's own Content-Length is held to it: a body shorter than declared
// is a clean 502 (php-fpm's truncation), a longer one is cut at the
// declared length as nginx does, in memory and from a temp file alike,
// and the connection stays in step. HEAD gets no made-up Content-Length.
// TestStreamedContentLength: without buffering too, a body longer than PHP's
// Content-Length is cut at it, within the first read or after many, and sent
// at once, even while PHP goes on; the same length twice counts once, two
// different ones are a 502; the client's connection stays usable.
func TestStreamedContentLength(t *testing.T) {
	big := strings.Repeat("0123456789", 20_000) // 200 KB: many reads
	release := make(chan struct{})
	ts := newFakeServer(t, Options{}, func(req *fcgitest.Request, w io.Writer) error {
		if req.Params["SCRIPT_NAME"] == "/big.php" {
			fmt.Fprintf(w, "Content-Length: 150003\r\n\r\n%s", big)
			return nil
		}
		switch req.Params["QUERY_STRING"] {
		case "twice":
			io.WriteString(w, "Content-Length: 4\r\nContent-Length: 4\r\n\r\n0123456789")
		case "differ":
			io.WriteString(w, "Content-Length: 4\r\nContent-Length: 5\r\n\r\n0123456789")
		case "stall": // more than declared, then PHP goes on for as long as the test
			io.WriteString(w, "Content-Length: 4\r\n\r\n0123456789")
			<-release
		default:
			io.WriteString(w, "Content-Length: 4\r\n\r\n0123456789")
		}
		return nil
	})
	t.Cleanup(func() { close(release) }) // before the fake server stops: LIFO
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // "stall" would hold it past
	br := bufio.NewReader(conn)
	for _, tt := range []struct {
		target string
		status int
		want   string
	}{
		{"/index.php", 200, "0123"}, {"/big.php", 200, big[:150_003]}, {"/index.php?twice", 200, "0123"},
		{"/index.php?differ", 502, ""}, {"/index.php?stall", 200, "0123"}, {"/index.php", 200, "0123"},
	} {
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", tt.target)
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: %v", tt.target, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != tt.status || tt.status == 200 && string(b) != tt.want {
			t.Fatalf("%s: %d, %d bytes, %v; want %d and %d bytes", tt.target, resp.StatusCode, len(b), err, tt.status, len(tt.want))
		}
		if cl := resp.Header.Values("Content-Length"); tt.status == 200 && len(cl) != 1 {
			t.Errorf("%s: Content-Length %q; want one", tt.target, cl)
		}
	}
}

func TestBufferedContentLength(t *testing.T) {
	big := strings.Repeat("0123456789", 20_000) // 200 KB: past BufferMemory, into a file
	ts := newFakeServer(t, Options{BufferResponses: true, BufferMemory: 64 << 10},
		func(req *fcgitest.Request, w io.Writer) error {
			body := "0123456789"
			if req.Params["SCRIPT_NAME"] == "/big.php" {
				body = big
			}
			switch req.Params["QUERY_STRING"] {
			case "short": // declares less than it sends
				fmt.Fprintf(w, "Content-Length: 4\r\n\r\n%s", body)
			case "long": // declares more than it sends
				fmt.Fprintf(w, "Content-Length: %d\r\n\r\n%s", len(body)+5, body)
			case "head":
				io.WriteString(w, "Content-Type: text/plain\r\n\r\n")
			}
			return nil
		})
	for _, script := range []string{"/index.php", "/big.php"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		get := func(method, q string) (*http.Response, string) {
			t.Helper()
			fmt.Fprintf(conn, "%s %s?%s HTTP/1.1\r\nHost: a\r\n\r\n", method, script, q)
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("%s %s?%s: %v", method, script, q, err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("%s %s?%s: body: %v", method, script, q, err)
			}
			return resp, string(b)
		}
		// All on one connection: a wrong framing would garble the next.
		if resp, b := get("GET", "short"); resp.StatusCode != 200 || b != "0123" || resp.ContentLength != 4 {
			t.Errorf("%s short: %d %q (Content-Length %d); want 200 %q", script, resp.StatusCode, b, resp.ContentLength, "0123")
		}
		if resp, b := get("HEAD", "head"); resp.StatusCode != 200 || b != "" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("%s HEAD: %d %q, Content-Length %q; want 200, none", script, resp.StatusCode, b, resp.Header.Get("Content-Length"))
		}
		if resp, b := get("GET", "long"); resp.StatusCode != http.StatusBadGateway || strings.Contains(b, "0123") {
			t.Errorf("%s long: %d %q; want a clean 502", script, resp.StatusCode, b)
		}
	}
}
