package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tortureSite is one release of the deploy-torture site: a front controller
// that includes 50 files (half through __DIR__, half through DOCUMENT_ROOT),
// a slow script that includes one file, sleeps and includes another, and a
// static file. Every file names its release.
func tortureSite(release string) map[string]string {
	files := map[string]string{
		"public/index.php": `<?php
$seen = [];
for ($i = 0; $i < 25; $i++) $seen[] = require __DIR__ . "/../lib/f$i.php";
for ($i = 25; $i < 50; $i++) $seen[] = require $_SERVER['DOCUMENT_ROOT'] . "/../lib/f$i.php";
echo implode(",", array_unique($seen));`,
		"public/slow.php": `<?php
$a = require __DIR__ . '/../lib/f0.php';
usleep(150000);
$b = require $_SERVER['DOCUMENT_ROOT'] . '/../lib/f1.php';
echo implode(",", array_unique([$a, $b]));`,
		"public/release.txt": release,
	}
	for i := 0; i < 50; i++ {
		files[fmt.Sprintf("lib/f%d.php", i)] = fmt.Sprintf("<?php return '%s';", release)
	}
	return files
}

// TestDeployTorture flips current between two releases every ~50 ms, half
// the time atomically (mv -T) and half by unlink + symlink (what BusyBox's
// ln -sfn does), while clients loop over the front controller, a slow
// script and a static file. Required: no non-2xx response, no response
// mixing releases, and no response that started after a switch was complete
// (realroot serving the new release) yet ran the old release.
func TestDeployTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("deploy torture takes seconds")
	}
	dir := t.TempDir()
	for _, rel := range []string{"A", "B"} {
		writeTree(t, filepath.Join(dir, "releases", rel), tortureSite(rel))
	}
	if err := os.Symlink("releases/A", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	srv, rs := newPHPServer(t, dir, Options{})
	releaseOf := func(root string) string { return filepath.Base(filepath.Dir(root)) }

	// completed counts switches realroot has taken up; cur is the release
	// they switched to. started counts switches begun.
	var (
		mu        sync.Mutex
		completed int
		cur       = "A"
		started   atomic.Int64
	)
	snapshot := func() (int, string) { mu.Lock(); defer mu.Unlock(); return completed, cur }

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var (
		wg                                         sync.WaitGroup
		total, failed, mixed, stale, detectWorstNS atomic.Int64
		flips                                      atomic.Int64
		firstErr                                   atomic.Value
	)
	report := func(format string, a ...any) {
		firstErr.CompareAndSwap(nil, fmt.Sprintf(format, a...))
	}

	wg.Add(1)
	go func() { // the deployer
		defer wg.Done()
		next := "B"
		for i := 0; ctx.Err() == nil; i++ {
			started.Add(1)
			switched := time.Now()
			link := filepath.Join(dir, "current")
			target := filepath.Join("releases", next)
			if i%2 == 0 { // atomic: symlink under a temp name, rename over
				os.Remove(link + ".tmp")
				if err := os.Symlink(target, link+".tmp"); err != nil {
					report("symlink: %v", err)
					return
				}
				if err := os.Rename(link+".tmp", link); err != nil {
					report("rename: %v", err)
					return
				}
			} else { // rm current && ln -s
				if err := os.Remove(link); err != nil {
					report("remove: %v", err)
					return
				}
				time.Sleep(2 * time.Millisecond) // the gap users fall into
				if err := os.Symlink(target, link); err != nil {
					report("symlink: %v", err)
					return
				}
			}
			// The switch is complete once realroot serves the new release.
			for releaseOf(rs.Current().Root) != next {
				if time.Since(switched) > 5*time.Second {
					report("switch to %s not taken up after 5s", next)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
			if d := time.Since(switched).Nanoseconds(); d > detectWorstNS.Load() {
				detectWorstNS.Store(d)
			}
			mu.Lock()
			completed, cur = completed+1, next
			mu.Unlock()
			flips.Add(1)
			if next == "A" {
				next = "B"
			} else {
				next = "A"
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for c := 0; c < 6; c++ {
		path := []string{"/", "/some/route", "/slow.php", "/release.txt", "/", "/slow.php"}[c]
		wg.Add(1)
		go func() { // a client
			defer wg.Done()
			for ctx.Err() == nil {
				n0, want := snapshot()
				resp, err := client.Get(srv.URL + path)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						report("GET %s: %v", path, err)
					}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				total.Add(1)
				body := string(b)
				switch {
				case err != nil || resp.StatusCode != 200:
					failed.Add(1)
					report("GET %s: %d %q %v", path, resp.StatusCode, body, err)
				case body != "A" && body != "B":
					mixed.Add(1)
					report("GET %s mixed releases: %q", path, body)
				case body != want && started.Load() <= int64(n0):
					// No switch began after this request started, yet it ran
					// a release other than the one realroot had switched to.
					stale.Add(1)
					report("GET %s ran %s after the switch to %s was complete", path, body, want)
				}
			}
		}()
	}
	wg.Wait()

	t.Logf("%d responses over %d switches; worst switch detection %v",
		total.Load(), flips.Load(), time.Duration(detectWorstNS.Load()))
	if e := firstErr.Load(); e != nil {
		t.Errorf("first problem: %s", e)
	}
	if failed.Load() != 0 || mixed.Load() != 0 || stale.Load() != 0 {
		t.Fatalf("failed %d, mixed %d, stale %d; want 0 of each", failed.Load(), mixed.Load(), stale.Load())
	}
	if flips.Load() < 10 || total.Load() < 100 {
		t.Fatalf("only %d switches and %d responses: the torture did not run", flips.Load(), total.Load())
	}
	if s := rs.Snapshot(); len(s.Draining) != 0 {
		t.Errorf("releases still draining after the load: %+v", s.Draining)
	}
}
