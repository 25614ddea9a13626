package proxy

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// fakeBackend is an Upstream that reads the whole request body, then fails
// with err when set, else answers status (200 when zero) with its name.
// Reading before failing is harsher than fcgi.Client, which reads nothing
// before ErrConnect or ErrBusy: the retry must rewind.
type fakeBackend struct {
	name string

	mu     sync.Mutex
	err    error
	status int
	bodies []string            // one per call
	params []map[string]string // one per call
}

func (f *fakeBackend) Do(ctx context.Context, req *gofast.Request) (*fcgi.Response, error) {
	var body []byte
	if req.Stdin != nil {
		body, _ = io.ReadAll(req.Stdin)
		req.Stdin.Close()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, string(body))
	f.params = append(f.params, req.Params)
	if f.err != nil {
		return nil, f.err
	}
	status := f.status
	if status == 0 {
		status = http.StatusOK
	}
	return &fcgi.Response{Status: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(f.name))}, nil
}

func (f *fakeBackend) set(err error, status int) {
	f.mu.Lock()
	f.err, f.status = err, status
	f.mu.Unlock()
}

func (f *fakeBackend) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

func (f *fakeBackend) body(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

// fakeClock is the Balancer's clock in tests: it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestBalancer balances over fakes (named a, b, c...) on a fake clock.
func newTestBalancer(opts BalancerOptions, fakes ...*fakeBackend) (*Balancer, *fakeClock, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	opts.Logger = zap.New(core)
	var backends []Backend
	for _, f := range fakes {
		backends = append(backends, Backend{Addr: f.name, Upstream: f})
	}
	b := NewBalancer(backends, opts)
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	b.epoch, b.now = clk.t, clk.now
	return b, clk, logs
}

func fakes(names ...string) []*fakeBackend {
	var fs []*fakeBackend
	for _, n := range names {
		fs = append(fs, &fakeBackend{name: n})
	}
	return fs
}

func getRequest() *gofast.Request {
	return &gofast.Request{Role: gofast.RoleResponder, Params: map[string]string{"REQUEST_METHOD": "GET"}}
}

// hold sends a GET through b and returns the name that answered, with the
// response left open (in flight).
func hold(t *testing.T, b *Balancer) (string, *fcgi.Response) {
	t.Helper()
	resp, err := b.Do(context.Background(), getRequest())
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	name, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(name), resp
}

// send sends a GET through b and returns the name that answered.
func send(t *testing.T, b *Balancer) string {
	t.Helper()
	name, resp := hold(t, b)
	resp.Body.Close()
	return name
}

func inFlight(b *Balancer) []int64 {
	var n []int64
	for _, s := range b.Stats() {
		n = append(n, s.InFlight)
	}
	return n
}

func TestBalancerLeastInFlight(t *testing.T) {
	b, _, _ := newTestBalancer(BalancerOptions{}, fakes("a", "b", "c")...)
	var open []*fcgi.Response
	for _, want := range []string{"a", "b", "c"} {
		got, resp := hold(t, b)
		if got != want {
			t.Fatalf("with %d in flight: got %s; want the idle %s", len(open), got, want)
		}
		open = append(open, resp)
	}
	if got := fmt.Sprint(inFlight(b)); got != "[1 1 1]" {
		t.Errorf("in flight: got %s; want [1 1 1]", got)
	}
	open[1].Body.Close()
	open[1].Body.Close() // twice: counted once
	if got := fmt.Sprint(inFlight(b)); got != "[1 0 1]" {
		t.Errorf("in flight after closing b: got %s; want [1 0 1]", got)
	}
	for range 3 { // b is the only idle one, whatever the turn
		if got := send(t, b); got != "b" {
			t.Errorf("got %s; want the idle b", got)
		}
	}
	open[0].Body.Close()
	open[2].Body.Close()

	// All idle: ties are taken in turn.
	seen := map[string]int{}
	for range 6 {
		seen[send(t, b)]++
	}
	if seen["a"] != 2 || seen["b"] != 2 || seen["c"] != 2 {
		t.Errorf("6 requests on idle backends: got %v; want 2 each", seen)
	}
	if got := fmt.Sprint(inFlight(b)); got != "[0 0 0]" {
		t.Errorf("in flight at the end: got %s; want [0 0 0]", got)
	}
}

func TestBalancerFailTimeout(t *testing.T) {
	fs := fakes("a", "b")
	a := fs[0]
	b, clk, logs := newTestBalancer(BalancerOptions{FailTimeout: 10 * time.Second}, fs...)
	a.set(fmt.Errorf("%w: dial unix /a: connection refused", fcgi.ErrConnect), 0)

	if got := send(t, b); got != "b" {
		t.Fatalf("a cannot connect: got %s; want b", got)
	}
	st := b.Stats()[0]
	if !st.Down || st.Failures != 1 || !st.DownUntil.Equal(clk.now().Add(10*time.Second)) {
		t.Errorf("a's stats: got %+v; want down until %v, 1 failure", st, clk.now().Add(10*time.Second))
	}
	clk.advance(10*time.Second - time.Nanosecond)
	for range 4 {
		if got := send(t, b); got != "b" {
			t.Fatalf("within fail-timeout: got %s; want b (a skipped)", got)
		}
	}
	if a.calls() != 1 {
		t.Errorf("a was tried %d times within fail-timeout; want 1", a.calls())
	}

	clk.advance(time.Nanosecond)
	a.set(nil, 0)
	seen := map[string]bool{}
	for range 2 {
		seen[send(t, b)] = true
	}
	if !seen["a"] {
		t.Errorf("after fail-timeout: got %v; want a tried again", seen)
	}
	if st := b.Stats()[0]; st.Down || !st.DownUntil.IsZero() {
		t.Errorf("a answered: got %+v; want up", st)
	}

	down, up := logs.FilterMessage("upstream down").All(), logs.FilterMessage("upstream up").All()
	if len(down) != 1 || len(up) != 1 {
		t.Fatalf("got %d upstream down and %d upstream up lines; want 1 each", len(down), len(up))
	}
	if f := down[0].ContextMap(); f["upstream"] != "a" || !strings.Contains(fmt.Sprint(f["error"]), "connection refused") {
		t.Errorf("upstream down: got %v; want upstream a and the error", f)
	}
	if f := up[0].ContextMap(); f["upstream"] != "a" || f["reason"] != "request answered" {
		t.Errorf("upstream up: got %v; want upstream a, request answered", f)
	}
}

func TestBalancerAllDown(t *testing.T) {
	fs := fakes("a", "b")
	b, _, _ := newTestBalancer(BalancerOptions{}, fs...)
	refused := fmt.Errorf("%w: connection refused", fcgi.ErrConnect)
	fs[0].set(refused, 0)
	fs[1].set(refused, 0)
	if _, err := b.Do(context.Background(), getRequest()); !errors.Is(err, fcgi.ErrConnect) {
		t.Fatalf("both refuse: got %v; want ErrConnect", err)
	}
	if fs[0].calls() != 1 || fs[1].calls() != 1 {
		t.Fatalf("got %d and %d tries; want each tried once", fs[0].calls(), fs[1].calls())
	}
	for i, st := range b.Stats() {
		if !st.Down {
			t.Fatalf("backend %d: got %+v; want down", i, st)
		}
	}
	// Both marked down: still tried, and b answers.
	fs[1].set(nil, 0)
	for range 3 {
		if got := send(t, b); got != "b" {
			t.Errorf("got %s; want b", got)
		}
	}

	// One backend alone is always tried.
	one, _, _ := newTestBalancer(BalancerOptions{}, fakes("solo")...)
	one.backends[0].Upstream.(*fakeBackend).set(refused, 0)
	one.Do(context.Background(), getRequest())
	one.backends[0].Upstream.(*fakeBackend).set(nil, 0)
	if got := send(t, one); got != "solo" {
		t.Errorf("single backend marked down: got %s; want it tried", got)
	}
}

// seekBody is a seekable request body that counts its Closes.
type seekBody struct {
	io.ReadSeeker
	closes atomic.Int32
}

func (s *seekBody) Close() error { s.closes.Add(1); return nil }

// onceBody is a request body that cannot be sent again.
type onceBody struct {
	io.Reader
	closes atomic.Int32
}

func (o *onceBody) Close() error { o.closes.Add(1); return nil }

func TestBalancerRetry(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20000) // 320 KiB
	file := func(t *testing.T) io.ReadSeeker {
		f, err := os.CreateTemp(t.TempDir(), "body")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.WriteString(big); err != nil {
			t.Fatal(err)
		}
		f.Seek(0, io.SeekStart)
		return f
	}
	tests := []struct {
		name      string
		give      error
		body      string
		file      bool // the body is an *os.File, as a spool past BodyMemory
		once      bool // the body cannot seek
		wantRetry bool
		wantDown  bool
	}{
		{name: "connect GET", give: fcgi.ErrConnect, wantRetry: true, wantDown: true},
		{name: "connect POST", give: fcgi.ErrConnect, body: "name=value&x=1", wantRetry: true, wantDown: true},
		{name: "connect POST file", give: fcgi.ErrConnect, body: big, file: true, wantRetry: true, wantDown: true},
		{name: "connect POST unseekable", give: fcgi.ErrConnect, body: "x=1", once: true, wantDown: true},
		{name: "busy GET", give: fcgi.ErrBusy, wantRetry: true},
		{name: "busy POST", give: fcgi.ErrBusy, body: big, wantRetry: true},
		{name: "timeout GET", give: fcgi.ErrTimeout, wantDown: true},
		{name: "timeout POST", give: fcgi.ErrTimeout, body: "x=1", wantDown: true},
		{name: "truncated GET", give: fcgi.ErrTruncated},
		{name: "overloaded GET", give: fcgi.ErrOverloaded},
		{name: "protocol GET", give: fcgi.ErrProtocol},
		{name: "client gone", give: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := fakes("a", "b")
			a, bb := fs[0], fs[1]
			a.set(fmt.Errorf("%w: injected", tt.give), 0)
			b, _, _ := newTestBalancer(BalancerOptions{}, fs...)
			req := getRequest()
			var sb *seekBody
			var ob *onceBody
			if tt.body != "" {
				req.Params["REQUEST_METHOD"] = "POST"
				switch {
				case tt.once:
					ob = &onceBody{Reader: strings.NewReader(tt.body)}
					req.Stdin = ob
				case tt.file:
					sb = &seekBody{ReadSeeker: file(t)}
					req.Stdin = sb
				default:
					sb = &seekBody{ReadSeeker: strings.NewReader(tt.body)}
					req.Stdin = sb
				}
			}
			resp, err := b.Do(context.Background(), req)
			if a.calls() != 1 {
				t.Errorf("a got the request %d times; want once", a.calls())
			}
			if tt.wantRetry {
				if err != nil {
					t.Fatalf("got %v; want b's answer", err)
				}
				resp.Body.Close()
				if bb.calls() != 1 {
					t.Fatalf("b got the request %d times; want once", bb.calls())
				}
				if got := bb.body(0); got != tt.body {
					t.Errorf("b got a body of %d bytes; want the %d bytes sent, byte-exact", len(got), len(tt.body))
				}
			} else {
				if !errors.Is(err, tt.give) {
					t.Errorf("got %v; want an error wrapping %v", err, tt.give)
				}
				if bb.calls() != 0 {
					t.Errorf("b got the request %d times; want never", bb.calls())
				}
			}
			if err != nil && !strings.Contains(err.Error(), "upstream a:") {
				t.Errorf("got %q; want the upstream named", err)
			}
			if got := b.Stats()[0].Down; got != tt.wantDown {
				t.Errorf("a down: got %v; want %v", got, tt.wantDown)
			}
			if sb != nil && sb.closes.Load() != 1 {
				t.Errorf("body closed %d times; want once", sb.closes.Load())
			}
			if ob != nil && ob.closes.Load() != 1 {
				t.Errorf("body closed %d times; want once", ob.closes.Load())
			}
			if req.Stdin != nil && req.Stdin != io.ReadCloser(sb) && req.Stdin != io.ReadCloser(ob) {
				t.Errorf("req.Stdin is %T after Do; want the caller's body back", req.Stdin)
			}
		})
	}
}

// TestBalancerHandler runs real fcgi.Clients behind the handler: the
// first address refuses (no socket), the second records what it gets.
func TestBalancerHandler(t *testing.T) {
	verifyNoLeaks(t)
	dir := newDeploy(t, map[string]string{"index.php": "<?php", "post.php": "<?php"}, "A")
	rs := newReleases(t, filepath.Join(dir, "current"))
	ok := func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	}
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)

	serve := func(t *testing.T, first, second *fcgi.Client) string {
		t.Cleanup(func() { first.Close(); second.Close() })
		b := NewBalancer([]Backend{{Addr: "first", Upstream: first}, {Addr: "second", Upstream: second}}, BalancerOptions{})
		ts := httptest.NewServer(New(rs, b, Options{MaxBodySize: -1}))
		t.Cleanup(ts.Close)
		return ts.URL
	}
	dead := func() *fcgi.Client {
		return &fcgi.Client{Network: "unix", Address: filepath.Join(t.TempDir(), "gone.sock")}
	}

	for _, size := range []int{0, 1000, 300 << 10} { // none, in memory, in a temp file
		t.Run(fmt.Sprintf("connect %d", size), func(t *testing.T) {
			live := fcgitest.Start(t, ok)
			url := serve(t, dead(), &fcgi.Client{Network: "unix", Address: live.Socket})
			body := make([]byte, size)
			for i := range body {
				body[i] = byte(i * 7)
			}
			method := http.MethodPost
			if size == 0 {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, url+"/post.php", bytes.NewReader(body))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d; want 200 from the second address", resp.StatusCode)
			}
			got := live.Last()
			if got == nil {
				t.Fatal("the second address got no request")
			}
			if !bytes.Equal(got.Stdin, body) {
				t.Errorf("the second address got a body of %d bytes; want the %d sent, byte-exact", len(got.Stdin), size)
			}
			if cl := got.Params["CONTENT_LENGTH"]; size > 0 && cl != fmt.Sprint(size) {
				t.Errorf("CONTENT_LENGTH: got %q; want %d", cl, size)
			}
		})
	}

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run("timeout "+method, func(t *testing.T) {
			release := make(chan struct{})
			slow := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
				<-release
				return ok(req, w)
			})
			t.Cleanup(func() { close(release) }) // before the server's cleanup
			other := fcgitest.Start(t, ok)
			url := serve(t, &fcgi.Client{Network: "unix", Address: slow.Socket, ReadTimeout: 50 * time.Millisecond},
				&fcgi.Client{Network: "unix", Address: other.Socket})
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("x=1")
			}
			req, _ := http.NewRequest(method, url+"/post.php", body)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("got %d; want 504, not retried", resp.StatusCode)
			}
			if n, m := len(slow.Requests()), len(other.Requests()); n != 1 || m != 0 {
				t.Errorf("the slow address saw %d requests, the other %d; want 1 and 0", n, m)
			}
		})
	}

	t.Run("busy", func(t *testing.T) {
		release := make(chan struct{})
		full := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
			<-release
			return ok(req, w)
		})
		letGo := sync.OnceFunc(func() { close(release) })
		t.Cleanup(letGo)
		other := fcgitest.Start(t, ok)
		first := &fcgi.Client{Network: "unix", Address: full.Socket, MaxConns: 1, QueueTimeout: 30 * time.Millisecond}
		url := serve(t, first, &fcgi.Client{Network: "unix", Address: other.Socket})
		// Its one connection taken outside the balancer: the balancer
		// sees it idle and picks it first.
		held := make(chan error, 1)
		go func() {
			resp, err := first.Do(context.Background(), getRequest())
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			held <- err
		}()
		for len(full.Requests()) == 0 {
			time.Sleep(time.Millisecond)
		}
		req, _ := http.NewRequest(http.MethodPost, url+"/post.php", strings.NewReader("busy=1"))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d; want 200 from the other address", resp.StatusCode)
		}
		if n := len(full.Requests()); n != 1 {
			t.Errorf("the busy address saw %d requests; want only the one holding it", n)
		}
		if got := other.Last(); got == nil || string(got.Stdin) != "busy=1" {
			t.Errorf("the other address got %+v; want the request with its body", got)
		}
		if st := first.Stats(); st.Busy != 1 {
			t.Errorf("pool stats: got %+v; want 1 busy", st)
		}
		letGo()
		if err := <-held; err != nil {
			t.Errorf("the holding request: %v", err)
		}
	})
}

func TestBalancerHealthCheck(t *testing.T) {
	verifyNoLeaks(t)
	fs := fakes("a", "b")
	a := fs[0]
	b, _, logs := newTestBalancer(BalancerOptions{HealthInterval: 5 * time.Millisecond, PingPath: "/fpm-ping"}, fs...)
	b.now = time.Now // the checks run on real time
	b.epoch = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not %s after 5s; stats %+v", what, b.Stats())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	isDown := func() bool { return b.Stats()[0].Down }

	a.set(fmt.Errorf("%w: connection refused", fcgi.ErrConnect), 0)
	waitFor("down", isDown)
	a.mu.Lock()
	p := a.params[0]
	a.mu.Unlock()
	if p["SCRIPT_NAME"] != "/fpm-ping" || p["SCRIPT_FILENAME"] != "/fpm-ping" || p["REQUEST_METHOD"] != "GET" {
		t.Errorf("health check params: got %v; want a GET of /fpm-ping", p)
	}

	a.set(nil, 0)
	waitFor("up", func() bool { return !isDown() })
	if up := logs.FilterMessage("upstream up").All(); len(up) != 1 || up[0].ContextMap()["reason"] != "health check passed" {
		t.Errorf("got %v; want one upstream up line, health check passed", up)
	}

	// Busy (every connection taken by requests) tells nothing.
	a.set(fmt.Errorf("%w: none free", fcgi.ErrBusy), 0)
	n := a.calls()
	waitFor("checked twice more", func() bool { return a.calls() >= n+2 })
	if isDown() {
		t.Errorf("busy: got down; want up")
	}

	// A ping path php-fpm does not know: 404, down, with a hint.
	a.set(nil, http.StatusNotFound)
	waitFor("down on 404", isDown)
	down := logs.FilterMessage("upstream down").All()
	if len(down) != 2 || !strings.Contains(fmt.Sprint(down[1].ContextMap()["error"]), "is ping.path = /fpm-ping set") {
		t.Errorf("got %v; want a second upstream down line naming ping.path", down)
	}
	if b.Stats()[1].Down || b.Stats()[1].Failures != 0 {
		t.Errorf("b: got %+v; want up, never failed", b.Stats()[1])
	}

	// Without a ping path, php-fpm's 404 for a missing script is an answer.
	c := &fakeBackend{name: "c", status: http.StatusNotFound}
	nb := NewBalancer([]Backend{{Addr: "c", Upstream: c}}, BalancerOptions{HealthInterval: time.Hour})
	nb.backends[0].down.Store(true)
	nb.backends[0].downUntil.Store(int64(time.Hour))
	nctx, ncancel := context.WithCancel(context.Background())
	ndone := make(chan struct{})
	go func() { nb.Run(nctx); close(ndone) }()
	for nb.Stats()[0].Down {
		time.Sleep(time.Millisecond)
	}
	ncancel()
	<-ndone
	c.mu.Lock()
	if got := c.params[0]["SCRIPT_FILENAME"]; got != healthMissingScript {
		t.Errorf("SCRIPT_FILENAME without ping path: got %q; want %q", got, healthMissingScript)
	}
	c.mu.Unlock()
}

// The PHP site of TestBalancerPHP: who.php names the php-fpm that ran it by
// its php.ini, and echoes the body's length and md5.
var balanceSite = map[string]string{
	"public/who.php": `<?php
$in = file_get_contents('php://input');
usleep(20000);
echo php_ini_loaded_file(), ' ', strlen($in), ' ', md5($in);`,
}

// balanceResult is one request of TestBalancerPHP's load.
type balanceResult struct {
	start, end time.Time
	err        error  // a failure: transport error, status or wrong answer
	who        string // the php.ini of the php-fpm that answered
}

// TestBalancerPHP kills one of two php-fpm under load: only the requests
// it was running may fail, the rest go to the other; restarted, it gets
// traffic again through the active health check.
func TestBalancerPHP(t *testing.T) {
	verifyNoLeaks(t)
	fpm := []*phpfpmtest.Server{
		phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4}),
		phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4}),
	}
	ini := []string{filepath.Join(fpm[0].Dir, "php.ini"), filepath.Join(fpm[1].Dir, "php.ini")}
	dir := newDeploy(t, balanceSite, "A")
	rs := newReleases(t, filepath.Join(dir, "current", "public"))

	core, logs := observer.New(zap.InfoLevel)
	var backends []Backend
	for i, f := range fpm {
		c := &fcgi.Client{Network: "unix", Address: f.Socket, ReadTimeout: 10 * time.Second, MaxConns: 4}
		t.Cleanup(func() { c.Close() })
		backends = append(backends, Backend{Addr: fmt.Sprint("fpm", i), Upstream: c})
	}
	b := NewBalancer(backends, BalancerOptions{
		FailTimeout:    time.Minute, // only the health check brings it back in time
		HealthInterval: 50 * time.Millisecond,
		PingPath:       "/fpm-ping",
		Logger:         zap.New(core),
	})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { b.Run(ctx); close(runDone) }()
	t.Cleanup(func() { cancel(); <-runDone })

	ts := httptest.NewServer(New(rs, b, Options{}))
	t.Cleanup(ts.Close)
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)

	body := strings.Repeat("upload ", 15000) // 105 KB: spooled to a temp file
	sum := fmt.Sprintf("%x", md5.Sum([]byte(body)))
	one := func(post bool) (r balanceResult) {
		r.start = time.Now()
		defer func() { r.end = time.Now() }()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/who.php", nil)
		want := " 0 d41d8cd98f00b204e9800998ecf8427e"
		if post {
			req, _ = http.NewRequest(http.MethodPost, ts.URL+"/who.php", strings.NewReader(body))
			want = fmt.Sprintf(" %d %s", len(body), sum)
		}
		resp, err := hc.Do(req)
		if err != nil {
			r.err = err
			return r
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			r.err = err
		case resp.StatusCode != http.StatusOK:
			r.err = fmt.Errorf("status %d: %s", resp.StatusCode, got)
		case !strings.HasSuffix(string(got), want):
			r.err = fmt.Errorf("answer %q; want it to end with %q", got, want)
		default:
			r.who = strings.TrimSuffix(string(got), want)
		}
		return r
	}

	var (
		mu      sync.Mutex
		results []balanceResult
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				r := one((w+i)%2 == 0)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	served := func(who string, after time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			if r.who == who && r.start.After(after) {
				return true
			}
		}
		return false
	}

	time.Sleep(500 * time.Millisecond)
	killAt := time.Now()
	if err := fpm[0].Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	time.Sleep(500 * time.Millisecond)
	restartAt := time.Now()
	fpm[0].Restart(t)
	restartedAt := time.Now()
	back := time.Now().Add(5 * time.Second)
	for !served(ini[0], restartedAt) && time.Now().Before(back) {
		time.Sleep(10 * time.Millisecond)
	}
	backAt := time.Now()
	time.Sleep(100 * time.Millisecond) // some load on both again
	stop.Store(true)
	wg.Wait()

	var before [2]int
	failed := 0
	for _, r := range results {
		inFlightAtKill := r.start.Before(killedAt) && r.end.After(killAt)
		switch {
		case r.err != nil && !inFlightAtKill:
			t.Errorf("request of %v..%v failed, not in flight at the kill (%v..%v): %v",
				r.start.Format(time.StampMicro), r.end.Format(time.StampMicro),
				killAt.Format(time.StampMicro), killedAt.Format(time.StampMicro), r.err)
		case r.err != nil:
			failed++
		case r.end.Before(killAt):
			before[slices.Index(ini, r.who)]++
		case r.start.After(killedAt) && r.end.Before(restartAt) && r.who != ini[1]:
			t.Errorf("request after the kill answered by %q; want %q", r.who, ini[1])
		}
	}
	if failed > 4 {
		t.Errorf("%d requests failed; want at most the 4 in flight at the kill", failed)
	}
	if before[0] == 0 || before[1] == 0 {
		t.Errorf("before the kill: %v requests per php-fpm; want both used", before)
	}
	if !served(ini[0], restartedAt) {
		t.Fatalf("the restarted php-fpm got no request within 5s (health check every 50ms); stats %+v", b.Stats())
	}
	t.Logf("%d requests, %d failed at the kill; before it %v per php-fpm; back %v after the restart",
		len(results), failed, before, backAt.Sub(restartedAt).Round(time.Millisecond))

	var downs, ups int
	for _, e := range logs.All() {
		if e.ContextMap()["upstream"] != "fpm0" {
			continue
		}
		switch e.Message {
		case "upstream down":
			downs++
		case "upstream up":
			ups++
		}
	}
	if downs == 0 || ups == 0 || downs != ups {
		t.Errorf("fpm0: %d upstream down and %d upstream up lines; want as many, at least one", downs, ups)
	}
	if b.Stats()[0].Down {
		t.Errorf("fpm0 still down at the end: %+v", b.Stats()[0])
	}
}
