package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
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
		ts := newTestServer(t, New(rs, b, Options{MaxBodySize: -1}))
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
