// A test from a review of managed mode across reloads
// (docs/managed-pools.md): it failed on the code as reviewed, for the
// reason its comment gives.

package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"realroot/conf"
	"testing"
	"time"
)

// TestReloadOldPoolDrains: a reload that builds a new root watcher (here:
// poll-interval changed) starts a pool for the current release under the
// new watcher; the old watcher's pool stayed "serving" until every request
// of the old generation was done, with no bound: it was never "draining",
// so pool-drain-timeout did not apply. With max-pools 2 both slots stayed
// taken while one long request (an SSE stream, a long poll, an export) of
// the old generation ran, and every deploy meanwhile was refused, well past
// the documented bound ("realroot retries by itself as soon as a pool stops
// (at the latest after pool-drain-timeout)").
func TestReloadOldPoolDrains(t *testing.T) {
	c, dir := managedSite(t)
	c.PoolDrainTimeout = 2 * time.Second
	c.PoolStartTimeout = 2 * time.Second
	td := startDaemon(t, c)
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr

	slow := slowRequest(t, client, base, dir, 20000)

	reloadNewWatcher(t, td, c)
	flipTo(t, filepath.Join(dir, "current"), "r2")
	start := time.Now()
	served := servedWithin(client, base+"/", "r2", 10*time.Second)
	if !served {
		t.Errorf("r2 not served %v after the deploy (pool-drain-timeout 2s, pool-start-timeout 2s): the old root watcher's pool holds a max-pools slot while the old generation's request runs; refusals: %d",
			time.Since(start).Round(time.Millisecond), len(td.logged("release prepare failed; keeping current release")))
	}
	t.Logf("slow request: %s, done %v after the deploy", <-slow, time.Since(start).Round(time.Millisecond))
}

// slowRequest GETs slow.php for ms milliseconds from base, and returns once
// the script runs (its mark file in dir): the outcome, "status body
// error", comes on the channel.
func slowRequest(t *testing.T, client *http.Client, base, dir string, ms int) <-chan string {
	t.Helper()
	mark := filepath.Join(dir, "mark")
	slow := make(chan string, 1)
	go func() {
		st, body, err := get(client, fmt.Sprintf("%s/slow.php?ms=%d&mark=%s", base, ms, mark))
		slow <- fmt.Sprintf("%d %s %v", st, body, err)
	}()
	waitMarks(t, mark)
	return slow
}

// reloadNewWatcher reloads td with c and another poll-interval, which
// makes the reload build a new root watcher.
func reloadNewWatcher(t *testing.T, td *testDaemon, c conf.Config) {
	t.Helper()
	c.PollInterval = 30 * time.Millisecond
	if td.reload(t, c) {
		t.Fatalf("reload rejected")
	}
}

// servedWithin reports whether url answers 200 with want within d, asking
// every 50 ms.
func servedWithin(client *http.Client, url, want string, d time.Duration) bool {
	for start := time.Now(); time.Since(start) < d; time.Sleep(50 * time.Millisecond) {
		if code, body, _ := get(client, url); code == 200 && body == want {
			return true
		}
	}
	return false
}
