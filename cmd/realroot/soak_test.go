package main

// TestSoakMixedTraffic puts the realroot binary, with each HTTP/1.1
// server, through a few seconds of mixed and hostile traffic in front of a
// real php-fpm, then checks that every well-formed request got its answer
// and that nothing leaked: file descriptors and goroutines back to their
// baseline, no panic, race or unexpected error in the log, every php-fpm
// worker idle. Skipped with -short.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

const (
	soakDuration = 3 * time.Second // of load, per server
	soakMaxOps   = 400             // iterations per client at most
	soakWorkers  = 6               // php-fpm's pm.max_children
	soakMaxConns = 4               // realroot's max-conns: below soakWorkers, so the status page always gets a worker
	soakFDSlack  = 2               // fds over the baseline tolerated once idle
	soakGSlack   = 5               // goroutines over the baseline tolerated once idle
)

// The soak site's extra files, in releases/1/public.
var (
	soakHello = strings.Repeat("hello, soak\n", 40) // 480 bytes: cached, not compressed
	soakBig   = func() []byte {                     // a static file far larger than any socket buffer
		b := make([]byte, 4<<20)
		r := rand.NewChaCha8([32]byte{1})
		r.Read(b)
		return b
	}()
	soakUpload = func() []byte { // what uploads send, or a prefix of it
		b := make([]byte, 1<<20)
		r := rand.NewChaCha8([32]byte{2})
		r.Read(b)
		return b
	}()
	soakFiles = map[string]string{
		"echo.php": `<?php header('Content-Type: text/plain'); echo "echo ", $_GET['i'] ?? '-';`,
		// Prints the length and md5 of the body as PHP got it.
		"upload.php": `<?php $d = file_get_contents('php://input'); header('Content-Type: text/plain');
			echo strlen($d), ' ', md5($d);`,
		// 2 MiB of output, in 64 KiB writes.
		"big.php": `<?php header('Content-Type: application/octet-stream'); $s = str_repeat('0123456789abcdef', 4096);
			for ($i = 0; $i < 32; $i++) echo $s;`,
		"hello.txt": soakHello,
		"big.bin":   string(soakBig),
	}
	soakBigPHPLen = 2 << 20
)

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// uploadAnswer is what upload.php prints for body.
func uploadAnswer(body []byte) string { return fmt.Sprintf("%d %s", len(body), md5hex(body)) }

func TestSoakMixedTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: soakWorkers})
	dir := site(t)
	for name, text := range soakFiles {
		if err := os.WriteFile(filepath.Join(dir, "releases", "1", "public", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, server := range []string{"lean", "net/http"} {
		t.Run(strings.ReplaceAll(server, "/", "-"), func(t *testing.T) {
			soak(t, server, fpm, filepath.Join(dir, "current", "public"))
		})
	}
}

// soakRun is one server under soak: the process, its admin address, and
// what its clients saw.
type soakRun struct {
	t     *testing.T
	p     *proc
	admin string

	mu     sync.Mutex
	errs   []string
	counts map[string]int

	reused atomic.Int64 // keep-alive requests that reused a connection
}

// fail records a wrong outcome of case kind.
func (r *soakRun) fail(kind, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 40 {
		r.errs = append(r.errs, kind+": "+fmt.Sprintf(format, args...))
	} else if len(r.errs) == 40 {
		r.errs = append(r.errs, "(more errors left out)")
	}
	r.counts[kind+" failed"]++
}

// ok counts a right outcome of case kind.
func (r *soakRun) ok(kind string) {
	r.mu.Lock()
	r.counts[kind]++
	r.mu.Unlock()
}

func soak(t *testing.T, server string, fpm *phpfpmtest.Server, root string) {
	start := time.Now()
	p := startRealroot(t, nil, "--root", root, "--fastcgi", "unix:"+fpm.Socket,
		"--listen", "127.0.0.1:0", "--http1-server", server,
		"--admin", "127.0.0.1:0", "--admin-pprof",
		"--max-conns", strconv.Itoa(soakMaxConns), "--conn-idle-timeout", "300ms",
		"--max-body-size", "2m",
		// Long enough for the slow clients, and far longer than the
		// settling wait: a connection the server fails to close when its
		// client goes shows up as a leaked fd.
		"--header-timeout", "3s", "--idle-timeout", "60s", "--body-timeout", "30s")
	serving := p.logged("serving")
	if len(serving) != 1 || serving[0]["http1_server"] != server {
		t.Fatalf("serving line %v; want http1_server %q", serving, server)
	}
	r := &soakRun{t: t, p: p, counts: map[string]int{}}
	r.admin, _ = serving[0]["admin"].(string)
	if r.admin == "" {
		t.Fatalf("no admin address in the serving line %v", serving)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.signal(syscall.SIGTERM)
			p.wait(15 * time.Second)
		}
	}()

	// Warm up every path the load takes, so that what is allocated once
	// (pools, caches, the php-fpm connection pool) is in the baseline.
	r.warmUp()
	baseFDs, baseG := r.baseline()
	t.Logf("%s: baseline %d fds, %d goroutines (after %v)", server, len(baseFDs), baseG, time.Since(start).Round(time.Millisecond))

	loadStart := time.Now()
	deadline := loadStart.Add(soakDuration)
	var wg sync.WaitGroup
	clients := []func(i int, deadline time.Time){
		r.keepAliveClient, r.keepAliveClient,
		r.pipelineClient,
		r.uploadClient,
		r.expectContinueClient,
		r.disconnectClient, r.disconnectClient,
		r.slowClient,
		r.badFramingClient,
	}
	for i, c := range clients {
		wg.Go(func() { c(i, deadline) })
	}
	wg.Wait()
	loadTook := time.Since(loadStart)

	// The server still answers, then goes back to idle.
	after := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	if status, body, err := get(after, p.url("/echo.php?i=after")); status != 200 || body != "echo after" {
		t.Errorf("GET /echo.php after the load = %d %q %v; want 200 \"echo after\"", status, body, err)
	}
	after.CloseIdleConnections()
	settleStart := time.Now()
	fds, g := r.settle(baseFDs, baseG)
	t.Logf("%s: after %v of load and %v settling: %d fds, %d goroutines", server, loadTook.Round(time.Millisecond),
		time.Since(settleStart).Round(time.Millisecond), len(fds), g)

	r.mu.Lock()
	kinds := slices.Sorted(maps.Keys(r.counts))
	var summary []string
	for _, k := range kinds {
		summary = append(summary, fmt.Sprintf("%s=%d", k, r.counts[k]))
	}
	t.Logf("%s: outcomes: %s; keep-alive reuses %d", server, strings.Join(summary, " "), r.reused.Load())
	for _, e := range r.errs {
		t.Errorf("%s", e)
	}
	// Every case ran, so that a client that silently did nothing fails.
	for _, k := range []string{
		"get php", "get static", "get big", "head php", "head static", "pipeline batch",
		"upload content-length", "upload chunked", "expect 100-continue", "expect without waiting", "expect refused 413",
		"disconnect half headers", "disconnect half body", "disconnect mid-response static",
		"disconnect mid-response php", "disconnect while php runs", "slow headers",
		"bad cl+te", "bad chunk size", "bad two content-lengths", "bad after good on kept conn",
	} {
		if r.counts[k] == 0 {
			t.Errorf("case %q never succeeded", k)
		}
	}
	r.mu.Unlock()
	if r.reused.Load() == 0 {
		t.Errorf("no keep-alive request reused a connection")
	}

	// php-fpm: every worker idle (but the one answering the status page).
	fpmStart := time.Now()
	eventually(t, 10*time.Second, func() string {
		st, err := fpmStatus(fpm.Socket)
		if err != nil {
			return "php-fpm status: " + err.Error()
		}
		if st.Active != 1 || st.Idle != soakWorkers-1 || st.ListenQueue != 0 {
			return fmt.Sprintf("php-fpm: %d active, %d idle, listen queue %d; want 1 (the status request), %d, 0",
				st.Active, st.Idle, st.ListenQueue, soakWorkers-1)
		}
		return ""
	})
	t.Logf("%s: php-fpm idle after %v", server, time.Since(fpmStart).Round(time.Millisecond))

	// A clean stop: exit 0 (a race found in the server makes it 66).
	stopStart := time.Now()
	stopped = true
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d; want 0", code)
	}
	t.Logf("%s: stopped in %v", server, time.Since(stopStart).Round(time.Millisecond))
	tagged := r.checkLog()
	t.Logf("%s: took %v", server, time.Since(start).Round(time.Millisecond))

	// A client gone while PHP runs is logged as such (499), never as an
	// error of the server or of the client's request.
	if got := tagged["gone"]; len(got) != 1 || got[499] == 0 {
		t.Errorf("clients gone while PHP ran: access log statuses %v; want only 499", got)
	}
	// Likewise a client gone halfway through its upload: net/http cancels
	// the request's context on the connection's read error, so the body's
	// unexpected EOF is a 499.
	t.Run("half-body disconnect logged 499", func(t *testing.T) {
		if got := tagged["halfbody"]; len(got) != 1 || got[499] == 0 {
			t.Errorf("clients gone mid-upload: access log statuses %v; want only 499", got)
		}
	})
}

// warmUp sends one request of each kind that the load sends.
func (r *soakRun) warmUp() {
	t := r.t
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, path := range []string{"/", "/echo.php?i=warm", "/hello.txt", "/big.bin", "/big.php", "/style.css"} {
		if status, _, err := get(client, r.p.url(path)); status != 200 {
			t.Fatalf("warm-up GET %s = %d, %v", path, status, err)
		}
	}
	for _, body := range [][]byte{soakUpload, soakUpload[:100]} {
		resp, err := client.Post(r.p.url("/upload.php"), "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != uploadAnswer(body) {
			t.Fatalf("warm-up upload = %d %q", resp.StatusCode, b)
		}
	}
	// A bad request too: the error path's allocations.
	c, err := net.Dial("tcp", r.p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
	io.Copy(io.Discard, c)
	c.Close()
}

// baseline measures the server idle after the warm-up: once the php-fpm
// connections it kept are closed (conn-idle-timeout), the fewest fds and
// goroutines over a few samples (the admin requests that measure them come
// and go).
func (r *soakRun) baseline() (map[string]string, int) {
	t := r.t
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	var fds map[string]string
	g := -1
	for range 4 {
		n, err := r.goroutines()
		if err != nil {
			t.Fatalf("goroutines: %v", err)
		}
		f, err := procFDs(r.p.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("fds: %v", err)
		}
		if g < 0 || n < g {
			g = n
		}
		if fds == nil || len(f) < len(fds) {
			fds = f
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fds, g
}

// settle waits until the server's fds and goroutines are back to the
// baseline within the slack, and fails the test if they are not within 8s
// (far less than the header, idle and body timeouts: a connection is
// closed because its client went, or leaks). It returns the last measures.
func (r *soakRun) settle(baseFDs map[string]string, baseG int) (map[string]string, int) {
	t := r.t
	t.Helper()
	const timeout = 8 * time.Second
	var fds map[string]string
	var g int
	deadline := time.Now().Add(timeout)
	for {
		var err error
		g, err = r.goroutines()
		if err != nil {
			t.Fatalf("goroutines: %v", err)
		}
		fds, err = procFDs(r.p.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("fds: %v", err)
		}
		if len(fds) <= len(baseFDs)+soakFDSlack && g <= baseG+soakGSlack {
			return fds, g
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var extra []string
	for fd, target := range fds {
		if baseFDs[fd] != target {
			extra = append(extra, fd+" -> "+target)
		}
	}
	slices.Sort(extra)
	t.Errorf("%v after the load: %d fds (baseline %d), %d goroutines (baseline %d); want at most +%d and +%d.\n"+
		"fds not in the baseline: %v\ngoroutines:\n%s", timeout, len(fds), len(baseFDs), g, baseG, soakFDSlack, soakGSlack,
		extra, r.goroutineDump())
	return fds, g
}

// procFDs returns the open fds of pid and what each points to.
func procFDs(pid int) (map[string]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds[e.Name()] = target
	}
	return fds, nil
}

// adminGet fetches path on the admin listener on a connection of its own.
func (r *soakRun) adminGet(path string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	status, body, err := get(client, "http://"+r.admin+path)
	if err == nil && status != 200 {
		err = fmt.Errorf("GET %s: %d %q", path, status, body)
	}
	return body, err
}

// goroutines returns the server's go_goroutines from /metrics.
func (r *soakRun) goroutines() (int, error) {
	body, err := r.adminGet("/metrics")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no go_goroutines in /metrics")
}

func (r *soakRun) goroutineDump() string {
	body, err := r.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	return body
}

// checkLog fails on a panic or race report, or a warning or error the
// traffic does not explain, and on a 5xx in the access log. It returns the
// access log's statuses of the requests tagged soak=TAG, by tag.
func (r *soakRun) checkLog() map[string]map[int]int {
	t := r.t
	out := r.p.out.String()
	for _, bad := range []string{"panic", "DATA RACE", "goroutine ", "fatal error"} {
		if strings.Contains(out, bad) {
			t.Errorf("the server's output has %q", bad)
		}
	}
	statuses := map[int]int{}
	tagged := map[string]map[int]int{}
	for _, l := range r.p.logLines() {
		if l["msg"] == "request" {
			s, ok := l["status"].(float64)
			if !ok {
				t.Errorf("access log line without a status: %v", l)
				continue
			}
			statuses[int(s)]++
			if s >= 500 {
				t.Errorf("access log: a %v: %v", s, l)
			}
			uri, _ := l["uri"].(string)
			if _, tag, ok := strings.Cut(uri, "soak="); ok {
				tag, _, _ = strings.Cut(tag, "&")
				if tagged[tag] == nil {
					tagged[tag] = map[int]int{}
				}
				tagged[tag][int(s)]++
			}
			continue
		}
		switch l["level"] {
		case "debug", "info":
			continue
		}
		t.Errorf("unexpected log line: %v", l)
	}
	t.Logf("access log statuses: %v; tagged: %v", statuses, tagged)
	if statuses[200] == 0 {
		t.Errorf("no 200 in the access log")
	}
	return tagged
}

// fpmState is what the soak reads of php-fpm's status page.
type fpmState struct {
	Active      int `json:"active processes"`
	Idle        int `json:"idle processes"`
	ListenQueue int `json:"listen queue"`
}

// fpmStatus asks php-fpm's status page (pm.status_path, set by
// phpfpmtest) directly over FastCGI.
func fpmStatus(socket string) (fpmState, error) {
	var st fpmState
	client := &fcgi.Client{Network: "unix", Address: socket, DisableKeepAlive: true, MaxConns: 1}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Do(ctx, &gofast.Request{Params: map[string]string{
		"SCRIPT_FILENAME":   "/fpm-status",
		"SCRIPT_NAME":       "/fpm-status",
		"REQUEST_URI":       "/fpm-status?json",
		"DOCUMENT_URI":      "/fpm-status",
		"QUERY_STRING":      "json",
		"REQUEST_METHOD":    "GET",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"CONTENT_LENGTH":    "",
	}})
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.Status != 200 {
		return st, fmt.Errorf("status %d: %q", resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%v: %q", err, body)
	}
	return st, nil
}
