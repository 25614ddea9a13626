package fcgi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"realroot/internal/testutil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// answerFunc answers one request on a kept connection; false closes the
// connection instead (without answering, unless it wrote something).
type answerFunc func(c *fakeConn, req fakeRequest, body []byte) bool

// serveKeep serves requests on a connection until the client closes it, as
// php-fpm does: after a request without FCGI_KEEP_CONN it closes it.
func serveKeep(answer answerFunc) func(c *fakeConn) {
	return func(c *fakeConn) {
		for {
			req, err := c.readHead()
			if err != nil {
				return
			}
			var body bytes.Buffer
			if err := c.readStdin(&body); err != nil {
				return
			}
			if !answer(c, req, body.Bytes()) || req.flags&flagKeepConn == 0 {
				return
			}
		}
	}
}

// reply writes a complete response with the given stdout.
func reply(c *fakeConn, stdout string) bool {
	_, err := c.Write(appendEnd(appendStream(nil, typeStdout, stdout, 8192), 0, statusRequestComplete))
	return err == nil
}

// connLog counts the connections a fake accepted and saw closed, and the
// requests it read.
type connLog struct {
	mu       sync.Mutex
	opened   int
	closed   int
	requests []fakeRequest
}

// track wraps a handler: it counts the connection, and passes the handler
// its index (0 for the first connection accepted).
func (l *connLog) track(handle func(c *fakeConn, i int)) func(c *fakeConn) {
	return func(c *fakeConn) {
		l.mu.Lock()
		i := l.opened
		l.opened++
		l.mu.Unlock()
		handle(c, i)
		l.mu.Lock()
		l.closed++
		l.mu.Unlock()
	}
}

func (l *connLog) record(req fakeRequest) {
	l.mu.Lock()
	l.requests = append(l.requests, req)
	l.mu.Unlock()
}

func (l *connLog) counts() (opened, closed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opened, l.closed
}

// uris returns the REQUEST_URI of each request read, in order.
func (l *connLog) uris() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for _, r := range l.requests {
		s = append(s, r.params["REQUEST_URI"])
	}
	return s
}

func uriParams(method, uri string) map[string]string {
	p := baseParams(method)
	p["REQUEST_URI"] = uri
	return p
}

func TestPoolReuse(t *testing.T) {
	big := strings.Repeat("b", 3*stdinChunk+5)
	tests := []struct {
		name       string
		disable    bool   // DisableKeepAlive
		method     string // GET: no body
		body       string
		withCL     bool // send CONTENT_LENGTH
		closeEarly bool // Body.Close after one byte
		wantDials  uint64
		wantKept   bool // the last connection is kept, and a GET reuses it
	}{
		{name: "GET", method: "GET", wantDials: 1, wantKept: true},
		{name: "HEAD", method: "HEAD", wantDials: 1, wantKept: true},
		// A request that cannot be sent twice gets a new connection, then
		// leaves it for the next.
		{name: "POST", method: "POST", body: "k=v", withCL: true, wantDials: 10, wantKept: true},
		{name: "big POST", method: "POST", body: big, withCL: true, wantDials: 10, wantKept: true},
		// php-fpm reads CONTENT_LENGTH bytes of the body: without it, the
		// rest would be taken for the next request's records.
		{name: "POST without CONTENT_LENGTH", method: "POST", body: "k=v", wantDials: 10},
		{name: "disabled", disable: true, method: "GET", wantDials: 10},
		{name: "body closed early", method: "GET", closeEarly: true, wantDials: 10},
	}
	const n = 10
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &connLog{}
			c := startFake(t, log.track(func(c *fakeConn, _ int) {
				serveKeep(func(c *fakeConn, req fakeRequest, body []byte) bool {
					log.record(req)
					return reply(c, "A: b\r\n\r\n"+strings.Repeat("x", 1<<16)+string(body))
				})(c)
			}))
			c.DisableKeepAlive = tt.disable
			for i := range n {
				params := uriParams(tt.method, fmt.Sprintf("/%d", i))
				req := &gofast.Request{Params: params}
				if tt.body != "" {
					req.Stdin = io.NopCloser(strings.NewReader(tt.body))
					if tt.withCL {
						params["CONTENT_LENGTH"] = strconv.Itoa(len(tt.body))
					}
				}
				resp, err := c.Do(context.Background(), req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if tt.closeEarly {
					resp.Body.Read(make([]byte, 1))
					resp.Body.Close()
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || len(got) != 1<<16+len(tt.body) || !strings.HasSuffix(string(got), tt.body) {
					t.Fatalf("request %d: got %d bytes, %v; want %d", i, len(got), err, 1<<16+len(tt.body))
				}
			}
			wantOpen := 0
			if tt.wantKept {
				wantOpen = 1
			}
			s := c.Stats()
			if s.Dials != tt.wantDials || s.Reuses != n-tt.wantDials || s.Open != wantOpen || s.InUse != 0 {
				t.Errorf("Stats() = %+v; want %d dials, %d reuses, %d open, 0 in use", s, tt.wantDials, n-tt.wantDials, wantOpen)
			}
			if tt.wantKept {
				if _, _, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")}); err != nil {
					t.Fatal(err)
				}
				if s := c.Stats(); s.Dials != tt.wantDials {
					t.Errorf("a GET after them dialed: Stats() = %+v", s)
				}
			} else {
				testutil.WaitFor(t, "the fake to see every connection closed", func() bool {
					opened, closed := log.counts()
					return closed == opened
				})
			}
			wantFlags := byte(flagKeepConn)
			if tt.disable {
				wantFlags = 0
			}
			for _, r := range log.requests {
				if r.flags != wantFlags {
					t.Errorf("%s: flags %d; want %d", r.params["REQUEST_URI"], r.flags, wantFlags)
				}
			}
			if opened, _ := log.counts(); uint64(opened) != tt.wantDials {
				t.Errorf("fake accepted %d connections; want %d", opened, tt.wantDials)
			}
		})
	}
}

// TestPoolLIFOIdleTimeout: after a burst has opened 3 connections, a steady
// trickle of requests uses one of them only, and the 2 others are closed
// after IdleTimeout; then the last one too.
func TestPoolLIFOIdleTimeout(t *testing.T) {
	log := &connLog{}
	var arrived atomic.Int32
	burst := make(chan struct{})
	c := startFake(t, log.track(func(c *fakeConn, i int) {
		first := true
		serveKeep(func(c *fakeConn, req fakeRequest, body []byte) bool {
			if first { // hold the burst until 3 connections carry it
				first = false
				if arrived.Add(1) == 3 {
					close(burst)
				}
				select {
				case <-burst:
				case <-c.done:
					return false
				}
			}
			return reply(c, "\r\n"+strconv.Itoa(i))
		})(c)
	}))
	c.IdleTimeout = 250 * time.Millisecond
	get := func() string {
		_, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
		if err != nil {
			t.Error(err)
		}
		return body
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { get() })
	}
	wg.Wait()
	if s := c.Stats(); s.Open != 3 || s.Idle != 3 {
		t.Fatalf("after the burst: Stats() = %+v; want 3 open, 3 idle", s)
	}
	hot := get()
	for start := time.Now(); time.Since(start) < 600*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if got := get(); got != hot {
			t.Fatalf("got connection %s; want %s, the most recently used", got, hot)
		}
	}
	s := c.Stats()
	if opened, closed := log.counts(); s.IdleClosed != 2 || s.Open != 1 || opened != 3 || closed != 2 {
		t.Errorf("after 600ms of trickle: Stats() = %+v, fake saw %d opened, %d closed; want 2 idle closed, 1 open, 3 opened, 2 closed", s, opened, closed)
	}
	testutil.WaitFor(t, "the last idle connection to close", func() bool {
		_, closed := log.counts()
		return c.Stats().IdleClosed == 3 && closed == 3
	})
	if s := c.Stats(); s.Open != 0 || s.Idle != 0 {
		t.Errorf("Stats() = %+v; want none open", s)
	}
}

// TestPoolDeadConnection: an application that ends each connection after
// one request, with FCGI_KEEP_CONN or not, as php-fpm with
// pm.max_requests=1 does: it half-closes it and discards what arrives until
// it is closed. Each connection is kept, and the next GET sent on it is
// retried on a new one: kept connections are not checked when taken.
func TestPoolDeadConnection(t *testing.T) {
	c := startFake(t, serveKeep(func(c *fakeConn, req fakeRequest, body []byte) bool {
		reply(c, "\r\nok")
		c.Conn.(*net.UnixConn).CloseWrite()
		io.Copy(io.Discard, c.r)
		return false
	}))
	const n = 50
	for i := range n {
		if _, body, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")}); err != nil || body != "ok" {
			t.Fatalf("request %d: got %q, %v; want ok", i, body, err)
		}
	}
	s := c.Stats()
	if s.Dials != n || s.Reuses != n-1 || s.Retries != n-1 {
		t.Errorf("Stats() = %+v; want %d dials, %d reuses, %d retries", s, n, n-1, n-1)
	}
}

// TestRetryRule: which failures on a kept connection are retried on a new
// one. The application answers a first GET, then does what the case says
// the first time it reads the second request, and answers everything else.
func TestRetryRule(t *testing.T) {
	post := func() *gofast.Request {
		p := uriParams("POST", "/second")
		p["CONTENT_LENGTH"] = "3"
		return &gofast.Request{Params: p, Stdin: io.NopCloser(strings.NewReader("k=v"))}
	}
	request := func(method string) func() *gofast.Request {
		return func() *gofast.Request { return &gofast.Request{Params: uriParams(method, "/second")} }
	}
	tests := []struct {
		name      string
		second    func() *gofast.Request
		onSecond  func(c *fakeConn) // then the connection is closed
		closeIdle bool              // the connection is closed after the first GET instead
		wantErr   error
		wantSeen  int // times the application read the second request
		wantRetry uint64
		wantDials uint64
	}{
		// Closed whole after reading: a worker that died, maybe running it.
		{name: "GET read then closed", second: request("GET"), wantErr: ErrTruncated, wantSeen: 1, wantDials: 1},
		{name: "HEAD read then closed", second: request("HEAD"), wantErr: ErrTruncated, wantSeen: 1, wantDials: 1},
		{
			// php-fpm at pm.max_requests: half-closed, it discards what
			// it reads until the connection is closed. It did not run it.
			name: "GET dropped by a draining connection", second: request("GET"),
			onSecond: func(c *fakeConn) {
				c.Conn.(*net.UnixConn).CloseWrite()
				io.Copy(io.Discard, c.r)
			},
			wantSeen: 2, wantRetry: 1, wantDials: 2,
		},
		{
			name: "HEAD dropped by a draining connection", second: request("HEAD"),
			onSecond: func(c *fakeConn) {
				c.Conn.(*net.UnixConn).CloseWrite()
				io.Copy(io.Discard, c.r)
			},
			wantSeen: 2, wantRetry: 1, wantDials: 2,
		},
		{
			// Not checked when taken: the first write fails (EPIPE), so
			// nothing reached php-fpm.
			name: "GET on a connection closed while idle", second: request("GET"),
			closeIdle: true, wantSeen: 1, wantRetry: 1, wantDials: 2,
		},
		{
			name: "HEAD on a connection closed while idle", second: request("HEAD"),
			closeIdle: true, wantSeen: 1, wantRetry: 1, wantDials: 2,
		},
		{
			// A byte of response means php-fpm ran it.
			name: "GET answered in part", second: request("GET"),
			onSecond: func(c *fakeConn) { c.Write(appendStream(nil, typeStdout, "A: b\r\n", 100)) },
			wantErr:  ErrTruncated, wantSeen: 1, wantDials: 1,
		},
		// The others went on a new connection: php-fpm may have run them,
		// never twice.
		{name: "POST read then closed", second: post, wantErr: ErrTruncated, wantSeen: 1, wantDials: 2},
		{name: "POST without body read then closed", second: request("POST"), wantErr: ErrTruncated, wantSeen: 1, wantDials: 2},
		{name: "DELETE read then closed", second: request("DELETE"), wantErr: ErrTruncated, wantSeen: 1, wantDials: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &connLog{}
			closedFirst := make(chan struct{})
			var failed atomic.Bool
			c := startFake(t, log.track(func(c *fakeConn, i int) {
				serveKeep(func(fc *fakeConn, req fakeRequest, body []byte) bool {
					log.record(req)
					uri := req.params["REQUEST_URI"]
					if uri == "/first" && tt.closeIdle {
						reply(fc, "\r\nfirst")
						fc.Close()
						close(closedFirst)
						return false
					}
					if uri == "/second" && !tt.closeIdle && !failed.Swap(true) {
						if tt.onSecond != nil {
							tt.onSecond(fc)
						}
						return false
					}
					return reply(fc, "\r\n"+uri)
				})(c)
			}))
			if _, _, err := fetch(t, c, &gofast.Request{Params: uriParams("GET", "/first")}); err != nil {
				t.Fatal(err)
			}
			if tt.closeIdle {
				<-closedFirst
			}
			_, body, err := fetch(t, c, tt.second())
			if tt.wantErr == nil && (err != nil || body != "/second") {
				t.Errorf("got %q, %v; want %q", body, err, "/second")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %q, %v; want %v", body, err, tt.wantErr)
			}
			seen := 0
			for _, u := range log.uris() {
				if u == "/second" {
					seen++
				}
			}
			if seen != tt.wantSeen {
				t.Errorf("application read the request %d times; want %d", seen, tt.wantSeen)
			}
			if s := c.Stats(); s.Retries != tt.wantRetry || s.Dials != tt.wantDials {
				t.Errorf("Stats() = %+v; want %d retries, %d dials", s, tt.wantRetry, tt.wantDials)
			}
		})
	}
	t.Run("new connection not retried", func(t *testing.T) {
		log := &connLog{}
		c := startFake(t, log.track(func(c *fakeConn, i int) {
			serveKeep(func(fc *fakeConn, req fakeRequest, body []byte) bool {
				log.record(req)
				return i > 0 && reply(fc, "\r\nok")
			})(c)
		}))
		_, _, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")})
		if !errors.Is(err, ErrTruncated) || len(log.uris()) != 1 || c.Stats().Retries != 0 {
			t.Errorf("got %v, %d requests seen, %+v; want ErrTruncated, 1, no retry", err, len(log.uris()), c.Stats())
		}
	})
}

// TestPoolNoCrossTalk: many concurrent requests with distinct bodies over a
// small pool each get their own echo, also when some clients go away
// mid-response. GETs echo their query, POSTs their body; both echo X-Id.
func TestPoolNoCrossTalk(t *testing.T) {
	c := startStdlib(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Id", r.Header.Get("X-Id"))
		io.WriteString(w, r.URL.RawQuery)
		if r.Method == "POST" { // a GET's body is a shared global: racy to read
			io.Copy(w, r.Body)
		}
	}))
	c.MaxConns = 3
	const clients, each = 24, 20
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("%d-%d", g, i)
				want := strings.Repeat(id+",", 1+(g*each+i)%7*1000)
				req := &gofast.Request{Params: baseParams("GET")}
				if i%2 == 0 {
					req.Params["REQUEST_URI"] = "/t.php?" + want
				} else {
					req.Params = baseParams("POST")
					req.Params["CONTENT_LENGTH"] = strconv.Itoa(len(want))
					req.Stdin = io.NopCloser(strings.NewReader(want))
				}
				req.Params["HTTP_X_ID"] = id
				resp, err := c.Do(context.Background(), req)
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				if i%5 == 4 { // client gone
					resp.Body.Read(make([]byte, 10))
					resp.Body.Close()
					continue
				}
				xid := resp.Header.Get("X-Id") // valid until the body's end
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want || xid != id {
					t.Errorf("%s: got X-Id %s, %d bytes %.20q, %v; want its own echo of %d bytes",
						id, xid, len(got), got, err, len(want))
					return
				}
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if s.Open > 3 || s.InUse != 0 || s.Waiting != 0 || s.Reuses == 0 {
		t.Errorf("Stats() = %+v; want at most 3 open, none in use or waiting, some reuses", s)
	}
	t.Logf("%+v", s)
}

// TestPoolAnswerBeforeBody: the application answers, FCGI_END_REQUEST
// included, before it reads the request body. The connection is kept once
// the body is sent, which Body.Close waits for.
func TestPoolAnswerBeforeBody(t *testing.T) {
	body := strings.Repeat("i", 4<<20) // more than the socket buffers
	c := startFake(t, func(c *fakeConn) {
		for {
			req, err := c.readHead()
			if err != nil {
				return
			}
			if !reply(c, "\r\n"+req.params["REQUEST_METHOD"]) || c.readStdin(io.Discard) != nil {
				return
			}
		}
	})
	params := baseParams("POST")
	params["CONTENT_LENGTH"] = strconv.Itoa(len(body))
	resp, got, err := fetch(t, c, &gofast.Request{Params: params, Stdin: io.NopCloser(strings.NewReader(body))})
	if err != nil || got != "POST" {
		t.Fatalf("POST: got %v %q, %v; want POST", resp, got, err)
	}
	if _, got, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")}); err != nil || got != "GET" {
		t.Fatalf("GET: got %q, %v; want GET", got, err)
	}
	if s := c.Stats(); s.Dials != 1 || s.Reuses != 1 {
		t.Errorf("Stats() = %+v; want 1 dial, 1 reuse", s)
	}
}
