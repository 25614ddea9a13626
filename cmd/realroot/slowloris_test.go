package main

import (
	"io"
	"net"
	"net/http"
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
