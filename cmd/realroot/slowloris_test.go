package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
)

// TestSlowloris: a client that trickles its request headers byte by byte is
// cut off after header-timeout (nginx's client_header_timeout), however
// long it keeps trickling, and the server goes on answering others.
func TestSlowloris(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	dir := site(t)
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0", "--header-timeout", "300ms")
	defer func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) }()

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() { // the server's answer, if any, then its close
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		closed <- time.Since(start)
	}()
	trickle := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)
	var took time.Duration
loop:
	for i := 0; i < len(trickle); i++ { // 100 ms a byte: ~12 s if never cut
		if _, err := c.Write([]byte{trickle[i]}); err != nil {
			break
		}
		select {
		case took = <-closed:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
	}
	if took == 0 {
		took = <-closed
	}
	if took > 5*time.Second {
		t.Fatalf("a trickling client was cut off after %v; want about the 300ms header timeout", took)
	}
	if status, _, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+p.addr+"/"); status != 200 {
		t.Fatalf("GET / after the slow client = %d, %v; want 200", status, err)
	}
}

// TestHTTP1Server: http1-server = lean serves plain listeners with proxy/h1
// (said in the serving line) and PHP and static answers come through it;
// with h2c, net/http serves whatever http1-server says.
func TestHTTP1Server(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	dir := site(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http1-server", "lean"}, "lean"},
		{[]string{"--http1-server", "net/http"}, "net/http"},
		{[]string{"--http1-server", "lean", "--h2c"}, "net/http"},
	} {
		p := startRealroot(t, nil, append([]string{"--root", filepath.Join(dir, "current", "public"),
			"--fastcgi", "unix:" + fpm.Socket, "--listen", "127.0.0.1:0"}, tt.args...)...)
		if l := p.logged("serving"); len(l) != 1 || l[0]["http1_server"] != tt.want {
			t.Errorf("%v: serving line %v; want http1_server %q", tt.args, l, tt.want)
		}
		for _, path := range []string{"/", "/style.css"} {
			if code, body, err := get(http.DefaultClient, p.url(path)); err != nil || code != http.StatusOK || body == "" {
				t.Errorf("%v: GET %s = %d %q, %v", tt.args, path, code, body, err)
			}
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("%v: exit %d", tt.args, code)
		}
	}
}

// TestClientStopsReading: a client that asks for a large response and
// stops reading is cut off after send-timeout (nginx's send_timeout),
// static file or PHP, with either HTTP/1 server; a streamed PHP response's
// php-fpm worker is free again for the next request. Before send-timeout
// the connection waited for ever, and with it the worker.
func TestClientStopsReading(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	dir := site(t)
	pub := filepath.Join(dir, "releases", "1", "public")
	const size = 32 << 20
	if err := os.WriteFile(filepath.Join(pub, "big.bin"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	big := `<?php $b = str_repeat('x', 65536); for ($i = 0; $i < 512; $i++) { echo $b; flush(); }`
	if err := os.WriteFile(filepath.Join(pub, "big.php"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, server := range []string{"lean", "net/http"} {
		t.Run(server, func(t *testing.T) {
			p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
				"--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0", "--max-conns", "1",
				"--send-timeout", "300ms", "--http1-server", server)
			defer func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) }()
			for _, path := range []string{"/big.bin", "/big.php"} {
				dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
					return serr
				}}
				c, err := dialer.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				head := make([]byte, 1024)
				if _, err := io.ReadFull(c, head); err != nil || !strings.HasPrefix(string(head), "HTTP/1.1 200 ") {
					t.Fatalf("GET %s: %q, %v", path, head, err)
				}
				// The client stops reading; PHP's worker is needed
				// meanwhile.
				stalled := time.Now()
				if status, body, err := get(&http.Client{Timeout: 10 * time.Second}, p.url("/index.php")); status != 200 || body != "release 1 param=-" {
					t.Errorf("GET /index.php while a client stalls on %s: %d %q %v; want 200 (php-fpm's one worker free)", path, status, body, err)
				}
				if d := time.Since(stalled); d < 1500*time.Millisecond {
					time.Sleep(1500*time.Millisecond - d)
				}
				// It reads again: the connection was cut, the body is short.
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := io.Copy(io.Discard, c)
				if n >= size || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("GET %s, stalled 1.5s with send-timeout 300ms: then %d more bytes (%v); want the connection cut, the body short", path, n, err)
				}
			}
			if n := len(p.logged("client took nothing for send-timeout: connection cut")); n != 2 {
				t.Errorf("%d send-timeout log lines; want one for each of the 2 connections", n)
			}
		})
	}
}

// TestH2ClientStopsReading: over HTTP/2 a client can stop a response by
// flow control, not at the socket: it answers SETTINGS and PING but gives
// the stream no window. The stream is reset after send-timeout, and the
// php-fpm worker that streamed into it is free again; before, the handler
// and the worker waited for ever on a healthy connection.
func TestH2ClientStopsReading(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	dir := site(t)
	pub := filepath.Join(dir, "releases", "1", "public")
	big := `<?php $b = str_repeat('x', 65536); for ($i = 0; $i < 512; $i++) { echo $b; flush(); }`
	if err := os.WriteFile(filepath.Join(pub, "big.php"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	pause := `<?php while (ob_get_level()) ob_end_flush(); echo "a"; flush(); usleep(900000); echo "b";`
	if err := os.WriteFile(filepath.Join(pub, "pause.php"), []byte(pause), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0", "--max-conns", "1",
		"--send-timeout", "300ms", "--h2c")

	// A response that pauses 0.9s between two writes, to a client that
	// reads: not cut (the deadline is lifted after each write). Not
	// compressed: compression would hold "a" to the end.
	tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(p.url("/pause.php")); err != nil {
		t.Fatal(err)
	} else {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "ab" || err != nil {
			t.Fatalf("GET /pause.php over HTTP/2: %s %d %q %v; want 200 \"ab\"", resp.Proto, resp.StatusCode, b, err)
		}
	}
	defer func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) }()

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := func(typ, flags byte, stream uint32, payload []byte) []byte {
		n := len(payload)
		b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
		return append(b, payload...)
	}
	hpackLit := func(index byte, v string) []byte { // literal, indexed name, no Huffman
		return append([]byte{0x40 | index, byte(len(v))}, v...)
	}
	hdrs := []byte{0x82, 0x86} // :method GET, :scheme http
	hdrs = append(hdrs, hpackLit(4, "/big.php")...)
	hdrs = append(hdrs, hpackLit(1, p.addr)...)
	req := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	req = append(req, frame(0x4, 0, 0, nil)...)    // SETTINGS: the default 65,535-byte windows
	req = append(req, frame(0x1, 0x5, 1, hdrs)...) // HEADERS, END_STREAM | END_HEADERS
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// The client reads every frame, acknowledges SETTINGS and PING, and
	// never sends WINDOW_UPDATE.
	type result struct {
		data  int
		reset bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		head := make([]byte, 9)
		for {
			if _, r.err = io.ReadFull(c, head); r.err != nil {
				done <- r
				return
			}
			n := int(head[0])<<16 | int(head[1])<<8 | int(head[2])
			payload := make([]byte, n)
			if _, r.err = io.ReadFull(c, payload); r.err != nil {
				done <- r
				return
			}
			stream := uint32(head[5]&0x7f)<<24 | uint32(head[6])<<16 | uint32(head[7])<<8 | uint32(head[8])
			switch typ, flags := head[3], head[4]; {
			case typ == 0x0 && stream == 1:
				r.data += n
			case typ == 0x3 && stream == 1: // RST_STREAM
				r.reset = true
				done <- r
				return
			case typ == 0x4 && flags&1 == 0:
				c.Write(frame(0x4, 1, 0, nil))
			case typ == 0x6 && flags&1 == 0:
				c.Write(frame(0x6, 1, 0, payload))
			case typ == 0x7: // GOAWAY
				done <- r
				return
			}
		}
	}()
	// PHP's one worker is needed meanwhile.
	if status, body, err := get(&http.Client{Timeout: 10 * time.Second}, p.url("/index.php")); status != 200 || body != "release 1 param=-" {
		t.Errorf("GET /index.php while an HTTP/2 client gives no window: %d %q %v; want 200 (php-fpm's one worker free)", status, body, err)
	}
	r := <-done
	if !r.reset || r.data > 65535 {
		t.Errorf("the stream without window: %d bytes of DATA, reset %v, %v; want it reset after send-timeout, at most 65,535 bytes", r.data, r.reset, r.err)
	}
	if n := len(p.logged("client took nothing for send-timeout: stream reset")); n != 1 {
		t.Errorf("%d send-timeout log lines; want 1", n)
	}
}
