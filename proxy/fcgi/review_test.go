// Regression tests of a review of the package (2026-11-22).

package fcgi

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
)

// TestPHPFinishRequest pins what a script that calls fastcgi_finish_request()
// does to the next request (Symfony's Response::send calls it; Laravel's
// terminate work runs after it). php-fpm sends FCGI_END_REQUEST early and
// its worker keeps running; on a kept connection the next request sent on
// it waits for that work (php-src#10335: no fix short of closing the
// connection). Kept connections are reused last in, first out, so with
// keep-alive the very next GET waits, while 3 workers are idle; without it
// (keepalive = false) it does not. docs/upstreams.md says so.
func TestPHPFinishRequest(t *testing.T) {
	const background = 1500 * time.Millisecond
	srv := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"hello.php":  `<?php echo "hello";`,
		"finish.php": `<?php echo "done"; fastcgi_finish_request(); usleep(1500000);`,
	}
	for name, src := range scripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name      string
		keepAlive bool
		wantWait  bool
	}{
		{name: "keep-alive", keepAlive: true, wantWait: true},
		{name: "no keep-alive", keepAlive: false, wantWait: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := closeAtCleanup(t, &Client{Network: "unix", Address: srv.Socket, ReadTimeout: 10 * time.Second,
				MaxConns: 4, DisableKeepAlive: !tt.keepAlive})
			// Warm up: open a few connections so that idle ones exist.
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					if _, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")}); err != nil || body != "hello" {
						t.Errorf("warm-up: %q, %v", body, err)
					}
				})
			}
			wg.Wait()
			if _, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "finish.php", "")}); err != nil || body != "done" {
				t.Fatalf("finish.php: %q, %v", body, err)
			}
			start := time.Now()
			_, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")})
			took := time.Since(start)
			if err != nil || body != "hello" {
				t.Fatalf("hello.php: %q, %v", body, err)
			}
			if waited := took > background/2; waited != tt.wantWait {
				t.Errorf("a GET after finish.php took %v (stats %+v); want a wait for finish.php's worker: %v", took, c.Stats(), tt.wantWait)
			}
			// Let finish.php's worker end before the next case.
			time.Sleep(background)
		})
	}
}

// TestPHPPoolKilledNotRetried: a GET that php-fpm read and started on a
// kept connection, then killed at request_terminate_timeout before any
// output, fails (502) and is not sent again. Before the fix it was retried
// on a new connection: its side effect happened twice, and the client
// waited for two kills.
func TestPHPPoolKilledNotRetried(t *testing.T) {
	srv := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1, Pool: map[string]string{"request_terminate_timeout": "1s"}})
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	count := filepath.Join(srv.Dir, "runs")
	scripts := map[string]string{
		"hello.php": `<?php echo "hello";`,
		"side.php":  `<?php file_put_contents(` + strconv.Quote(count) + `, "x", FILE_APPEND); sleep(5); echo "ok";`,
	}
	for name, src := range scripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := closeAtCleanup(t, &Client{Network: "unix", Address: srv.Socket, ReadTimeout: 10 * time.Second, MaxConns: 1, IdleTimeout: time.Minute})
	if _, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")}); err != nil || body != "hello" {
		t.Fatalf("hello.php: %q, %v", body, err)
	}
	_, _, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "side.php", "")})
	runs, _ := os.ReadFile(count)
	t.Logf("err %v; stats %+v", err, c.Stats())
	if len(runs) != 1 {
		t.Errorf("side.php ran %d times; want 1: php-fpm had started it (no byte of response, then the worker was killed), yet it was sent again", len(runs))
	}
}
