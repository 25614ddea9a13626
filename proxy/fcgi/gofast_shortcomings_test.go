package fcgi_test

// Why realroot owns its FastCGI wire exchange: each test reproduces one
// shortcoming of github.com/yookoala/gofast v0.8.0's client and handler
// against a real php-fpm (or a fake FastCGI server where php-fpm cannot show
// it), asserts that the bad behaviour happens, and logs the figure quoted in
// the README. A hang is bounded: no answer within hangBound counts as the
// reproduced hang.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
)

const hangBound = 2 * time.Second

var phpScripts = map[string]string{
	"hello.php": `<?php echo "ok";`,
	"big.php":   `<?php header('X-Big: '.str_repeat('a', 2000)); echo "body";`,
	"flush.php": `<?php
while (ob_get_level()) ob_end_flush();
header('Content-Type: text/plain');
echo "first\n"; flush();
usleep(300000);
echo "second\n";`,
	"len.php": `<?php echo strlen(file_get_contents('php://input'));`,
	// php-fpm cuts each stderr message at log_limit (1024 bytes): many short ones.
	"stderr.php": `<?php for ($i = 0; $i < 1024; $i++) error_log(str_repeat('x', 900)); echo "ok";`,
}

// phpRoot writes phpScripts into a fresh document root.
func phpRoot(t testing.TB) string {
	root := t.TempDir()
	for name, src := range phpScripts {
		if err := os.WriteFile(filepath.Join(root, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("gofast shortcomings: integration tests, skipped in -short mode")
	}
}

// serveGofast serves h with httptest; Close is bounded so a stuck gofast
// handler cannot hang the suite.
func serveGofast(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { srv.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("gofast test server: a handler is still stuck 5s after the test")
		}
	})
	return srv
}

func phpHandler(root, sock string) gofast.Handler {
	return gofast.NewHandler(gofast.NewPHPFS(root)(gofast.BasicSession),
		gofast.SimpleClientFactory(gofast.SimpleConnFactory("unix", sock)))
}

// a. One new php-fpm connection per request.
func TestGofastDialsPerRequest(t *testing.T) {
	skipShort(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	sock, accepted := countingProxy(t, fpm.Socket)
	srv := serveGofast(t, phpHandler(phpRoot(t), sock))

	const n = 100
	c := &http.Client{Timeout: hangBound}
	for i := range n {
		resp, err := c.Get(srv.URL + "/hello.php")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("request %d: body %q; want ok", i, body)
		}
	}
	got := accepted.Load()
	t.Logf("gofast: %d requests, %d connections to php-fpm (one dial per request)", n, got)
	if got != n {
		t.Errorf("got %d connections for %d requests; want %d (the shortcoming: one per request)", got, n, n)
	}
}

// countingProxy listens on a unix socket, forwards each connection to target
// and counts accepted connections.
func countingProxy(t *testing.T, target string) (string, *atomic.Int64) {
	dir, err := os.MkdirTemp("", "fcgi")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "proxy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				b, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer b.Close()
				go func() { io.Copy(b, c); b.(*net.UnixConn).CloseWrite() }()
				io.Copy(c, b)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return sock, &accepted
}

// b. A response header line longer than gofast's 1 KiB line buffer: gofast
// stops reading, its reader goroutine blocks on the pipe, and nothing is sent
// until the client gives up.
func TestGofastLongHeaderHangs(t *testing.T) {
	skipShort(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	logged := &phpfpmtest.Buffer{}
	prev := log.Writer()
	log.SetOutput(logged)
	t.Cleanup(func() { log.SetOutput(prev) }) // after the server's Close
	srv := serveGofast(t, phpHandler(phpRoot(t), fpm.Socket))

	c := &http.Client{Timeout: hangBound}
	start := time.Now()
	resp, err := c.Get(srv.URL + "/big.php")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET /big.php: status %d after %v; want no answer (gofast hangs on a header line over 1 KiB)",
			resp.StatusCode, time.Since(start).Round(time.Millisecond))
	}
	// The handler unblocks only once the client has gone.
	for deadline := time.Now().Add(time.Second); !strings.Contains(logged.String(), "long header") &&
		time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("gofast: 2,007-byte PHP header line: no answer within %v (%v); after the client left, gofast logged %q",
		hangBound, err, strings.TrimSpace(logged.String()))
}

// c. No flush: the client sees nothing until PHP has finished.
func TestGofastDoesNotFlush(t *testing.T) {
	skipShort(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	gf := phpHandler(phpRoot(t), fpm.Socket)
	var firstWrite atomic.Int64 // ns after the handler started
	srv := serveGofast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gf.ServeHTTP(&firstWriteRecorder{ResponseWriter: w, start: time.Now(), at: &firstWrite}, r)
	}))

	var ttfb time.Duration
	start := time.Now()
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { ttfb = time.Since(start) }}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), hangBound)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/flush.php", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "first\nsecond\n" {
		t.Fatalf("body %q; want first, second", body)
	}
	fw := time.Duration(firstWrite.Load())
	t.Logf("gofast: PHP flush() then 300ms sleep: gofast wrote the first bytes to the ResponseWriter after %v, "+
		"the client's first byte arrived after %v (never flushed)",
		fw.Round(time.Millisecond), ttfb.Round(time.Millisecond))
	if ttfb < 300*time.Millisecond {
		t.Errorf("time to first byte %v; want >= 300ms (the shortcoming: no flush)", ttfb)
	}
}

type firstWriteRecorder struct {
	http.ResponseWriter
	start time.Time
	at    *atomic.Int64
}

func (w *firstWriteRecorder) Write(p []byte) (int, error) {
	w.at.CompareAndSwap(0, int64(time.Since(w.start)))
	return w.ResponseWriter.Write(p)
}

// d. A chunked request body reaches PHP empty: no CONTENT_LENGTH is sent.
func TestGofastChunkedBodyLost(t *testing.T) {
	skipShort(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	srv := serveGofast(t, phpHandler(phpRoot(t), fpm.Socket))
	const size = 10000
	c := &http.Client{Timeout: hangBound}

	post := func(chunked bool) string {
		var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), size))
		if chunked {
			body = io.MultiReader(body) // hides the length: ContentLength -1
		}
		req, _ := http.NewRequest("POST", srv.URL+"/len.php", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	withLength, chunked := post(false), post(true)
	t.Logf("gofast: %d-byte body: PHP read %s bytes with Content-Length, %s bytes chunked", size, withLength, chunked)
	if withLength != fmt.Sprint(size) {
		t.Errorf("with Content-Length PHP read %s bytes; want %d", withLength, size)
	}
	if chunked != "0" {
		t.Errorf("chunked: PHP read %s bytes; want 0 (the shortcoming)", chunked)
	}
}

// e. php-fpm dying mid-response: gofast answers 200 with a truncated body.
func TestGofastTruncationIs200(t *testing.T) {
	skipShort(t)
	sock := fakeTruncatingFCGI(t, "Content-Type: text/plain\r\n\r\nfirst half")
	logged := &phpfpmtest.Buffer{}
	h := phpHandler(t.TempDir(), sock)
	prev := log.Writer()
	log.SetOutput(logged)
	t.Cleanup(func() { log.SetOutput(prev) })
	srv := serveGofast(t, h)

	c := &http.Client{Timeout: hangBound}
	resp, err := c.Get(srv.URL + "/index.php")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("gofast: backend closed without FCGI_END_REQUEST: status %d, body %q, Content-Length %d, "+
		"client read error %v, %d bytes logged", resp.StatusCode, body, resp.ContentLength, err, len(logged.String()))
	if resp.StatusCode != http.StatusOK || err != nil || string(body) != "first half" {
		t.Errorf("got status %d, body %q, err %v; want a clean 200 with the truncated body (the shortcoming)",
			resp.StatusCode, body, err)
	}
}

// fakeTruncatingFCGI serves FastCGI: for each request it sends stdout as one
// FCGI_STDOUT record and closes the connection without FCGI_END_REQUEST.
func fakeTruncatingFCGI(t *testing.T, stdout string) string {
	dir, err := os.MkdirTemp("", "fcgi")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "fake.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(hangBound))
				var id uint16
				for { // read until the empty FCGI_STDIN record
					var h [8]byte
					if _, err := io.ReadFull(c, h[:]); err != nil {
						return
					}
					id = binary.BigEndian.Uint16(h[2:4])
					n := int(binary.BigEndian.Uint16(h[4:6])) + int(h[6])
					if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
						return
					}
					if h[1] == 5 && n == 0 {
						break
					}
				}
				rec := []byte{1, 6, byte(id >> 8), byte(id), byte(len(stdout) >> 8), byte(len(stdout)), 0, 0}
				c.Write(append(rec, stdout...))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return sock
}

// f. gofast's pool keeps connections that php-fpm workers stay attached to
// (gofast always sets FCGI_KEEP_CONN): with more pooled connections than
// workers, requests stall. The pool's goroutines never stop, so the client
// side runs in a child process.
func TestGofastPoolStalls(t *testing.T) {
	skipShort(t)
	const workers, scale = 2, 8
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: workers})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGofastPoolHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"REALROOT_GOFAST_POOL_HELPER=1",
		"REALROOT_GOFAST_SOCK="+fpm.Socket,
		"REALROOT_GOFAST_ROOT="+phpRoot(t),
		fmt.Sprintf("REALROOT_GOFAST_SCALE=%d", scale))
	out, err := cmd.CombinedOutput()
	var completed, dials int
	i := bytes.Index(out, []byte("gofast-pool "))
	if i < 0 {
		t.Fatalf("helper process: %v, no result line\n%s", err, out)
	}
	if _, serr := fmt.Sscanf(string(out[i:]), "gofast-pool completed=%d dials=%d", &completed, &dials); serr != nil {
		t.Fatalf("helper process: %v, %v\n%s", err, serr, out)
	}
	t.Logf("gofast: NewClientPool(scale %d) before php-fpm with %d workers: %d sequential requests completed, "+
		"the next got no answer within %v; the pool had dialed %d connections",
		scale, workers, completed, hangBound, dials)
	if completed >= 4*scale {
		t.Errorf("all %d requests completed; want a stall once the pool hands out a connection no worker serves",
			completed)
	}
}

// TestGofastPoolHelperProcess is the client side of TestGofastPoolStalls,
// run in a child process so its leaked goroutines die with it.
func TestGofastPoolHelperProcess(t *testing.T) {
	if os.Getenv("REALROOT_GOFAST_POOL_HELPER") != "1" {
		return
	}
	var scale uint
	fmt.Sscan(os.Getenv("REALROOT_GOFAST_SCALE"), &scale)
	sock := os.Getenv("REALROOT_GOFAST_SOCK")
	var dials atomic.Int64
	pool := gofast.NewClientPool(gofast.SimpleClientFactory(func() (net.Conn, error) {
		dials.Add(1)
		return net.Dial("unix", sock)
	}), scale, time.Minute)
	h := gofast.NewHandler(gofast.NewPHPFS(os.Getenv("REALROOT_GOFAST_ROOT"))(gofast.BasicSession), pool.CreateClient)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go (&http.Server{Handler: h}).Serve(ln)
	// Let the pool fill (scale clients queued, one more dialed and waiting)
	// so that the outcome does not depend on the machine's load.
	for deadline := time.Now().Add(time.Second); dials.Load() <= int64(scale) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	completed := 0
	for range 4 * scale {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/hello.php", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			break
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		completed++
	}
	fmt.Printf("gofast-pool completed=%d dials=%d total=%d\n", completed, dials.Load(), 4*scale)
	os.Exit(0)
}

// g. PHP's stderr goes, whole and unbounded, to the global log package, not
// to the logger given with SetLogger.
func TestGofastStderrToGlobalLog(t *testing.T) {
	skipShort(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	h := phpHandler(phpRoot(t), fpm.Socket)
	own, global := &phpfpmtest.Buffer{}, &phpfpmtest.Buffer{}
	h.SetLogger(log.New(own, "", 0))
	prev := log.Writer()
	log.SetOutput(global)
	t.Cleanup(func() { log.SetOutput(prev) })
	srv := serveGofast(t, h)

	c := &http.Client{Timeout: hangBound}
	resp, err := c.Get(srv.URL + "/stderr.php")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	const want = 1024 * 900
	out := global.String()
	lines := strings.Count(out, "gofast: error stream from application process")
	xs := strings.Count(out, "x")
	t.Logf("gofast: 1024 error_log() calls, %d bytes of message: %d global log entry of %d bytes; "+
		"the SetLogger logger got %d bytes", want, lines, len(out), len(own.String()))
	if lines != 1 || xs != want || len(own.String()) != 0 {
		t.Errorf("got %d global log entries with %d 'x', %d bytes to SetLogger's logger; "+
			"want 1 entry holding all %d and 0 (the shortcoming)", lines, xs, len(own.String()), want)
	}
}
