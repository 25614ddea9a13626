package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"realroot/internal/h2raw"
	"realroot/internal/phpfpmtest"
)

// TestH2ClientStopsReading: over HTTP/2 a client can stop a response by
// flow control, not at the socket: it answers SETTINGS and PING but gives
// the stream no window. The stream is reset after send-timeout, and the
// php-fpm worker that streamed into it is free again; before, the handler
// and the worker waited for ever on a healthy connection. A response that
// pauses between two writes, to a client that reads, is not cut.
func TestH2ClientStopsReading(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	dir := site(t)
	pub := filepath.Join(dir, "releases", "1", "public")
	for name, text := range map[string]string{
		"big.php":   `<?php $b = str_repeat('x', 65536); for ($i = 0; $i < 512; $i++) { echo $b; flush(); }`,
		"pause.php": `<?php while (ob_get_level()) ob_end_flush(); echo "a"; flush(); usleep(900000); echo "b";`,
	} {
		if err := os.WriteFile(filepath.Join(pub, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0", "--max-conns", "1",
		"--send-timeout", "300ms", "--h2c")
	defer func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) }()

	// 0.9s between two writes: not cut (the deadline is lifted after each
	// write). Not compressed: compression would hold "a" to the end.
	tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(p.url("/pause.php"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "ab" || err != nil {
		t.Fatalf("GET /pause.php over HTTP/2: %s %d %q %v; want 200 \"ab\"", resp.Proto, resp.StatusCode, b, err)
	}

	c := h2raw.Dial(t, p.addr)
	c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, 1, c.Request("GET", "/big.php")))
	// The client reads every frame, acknowledges SETTINGS and PING, and
	// never sends WINDOW_UPDATE.
	done := make(chan h2raw.StreamEnd, 1)
	go func() { done <- c.ReadStream(1) }()
	// PHP's one worker is needed meanwhile.
	if status, body, err := get(&http.Client{Timeout: 10 * time.Second}, p.url("/index.php")); status != 200 || body != "release 1 param=-" {
		t.Errorf("GET /index.php while an HTTP/2 client gives no window: %d %q %v; want 200 (php-fpm's one worker free)", status, body, err)
	}
	e := <-done
	if !e.Reset || len(e.Data) > 65535 {
		t.Errorf("the stream without window: %d bytes of DATA, reset %v, %v; want it reset after send-timeout, at most 65,535 bytes", len(e.Data), e.Reset, e.Err)
	}
	// The line is written once the handler's write returns, which may be
	// after the client read the reset.
	eventually(t, 5*time.Second, func() string {
		if n := len(p.logged("client took nothing for send-timeout: stream reset")); n != 1 {
			return fmt.Sprintf("%d send-timeout log lines; want 1", n)
		}
		return ""
	})
}

// TestH2NoResetAfterResponse: a response sent whole (END_STREAM) is its
// stream's end. Found by a review: the deadline set for the HTTP/2 server's
// last flush, after the handler returned, could reach Go's HTTP/2 server
// after the stream closed, which then made a timer nothing stopped, and
// send-timeout later sent RST_STREAM(INTERNAL_ERROR) on the closed stream
// (6–24 of 1,000 streams here), which RFC 9113 §5.1 lets a client treat as
// a connection error.
func TestH2NoResetAfterResponse(t *testing.T) {
	dir := site(t)
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "127.0.0.1:1", "--listen", "127.0.0.1:0",
		"--send-timeout", "400ms", "--h2c")
	defer func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) }()

	c := h2raw.Dial(t, p.addr)
	hdrs := c.Request("GET", "/style.css")
	const streams, rounds = 50, 20
	ended := map[uint32]time.Time{}
	var resets []uint32
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	handle := func(f h2raw.Frame) {
		switch {
		case (f.Type == h2raw.Data || f.Type == h2raw.Headers) && f.Flags&h2raw.EndStream != 0:
			ended[f.Stream] = time.Now()
		case f.Type == h2raw.RSTStream:
			if at, ok := ended[f.Stream]; ok {
				resets = append(resets, f.Stream)
				if len(resets) <= 3 {
					t.Logf("stream %d: RST_STREAM code %x, %v after its END_STREAM", f.Stream, f.Payload, time.Since(at).Round(time.Millisecond))
				}
			}
		case f.Type == h2raw.GoAway:
			t.Fatalf("GOAWAY %x", f.Payload)
		}
	}
	for round := range rounds {
		// streams requests at once, the next round once they all ended.
		var batch []byte
		for i := range streams {
			batch = append(batch, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, uint32(2*(round*streams+i)+1), hdrs)...)
		}
		c.Send(t, batch)
		for len(ended) < (round+1)*streams {
			f, err := c.Next()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			handle(f)
		}
	}
	// The client stays, reading, for 4 times send-timeout.
	c.SetReadDeadline(time.Now().Add(1600 * time.Millisecond))
	for {
		f, err := c.Next()
		if err != nil {
			break
		}
		handle(f)
	}
	if len(resets) > 0 {
		t.Errorf("%d of %d streams that ended with END_STREAM got a RST_STREAM later (streams %v): send-timeout's deadline outlived the stream", len(resets), streams*rounds, resets)
	}
}

// BenchmarkH2Writes: an HTTP/2 (h2c) request whose handler writes and
// flushes 16 small chunks, with and without streamSendTimeout: what the
// stream deadlines cost (two messages to the connection's goroutine and a
// timer for each guarded write or flush).
func BenchmarkH2Writes(b *testing.B) {
	log := zap.NewNop()
	chunk := make([]byte, 512)
	for _, wrap := range []bool{false, true} {
		name := "plain"
		if wrap {
			name = "streamSendTimeout"
		}
		b.Run(name, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var sw *streamSendTimeout
				if wrap {
					sw = newStreamSendTimeout(w, r, time.Minute, log)
					w = sw
				}
				for range 16 {
					w.Write(chunk)
					w.(http.Flusher).Flush()
				}
				if sw != nil {
					sw.done()
				}
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			defer srv.Close()
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
