package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
	"realroot/internal/testutil"
)

// startFPM starts php-fpm with opts and phpScripts in its docroot, and a
// Client for it with maxConns connections.
func startFPM(t *testing.T, opts phpfpmtest.Options, maxConns int) (*phpfpmtest.Server, *Client, string) {
	t.Helper()
	srv := phpfpmtest.Start(t, opts)
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range phpScripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := closeAtCleanup(t, &Client{
		Network:     "unix",
		Address:     srv.Socket,
		ReadTimeout: 10 * time.Second,
		MaxConns:    maxConns,
	})
	return srv, c, docroot
}

// phpGet runs a GET of hello.php.
func phpGet(ctx context.Context, c *Client, docroot string) error {
	resp, err := c.Do(ctx, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && string(body) != "hello" {
		err = errors.New("body " + strconv.Quote(string(body)))
	}
	return err
}

// phpPost runs a POST of a small body to echo.php.
func phpPost(ctx context.Context, c *Client, docroot string) error {
	params := phpParams(docroot, "POST", "echo.php", "")
	params["CONTENT_TYPE"] = "application/octet-stream"
	params["CONTENT_LENGTH"] = "5"
	resp, err := c.Do(ctx, &gofast.Request{Params: params, Stdin: io.NopCloser(strings.NewReader("12345"))})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && string(body) != "5" {
		err = errors.New("body " + strconv.Quote(string(body)))
	}
	return err
}

// hammer runs do from n goroutines, total times in all, and returns the
// errors.
func hammer(n, total int, do func() error) []error {
	var (
		mu   sync.Mutex
		errs []error
		left atomic.Int64
		wg   sync.WaitGroup
	)
	left.Store(int64(total))
	for range n {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := do(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// TestPHPPoolMaxRequests: php-fpm recycles each worker after 3 requests and
// closes its connection then, right after FCGI_END_REQUEST.
func TestPHPPoolMaxRequests(t *testing.T) {
	_, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2, MaxRequests: 3}, 2)
	ctx := context.Background()
	get := func() error { return phpGet(ctx, c, docroot) }
	post := func() error { return phpPost(ctx, c, docroot) }
	for _, tt := range []struct {
		name    string
		clients int
		post    bool
	}{
		{"sequential GET", 1, false},
		{"concurrent GET", 8, false},
		{"sequential POST", 1, true},
		{"concurrent POST", 8, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats()
			do := get
			if tt.post {
				do = post
			}
			errs := hammer(tt.clients, 200, do)
			s := c.Stats()
			t.Logf("%d failures; dials %d, reuses %d, retries %d", len(errs), s.Dials-before.Dials, s.Reuses-before.Reuses, s.Retries-before.Retries)
			for _, err := range errs {
				t.Log(err)
			}
			if len(errs) > 0 {
				t.Errorf("%d of 200 requests failed; want none", len(errs))
			}
			if tt.post {
				// Each on a new connection: none can be lost at recycling.
				if s.Dials-before.Dials != 200 {
					t.Errorf("%d dials for 200 POSTs; want 200", s.Dials-before.Dials)
				}
			} else if s.Retries == before.Retries {
				// Kept connections are not checked when taken: a GET on
				// one that php-fpm closed fails unanswered and is retried.
				t.Errorf("Stats() = %+v: no retry; want the GETs on closed connections retried", s)
			}
			if s.Open > 2 {
				t.Errorf("Stats() = %+v; want at most 2 open", s)
			}
		})
	}
}

// TestPHPPoolAfterBody: a connection that carried a request body is kept
// and serves the next GET: php-fpm reads CONTENT_LENGTH bytes (all of them,
// also when the script does not) and skips the empty FCGI_STDIN record
// ending the body when it comes after FCGI_END_REQUEST.
func TestPHPPoolAfterBody(t *testing.T) {
	_, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2}, 1)
	tests := []struct {
		name     string
		script   string
		body     int
		withCL   bool
		wantKept bool
	}{
		{"echo", "echo.php", 5, true, true},
		{"echo 3 MiB", "echo.php", 3 << 20, true, true},
		{"body not read by the script", "ignore.php", 4 << 20, true, true},
		// php-fpm would take the body for the next request's records.
		{"no CONTENT_LENGTH", "echo.php", 5, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := phpParams(docroot, "POST", tt.script, "")
			params["CONTENT_TYPE"] = "application/octet-stream"
			if tt.withCL {
				params["CONTENT_LENGTH"] = strconv.Itoa(tt.body)
			}
			stdin := io.NopCloser(strings.NewReader(strings.Repeat("x", tt.body)))
			resp, _, err := fetch(t, c, &gofast.Request{Params: params, Stdin: stdin})
			if err != nil || resp.Status != 200 {
				t.Fatalf("POST: %v", err)
			}
			before := c.Stats()
			if err := phpGet(context.Background(), c, docroot); err != nil {
				t.Fatalf("GET after it: %v", err)
			}
			s := c.Stats()
			if kept := s.Reuses > before.Reuses; kept != tt.wantKept {
				t.Errorf("GET reused the POST's connection: %v; want %v (%+v)", kept, tt.wantKept, s)
			}
		})
	}
}

// TestPHPPoolWorkers: php-fpm gives each connection a worker for as long as
// it stays open, and queues the connections it accepts beyond
// pm.max_children until a worker is free.
func TestPHPPoolWorkers(t *testing.T) {
	// load runs GETs from 16 clients for d, each bounded by 5s, and returns
	// the failures and the slowest request.
	load := func(c *Client, docroot string, d time.Duration, once bool) (errs []error, slowest time.Duration, n int) {
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		stop := time.Now().Add(d)
		for range 16 {
			wg.Go(func() {
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					start := time.Now()
					err := phpGet(ctx, c, docroot)
					took := time.Since(start)
					cancel()
					mu.Lock()
					n++
					slowest = max(slowest, took)
					if err != nil {
						errs = append(errs, err)
					}
					mu.Unlock()
					if once || time.Now().After(stop) {
						return
					}
				}
			})
		}
		wg.Wait()
		return errs, slowest, n
	}

	t.Run("MaxConns = pm.max_children", func(t *testing.T) {
		_, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2}, 2)
		errs, slowest, n := load(c, docroot, time.Second, false)
		s := c.Stats()
		t.Logf("%d requests, slowest %v; %+v", n, slowest, s)
		if len(errs) > 0 {
			t.Errorf("%d of %d requests failed, first: %v", len(errs), n, errs[0])
		}
		if s.Open > 2 || s.Dials > 2 {
			t.Errorf("Stats() = %+v; want at most 2 open, 2 dials", s)
		}
	})
	t.Run("MaxConns > pm.max_children, burst", func(t *testing.T) {
		// 2 of the 4 connections wait in php-fpm's accept queue while the
		// other 2 serve the burst; those are closed as their exchanges end,
		// or once idle (at the latest after IdleTimeout), and the workers
		// take the waiting ones.
		_, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2}, 4)
		c.IdleTimeout = 200 * time.Millisecond
		errs, slowest, n := load(c, docroot, 0, true)
		t.Logf("%d requests, slowest %v; %+v", n, slowest, c.Stats())
		if len(errs) > 0 {
			t.Errorf("%d of %d requests failed, first: %v", len(errs), n, errs[0])
		}
		if slowest > 2*time.Second {
			t.Errorf("slowest request took %v; want about IdleTimeout", slowest)
		}
	})
	t.Run("MaxConns > pm.max_children, steady load", func(t *testing.T) {
		// Under steady load the busy connections never go idle, so the
		// ones php-fpm queued would wait until ReadTimeout; the pool
		// closes kept connections while a new one waits for its first
		// byte, which frees a worker for it (Stats.Yielded).
		_, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2}, 4)
		c.IdleTimeout = 200 * time.Millisecond
		c.ReadTimeout = 3 * time.Second
		errs, slowest, n := load(c, docroot, 1200*time.Millisecond, false)
		s := c.Stats()
		t.Logf("%d requests, %d failed, slowest %v; %+v", n, len(errs), slowest, s)
		if len(errs) > 0 {
			t.Errorf("%d of %d requests failed, first: %v", len(errs), n, errs[0])
		}
		if s.Dials > 2 && s.Yielded == 0 {
			t.Errorf("%d dials beyond the 2 workers but Yielded = 0", s.Dials)
		}
	})
}

// TestPHPPoolRestart: php-fpm killed and restarted while clients loop. Once
// it accepts again every request succeeds, and each connection it had open
// costs at most one retry.
func TestPHPPoolRestart(t *testing.T) {
	const maxConns = 2
	srv, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 2}, maxConns)
	type result struct {
		start time.Time
		err   error
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		stop    atomic.Bool
	)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				start := time.Now()
				err := phpGet(context.Background(), c, docroot)
				mu.Lock()
				results = append(results, result{start, err})
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	before := c.Stats()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	srv.Restart(t)
	restarted := time.Now()
	time.Sleep(1200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	var down, after, failedAfter int
	lastFailure := time.Duration(-1)
	for _, r := range results {
		since := r.start.Sub(restarted)
		if r.err != nil {
			down++
			if since >= 0 {
				lastFailure = max(lastFailure, since)
			}
		}
		if since >= 0 {
			after++
			if r.err != nil {
				failedAfter++
			}
		}
	}
	s := c.Stats()
	t.Logf("%d requests, %d failed; after restart %d, %d failed, last failure started %v after; %+v",
		len(results), down, after, failedAfter, lastFailure, s)
	if after == 0 || lastFailure >= time.Second {
		t.Errorf("a request started %v after the restart failed; want none after 1s", lastFailure)
	}
	// A connection php-fpm had open fails the request it carried at the
	// kill, or the next one sent on it: either is retried, once.
	if dead := s.Retries - before.Retries; dead > maxConns {
		t.Errorf("%d retries; want at most %d, one per connection", dead, maxConns)
	}
}

// TestPHPPoolTerminateTimeout: php-fpm's request_terminate_timeout also
// counts the time a worker waits for the next request on a kept connection:
// past it, the worker is killed, and the next GET, sent on its connection,
// is retried on a new one.
func TestPHPPoolTerminateTimeout(t *testing.T) {
	srv, c, docroot := startFPM(t, phpfpmtest.Options{Workers: 1, Pool: map[string]string{"request_terminate_timeout": "1s"}}, 1)
	c.IdleTimeout = time.Minute
	if err := phpGet(context.Background(), c, docroot); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // php-fpm checks about every 1/3 s
	if err := phpGet(context.Background(), c, docroot); err != nil {
		t.Fatal(err)
	}
	// The log says: child N, script '' (request: " ") execution timed out
	// (1.3 sec), terminating.
	if s, log := c.Stats(), srv.Log(); s.Reuses != 1 || s.Retries != 1 || s.Dials != 2 || !strings.Contains(log, "execution timed out") {
		t.Errorf("Stats() = %+v; want 1 reuse, 1 retry, 2 dials, and a timed out worker in php-fpm's log:\n%s", s, log)
	}
}

// TestPHPPoolIdleYieldsToQueued: MaxConns above pm.max_children. A request
// on a new connection waits in php-fpm's accept queue while the one worker
// serves a kept connection; that exchange ends and its connection goes idle
// before the new one is suspected of waiting for a worker, and no other
// request follows. The idle connection holds the worker: it must be closed
// once the wait is noticed, not after IdleTimeout (here a minute; the
// request would time out first).
func TestPHPPoolIdleYieldsToQueued(t *testing.T) {
	srv := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"hold.php": `<?php touch(__DIR__ . '/started');
for ($i = 0; $i < 500 && !file_exists(__DIR__ . '/go'); $i++) { usleep(10000); clearstatcache(); }
echo 'held';`,
		"hello.php": `<?php echo 'hello';`,
	}
	for name, src := range scripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := closeAtCleanup(t, &Client{Network: "unix", Address: srv.Socket, MaxConns: 2,
		IdleTimeout: time.Minute, ReadTimeout: 10 * time.Second,
		starveAfter: 2 * time.Second}) // the first exchange ends well within it
	get := func(script string) chan string {
		out := make(chan string, 1)
		go func() {
			_, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", script, "")})
			out <- fmt.Sprintf("%s %v", body, err)
		}()
		return out
	}
	held := get("hold.php")
	testutil.WaitFor(t, "hold.php started", func() bool {
		_, err := os.Stat(filepath.Join(docroot, "started"))
		return err == nil
	})
	hello := get("hello.php")
	testutil.WaitFor(t, "a second connection", func() bool { return c.Stats().Dials == 2 })
	if err := os.WriteFile(filepath.Join(docroot, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := <-held; got != "held <nil>" {
		t.Fatalf("hold.php: %s", got)
	}
	start := time.Now()
	if got := <-hello; got != "hello <nil>" {
		t.Fatalf("hello.php, queued behind an idle kept connection: %s after %v; want hello", got, time.Since(start))
	}
	if s := c.Stats(); s.Yielded != 1 {
		t.Errorf("Stats() = %+v; want 1 yielded", s)
	}
}
