package main

// Resource bounds, measured on the daemon running in the test process:
// memory and goroutines per idle keep-alive connection, memory while large
// uploads are spooled, and goroutines back to their baseline after faults.
// The figures are logged (go test -v -run 'Resource' ./cmd/realroot) and
// recorded in docs/reliability.md. Skipped with -short.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
)

// inProcess is the daemon serving in the test process.
type inProcess struct {
	base string
	sigs chan os.Signal
	errc chan error
	log  *syncBuffer
}

// startInProcess runs the daemon with c, as TestServeInProcess does; the
// test stops it with stop.
func startInProcess(t *testing.T, c conf.Config) *inProcess {
	t.Helper()
	c.Listen = []string{"127.0.0.1:0"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &inProcess{sigs: make(chan os.Signal, 1), errc: make(chan error, 1), log: &syncBuffer{}}
	d := newTestDaemon(t, c, p.log, func() (conf.Config, error) { return c, nil })
	addrc := make(chan net.Addr, 1)
	go func() { p.errc <- d.run(nil, nil, nil, p.sigs, func(a []net.Addr) { addrc <- a[0] }) }()
	select {
	case a := <-addrc:
		p.base = "http://" + a.String()
	case err := <-p.errc:
		t.Fatalf("run: %v", err)
	}
	return p
}

// stop sends SIGTERM and waits for run to return.
func (p *inProcess) stop(t *testing.T) {
	t.Helper()
	p.sigs <- syscall.SIGTERM
	select {
	case err := <-p.errc:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run still going 30s after SIGTERM")
	}
}

// verifyNoLeaks fails the test if goroutines it started outlive it. Call it
// first: its cleanup then runs last, after php-fpm's and the daemon's.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// memSnapshot is what the resource tests compare.
type memSnapshot struct {
	heapInuse, stackInuse, sys uint64
	goroutines                 int
}

func snapshot() memSnapshot {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSnapshot{m.HeapInuse, m.StackInuse, m.Sys, runtime.NumGoroutine()}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestResourceIdleConnections opens 1,000 keep-alive connections, each
// after one request, and leaves them idle: the daemon's heap and goroutines
// grow by a bounded amount per connection, and come back once they close.
func TestResourceIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	verifyNoLeaks(t)
	dir := site(t)
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.AccessLog = "off"
	p := startInProcess(t, c)
	defer p.stop(t)
	addr := strings.TrimPrefix(p.base, "http://")

	// Raw connections: the client side holds a socket each and nothing
	// else, so that what grows is the server's.
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	br := bufio.NewReader(nil)
	request := []byte("GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
	oneRequest := func(conn net.Conn) error {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(request); err != nil {
			return err
		}
		br.Reset(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || br.Buffered() != 0 {
			return fmt.Errorf("status %d, %d bytes buffered", resp.StatusCode, br.Buffered())
		}
		return conn.SetDeadline(time.Time{})
	}
	// Warm up: the first connection allocates what every later one shares.
	warm, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := oneRequest(warm); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	time.Sleep(100 * time.Millisecond)

	before := snapshot()
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, conn)
		if err := oneRequest(conn); err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
	}
	time.Sleep(200 * time.Millisecond) // every connection back to idle
	after := snapshot()

	heap := int64(after.heapInuse) - int64(before.heapInuse)
	stack := int64(after.stackInuse) - int64(before.stackInuse)
	sys := int64(after.sys) - int64(before.sys)
	g := after.goroutines - before.goroutines
	t.Logf("%d idle keep-alive connections: heap in use +%s (%.1f KiB each), stacks +%s (%.1f KiB each), "+
		"Sys +%s, goroutines +%d (%.2f each)", n, mib(heap), float64(heap)/n/1024, mib(stack),
		float64(stack)/n/1024, mib(sys), g, float64(g)/n)
	if g > n+50 {
		t.Errorf("goroutines +%d for %d idle connections; want at most one each", g, n)
	}
	if heap+stack > 64<<20 {
		t.Errorf("heap+stacks +%s for %d idle connections; want < 64 MiB (64 KiB each)", mib(heap+stack), n)
	}

	// Closing them gives everything back.
	for _, cn := range conns {
		cn.Close()
	}
	conns = conns[:0]
	waitGoroutines(t, before.goroutines)
}

// waitGoroutines waits up to 10s for the goroutine count to come down to
// want or below.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 10s later; want %d or fewer:\n%s", got, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alphabet repeats a-z over 1 MiB.
var alphabet = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// pattern is an endless request body that allocates nothing (and copies
// in blocks: a loop over bytes is slow under the race detector).
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], alphabet)
	}
	return n, nil
}

// uploadPHP reads the request body in chunks (memory_limit stays far) and
// prints its length.
const uploadPHP = `<?php $n = 0; $f = fopen('php://input', 'rb');
while (!feof($f)) { $n += strlen(fread($f, 1 << 20)); }
echo $n;`

// TestResourceUploads sends 10 uploads of 200 MiB at once (50 MiB under
// -race, to keep the package's run short), half with a
// Content-Length and half chunked, to a script that reads php://input and
// prints its length: each is spooled to a temp file, so the daemon's heap
// stays far below the 2 GB in flight, and PHP sees every byte.
func TestResourceUploads(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const clients = 10
	size := int64(200 << 20)
	if raceEnabled {
		size = 50 << 20 // the same bound, in a quarter of the time
	}
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: clients, INI: map[string]string{"post_max_size": "0"}})
	t.Setenv("TMPDIR", t.TempDir()) // the spool files, unlinked at once
	dir := site(t)
	for _, rel := range []string{"1", "2"} {
		if err := os.WriteFile(filepath.Join(dir, "releases", rel, "public", "upload.php"), []byte(uploadPHP), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.MaxBodySize = 0 // no limit
	c.MaxConns = clients
	c.AccessLog = "off"
	p := startInProcess(t, c)
	defer p.stop(t)

	before := snapshot()
	var peak memSnapshot
	sampleStop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-sampleStop:
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&m)
			peak.heapInuse = max(peak.heapInuse, m.HeapInuse)
			peak.sys = max(peak.sys, m.Sys)
			peak.goroutines = max(peak.goroutines, runtime.NumGoroutine())
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	results := make([]string, clients)
	for i := range clients {
		wg.Go(func() {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			var body io.Reader = io.LimitReader(pattern{}, size)
			if i%2 == 1 {
				body = io.MultiReader(body) // no length known: sent chunked
			}
			req, err := http.NewRequestWithContext(context.Background(), "POST", p.base+"/upload.php", body)
			if err != nil {
				results[i] = err.Error()
				return
			}
			if i%2 == 0 {
				req.ContentLength = size
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Minute}).Do(req)
			if err != nil {
				results[i] = err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = fmt.Sprintf("%d %s", resp.StatusCode, b)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(sampleStop)
	<-sampled

	for i, r := range results {
		if want := fmt.Sprintf("200 %d", size); r != want {
			t.Errorf("upload %d: %q; want %q", i, r, want)
		}
	}
	heap := int64(peak.heapInuse) - int64(before.heapInuse)
	sys := int64(peak.sys) - int64(before.sys)
	t.Logf("%d uploads of %s at once in %v (%.0f MB/s): peak heap in use +%s (base %s), peak Sys +%s, peak goroutines %d (base %d)",
		clients, mib(size), elapsed.Round(time.Millisecond), float64(clients*size)/1e6/elapsed.Seconds(),
		mib(heap), mib(int64(before.heapInuse)), mib(sys), peak.goroutines, before.goroutines)
	if heap > 100<<20 {
		t.Errorf("peak heap +%s during %d uploads of %s; want < 100 MiB: bodies must be spooled to disk",
			mib(heap), clients, mib(size))
	}
}

// TestResourceGoroutinesAfterFaults puts the daemon through faults
// (clients gone mid-request and mid-upload, php-fpm killed under slow
// requests and restarted, hostile requests) and checks that its goroutine
// count comes back to where it was, then that nothing is left after
// shutdown.
func TestResourceGoroutinesAfterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	dir := site(t)
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.MaxConns = 4
	c.AccessLog = "off"
	c.BodyTimeout = 500 * time.Millisecond
	p := startInProcess(t, c)
	defer p.stop(t)
	addr := strings.TrimPrefix(p.base, "http://")
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	if status, body, err := get(hc, p.base+"/"); status != 200 || err != nil {
		t.Fatalf("GET / = %d %q %v", status, body, err)
	}
	hc.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	// Clients gone mid-request: slow PHP requests cancelled.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/slow.php?ms=1000&i=%d", p.base, i), nil)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	// Clients gone mid-upload, and one that stalls past BodyTimeout.
	for i := range 3 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /index.php HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 1000))
		if i == 2 {
			// The server gives up after BodyTimeout with 408. (It should
			// close the connection then: see proxy's TestSlowBodyClosed.)
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if line, err := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 408 ") {
				t.Errorf("stalled upload: %q, %v; want 408", line, err)
			}
		}
		conn.Close()
	}
	// Hostile requests.
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"GET /index.php%00.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, raw)
		io.Copy(io.Discard, conn)
		conn.Close()
	}
	// php-fpm killed under slow requests, then restarted.
	for i := range 4 {
		wg.Go(func() {
			if resp, err := hc.Get(fmt.Sprintf("%s/slow.php?ms=2000&k=%d", p.base, i)); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	fpm.Restart(t)
	wg.Wait()
	if status, body, err := get(hc, p.base+"/"); status != 200 || err != nil {
		t.Errorf("GET / after the faults = %d %q %v", status, body, err)
	}
	hc.CloseIdleConnections()

	waitGoroutines(t, baseline)
	t.Logf("goroutines back to %d (baseline %d) after the faults", runtime.NumGoroutine(), baseline)
}
