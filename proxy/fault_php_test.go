package proxy

// Faults of a real php-fpm under load, at the HTTP level: killed and
// restarted, recycling its workers (pm.max_requests); and a stalled upload.
// docs/reliability.md maps every case to its test.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// phpFaultSite is served by a real php-fpm in the fault tests under load.
var phpFaultSite = map[string]string{
	"index.php": `<?php echo "ok ", $_SERVER['REQUEST_METHOD'];`,
	"post.php": `<?php $n = 0; $f = fopen('php://input', 'rb');
while (!feof($f)) { $n += strlen(fread($f, 65536)); }
echo $n;`,
}

// newPHPFaultSite serves phpFaultSite through fpm with a pool of
// maxConns connections.
func newPHPFaultSite(t *testing.T, fpm *phpfpmtest.Server, maxConns int) *faultSite {
	t.Helper()
	dir := newDeploy(t, phpFaultSite, "A")
	core, logs := observer.New(zap.InfoLevel)
	c := &fcgi.Client{Network: "unix", Address: fpm.Socket, MaxConns: maxConns, ReadTimeout: 10 * time.Second}
	ts := newTestServer(t, New(newReleases(t, filepath.Join(dir, "current")), c, Options{Logger: zap.New(core)}))
	t.Cleanup(func() {
		ts.Close()
		c.Close()
	})
	return &faultSite{url: ts.URL, client: c, logs: logs}
}

// result is one request of a load loop.
type result struct {
	start, end time.Time
	status     int
	err        error // transport error, or a wrong body
}

func (r result) ok() bool { return r.err == nil && r.status == 200 }

var zeros = make([]byte, 256<<10)

// phpRequest runs request j of client i: a GET of index.php, or a POST to
// post.php of a size that varies from a few bytes to past BodyMemory.
func phpRequest(hc *http.Client, base string, i, j int) result {
	r := result{start: time.Now()}
	var resp *http.Response
	want := "ok GET"
	if (i+j)%2 == 0 {
		resp, r.err = hc.Get(fmt.Sprintf("%s/index.php?c=%d&r=%d", base, i, j))
	} else {
		n := (i*7919 + j*104729) % len(zeros)
		want = fmt.Sprint(n)
		resp, r.err = hc.Post(base+"/post.php", "application/octet-stream", bytes.NewReader(zeros[:n]))
	}
	if r.err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		r.status = resp.StatusCode
		if err != nil {
			r.err = err
		} else if r.status == 200 && string(b) != want {
			r.err = fmt.Errorf("body %q; want %q", b, want)
		}
	}
	r.end = time.Now()
	return r
}

// loop runs n clients, each doing requests until stop is closed or it has
// done max of them; it returns every result.
func loop(base string, n, max int, stop <-chan struct{}) []result {
	var (
		mu  sync.Mutex
		all []result
		wg  sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
			defer hc.CloseIdleConnections()
			for j := 0; j < max; j++ {
				select {
				case <-stop:
					return
				default:
				}
				r := phpRequest(hc, base, i, j)
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
				if !r.ok() {
					time.Sleep(20 * time.Millisecond) // php-fpm is down: don't spin
				}
			}
		})
	}
	wg.Wait()
	return all
}

// TestFaultPHPKilled kills php-fpm (SIGKILL to its process group) while 4
// clients loop over GETs and POSTs, and restarts it: only requests in
// flight at the kill or sent while it is down fail, with 502 (or, for a
// response already started, an aborted connection); every request sent
// once it is back succeeds; and the pool holds no dead connection.
func TestFaultPHPKilled(t *testing.T) {
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	s := newPHPFaultSite(t, fpm, 4)

	stop := make(chan struct{})
	done := make(chan []result)
	go func() { done <- loop(s.url, 4, 100000, stop) }()
	time.Sleep(700 * time.Millisecond)
	killed := time.Now()
	if err := fpm.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(300 * time.Millisecond)
	fpm.Restart(t)
	back := time.Now()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	results := <-done

	var before, during, after, failed, aborted int
	var recovery, slowest time.Duration
	for _, r := range results {
		switch {
		case r.end.Before(killed):
			before++
		case r.start.After(back):
			after++
			slowest = max(slowest, r.end.Sub(r.start))
		default:
			during++
		}
		if r.ok() {
			if r.start.After(back) && recovery == 0 {
				recovery = r.end.Sub(back)
			}
			continue
		}
		failed++
		inFlight := r.start.Before(down) && r.end.After(killed)
		switch {
		case r.start.After(back) || r.end.Before(killed):
			t.Errorf("request %v..%v failed (%d, %v) outside the outage %v..%v", r.start.Format("15:04:05.000"),
				r.end.Format("15:04:05.000"), r.status, r.err, killed.Format("15:04:05.000"), back.Format("15:04:05.000"))
		case r.err != nil && inFlight:
			aborted++
		case r.err != nil || r.status != http.StatusBadGateway:
			t.Errorf("request during the outage: %d, %v; want 502", r.status, r.err)
		}
	}
	t.Logf("%d requests: %d before the kill, %d overlapping the outage (%d failed, %d of them aborted), %d after (first success %v after the restart, slowest %v)",
		len(results), before, during, failed, aborted, after, recovery, slowest)
	if before == 0 || after == 0 {
		t.Fatalf("load too thin: %d requests before the kill, %d after the restart", before, after)
	}
	if slowest > 5*time.Second {
		t.Errorf("slowest request after the restart took %v", slowest)
	}

	// Every idle connection now is one php-fpm serves: taking them all
	// (more requests at once than MaxConns) finds none dead.
	st := s.client.Stats()
	if st.InUse != 0 || st.Open > 4 {
		t.Errorf("pool after the load: %+v; want nothing in use, at most 4 open", st)
	}
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if r := phpRequest(hc, s.url, 0, 2*i); !r.ok() {
				t.Errorf("after recovery: %d, %v", r.status, r.err)
			}
		})
	}
	wg.Wait()
	if st2 := s.client.Stats(); st2.Retries != st.Retries {
		t.Errorf("a dead connection was left in the pool: before %+v, after %+v", st, st2)
	}
	t.Logf("pool: %+v", s.client.Stats())
}

// TestFaultPHPMaxRequests: php-fpm recycling its workers every 50 requests
// (pm.max_requests) under 4 clients × 300 requests, half of them POSTs of
// up to 256 KiB: not one request fails.
func TestFaultPHPMaxRequests(t *testing.T) {
	verifyNoLeaks(t)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4, MaxRequests: 50})
	s := newPHPFaultSite(t, fpm, 4)
	results := loop(s.url, 4, 300, nil)
	var failed []string
	for _, r := range results {
		if !r.ok() {
			failed = append(failed, fmt.Sprintf("%d %v", r.status, r.err))
		}
	}
	st := s.client.Stats()
	t.Logf("%d requests, %d failed; pool %+v", len(results), len(failed), st)
	if len(results) != 1200 || len(failed) != 0 {
		t.Errorf("%d requests, %d failed: %q", len(results), len(failed), failed[:min(len(failed), 10)])
	}
	if lines := s.logs.FilterMessage("request failed").All(); len(lines) != 0 {
		t.Errorf("%d request failed log lines; first %v", len(lines), lines[0].ContextMap())
	}
}

// TestSlowBodyClosed: a client that stalls mid-body past BodyTimeout gets
// 408 and its connection closed (nginx's client_body_timeout), so that it
// holds no connection nor goroutine afterwards.
func TestSlowBodyClosed(t *testing.T) {
	verifyNoLeaks(t)
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	for _, te := range []string{"Content-Length: 100000\r\n\r\n" + strings.Repeat("x", 1000), "Transfer-Encoding: chunked\r\n\r\n100\r\n" + strings.Repeat("x", 100)} {
		s := newFaultSite(t, fpm.Socket, Options{BodyTimeout: 300 * time.Millisecond}, nil)
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "POST /post.php HTTP/1.1\r\nHost: x\r\n"+te)
		got, err := io.ReadAll(conn)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) || err != nil {
			t.Errorf("%.30q: got %.40q, %v; want 408 and the connection closed", te, got, err)
		}
	}
	if n := len(fpm.Requests()); n != 0 {
		t.Errorf("php-fpm got %d requests; want none", n)
	}
}
