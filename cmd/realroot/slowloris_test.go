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
				dialer := smallRecvDialer()
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
