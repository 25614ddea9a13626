package proxy

// Helpers of the side-by-side tests in h1use_test.go.

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/proxy/h1"
)

// bothServers serves h with net/http's server and with proxy/h1; it returns
// their addresses, in that order. h1's warnings (superfluous WriteHeader,
// panics) fail the test.
func bothServers(t *testing.T, h http.Handler) [2]string {
	t.Helper()
	std := httptest.NewServer(h)
	t.Cleanup(std.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	s := &h1.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.New(core)}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		<-done
		for _, e := range logs.All() {
			t.Errorf("h1 logged %q %v", e.Message, e.ContextMap())
		}
	})
	return [2]string{std.Listener.Addr().String(), ln.Addr().String()}
}

var serverNames = [2]string{"net/http", "h1"}

// probe follows a request on the same connection: answered if the
// connection was kept, in sync.
const probe = "GET /small.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

// wireCase is raw sent to both servers (addrs, else the test's default).
type wireCase struct {
	name    string
	addrs   [2]string
	raw     string
	noProbe bool   // raw is unfinished: the probe would be its body
	differs string // why h1 answers otherwise; its answer must still be framed
}

// compareOnWire sends each case's raw, then the probe, to both servers
// and compares what they send back.
func compareOnWire(t *testing.T, addrs [2]string, tests []wireCase) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := addrs
			if tt.addrs[0] != "" {
				to = tt.addrs
			}
			raw := tt.raw
			if !tt.noProbe {
				raw += probe
			}
			got := [2]string{onWire(t, to[0], raw), onWire(t, to[1], raw)}
			if strings.Contains(got[1], "unparsed") {
				t.Errorf("h1 sent bytes that are no response: %s", got[1])
			}
			switch {
			case tt.differs == "" && got[0] != got[1]:
				t.Errorf("%q:\nnet/http: %s\nh1:       %s", raw, got[0], got[1])
			case tt.differs != "" && got[0] == got[1]:
				t.Errorf("%q: both answer %s; want a difference (%s)", raw, got[0], tt.differs)
			}
		})
	}
}

// onWire sends raw on a new connection to addr and describes every response
// until the server closes: status, framing, headers but Date and
// X-Request-Id, the body, and bytes that are no response.
func onWire(t *testing.T, addr, raw string) string {
	t.Helper()
	c := dialWire(t, addr, raw)
	defer c.Close()
	br := bufio.NewReader(c)
	method, _, _ := strings.Cut(raw, " ")
	var b strings.Builder
	for {
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				fmt.Fprintf(&b, "unparsed %s", short(rest))
			}
			return b.String()
		}
		if res.StatusCode >= 200 {
			method = "GET" // the probe's response is next
		}
		body, err := io.ReadAll(res.Body)
		var keys []string
		for k, vv := range res.Header {
			if k != "Date" && k != "X-Request-Id" {
				keys = append(keys, k+"="+short([]byte(strings.Join(vv, ","))))
			}
		}
		slices.Sort(keys)
		fmt.Fprintf(&b, "[%d cl=%d te=%v close=%v %v %s err=%v] ", res.StatusCode, res.ContentLength,
			res.TransferEncoding, res.Close, keys, short(body), err)
	}
}

// short quotes b, or gives its length and checksum when long.
func short(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("<%d bytes %08x>", len(b), crc32.ChecksumIEEE(b))
}

func randomText(n int, seed byte) string {
	rng := rand.New(rand.NewChaCha8([32]byte{seed}))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz \n"[rng.IntN(28)]
	}
	return string(b)
}

// dialWire sends raw on a new connection to addr.
func dialWire(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, raw) // the server may answer before it reads it all
	return c
}

// settle waits until no goroutine serves a connection and at most max files
// are open (any number if max < 0); it returns how many are.
func settle(t *testing.T, max int) int {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		g, f := leftovers(t)
		if g == 0 && (max < 0 || f <= max) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines serving, %d files open; want none, at most %d", g, f, max)
		}
	}
}

// leftovers counts the goroutines of either server's connections, and the
// process's open files.
func leftovers(t *testing.T) (goroutines, files int) {
	buf := make([]byte, 4<<20)
	for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
		if bytes.Contains(g, []byte("h1.(*conn).")) || bytes.Contains(g, []byte("net/http.(*conn).serve(")) {
			goroutines++
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return goroutines, len(fds)
}
