// Tests of a review of eeab6dc (a reload's replaced root watcher retires,
// docs/managed-pools.md): each failed on the code as reviewed, for the
// reason its comment gives.

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/conf"
	"realroot/internal/fcgitest"
)

// TestRetiredIdlePoolStops: retire moved the old watcher's serving pool to
// draining, and drain stopped a draining pool once its release had drained
// (q.rel.Drained()) or after pool-drain-timeout. But a retired watcher
// never switches again, so its current release is never superseded and
// its Drained() never closes: the retired pool waited for the whole
// pool-drain-timeout (or the old generation's last request, on any other
// release) even with no request in flight, holding a max-pools slot. Here
// the old generation keeps one long request on r1 (a previous release of
// the old watcher); the old watcher's r2 pool has nothing in flight after
// the reload, yet a deploy of r3 was refused until pool-drain-timeout.
func TestRetiredIdlePoolStops(t *testing.T) {
	c, dir := managedSite(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r3"), "r3")
	c.MaxPools = 3
	c.PoolDrainTimeout = 40 * time.Second
	c.PoolStartTimeout = 2 * time.Second
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr
	link := filepath.Join(dir, "current")

	// A long request on r1, then r2 deployed: r1's pool drains it.
	slow := slowRequest(t, client, base, dir, 30000)
	flipTo(t, link, "r2")
	eventually(t, 10*time.Second, func() string {
		if code, body, _ := get(client, base+"/"); code != 200 || body != "r2" {
			return fmt.Sprintf("r2 not served yet: %d %q", code, body)
		}
		return ""
	})
	genOld := status(t, adminURL).Current.Gen

	// A reload builds a new watcher: the old one's r2 pool is retired,
	// with no request in flight, and stops.
	reloadNewWatcher(t, td, c)
	reloaded := time.Now()
	eventually(t, 10*time.Second, func() string { // well below pool-drain-timeout
		for _, p := range status(t, adminURL).PHPFPMPools {
			if p.Gen == genOld && p.State != "stopped" {
				return fmt.Sprintf("%v after the reload, the retired watcher's r2 pool %s is %s with %d in flight; want stopped",
					time.Since(reloaded).Round(time.Millisecond), p.Name, p.State, p.InFlight)
			}
		}
		return ""
	})

	// r3 is deployed: without the fix max-pools 3 are alive (r1 draining
	// the long request, the retired r2 pool, the new watcher's r2 pool).
	flipTo(t, link, "r3")
	start := time.Now()
	served := servedWithin(client, base+"/", "r3", 10*time.Second)
	if !served {
		var idle []string
		for _, p := range status(t, adminURL).PHPFPMPools {
			if p.Gen == genOld && p.State == "draining" {
				idle = append(idle, fmt.Sprintf("%s draining since %v with %d in flight", p.Name, time.Since(p.StateSince).Round(time.Second), p.InFlight))
			}
		}
		t.Errorf("r3 not served %v after the deploy (pool-start-timeout 2s): the retired watcher's pool of its current release never sees it drained and holds a max-pools slot until pool-drain-timeout 40s: %v; refusals: %d",
			time.Since(start).Round(time.Millisecond), idle, len(td.logged("release prepare failed; keeping current release")))
	}
	t.Logf("slow request: %s", <-slow)
}

// TestOnDrainWhileServed: after a reload that builds a new root watcher,
// the new watcher starts with its own Release of the current release r1 (a
// new generation), with none of the old generation's requests pinned to
// it. When r2 is deployed, the new watcher supersedes its r1, finds it
// empty at once and reported it drained: the on-drain command ran for r1
// while a request of the old generation still ran on it (pinned by the
// retired watcher, which never switches and so never reports r1's real
// drain). An on-drain command that deletes or archives the release (what
// it is for) did it under a running request. It must run once that
// request is done, and only once.
func TestOnDrainWhileServed(t *testing.T) {
	c, dir := managedSite(t)
	out := filepath.Join(dir, "ondrain.log")
	c.OnDrain = `echo "$REALROOT_RELEASE" >> ` + out
	c.MaxPools = 3 // room for r2 while r1's old pool drains the long request
	td := startDaemon(t, c)
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr

	slow := slowRequest(t, client, base, dir, 12000)

	reloadNewWatcher(t, td, c)
	flipTo(t, filepath.Join(dir, "current"), "r2")
	eventually(t, 10*time.Second, func() string {
		if code, body, _ := get(client, base+"/"); code != 200 || body != "r2" {
			return fmt.Sprintf("r2 not served yet: %d %q", code, body)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // the on-drain command runs asynchronously
	select {
	case s := <-slow:
		t.Fatalf("the slow request ended early: %s", s)
	default:
	}
	b, _ := os.ReadFile(out)
	r1 := filepath.Join(dir, "releases", "r1")
	if strings.Contains(string(b), r1) {
		t.Errorf("on-drain ran for %s while a request still runs on it (the old generation's, pinned by the retired watcher); on-drain log:\n%s\n\"release drained\" lines: %v",
			r1, b, td.logged("release drained"))
	}
	t.Logf("slow request: %s", <-slow)

	// Now r1 has drained for good: the command runs, once.
	eventually(t, 10*time.Second, func() string {
		if b, _ := os.ReadFile(out); !strings.Contains(string(b), r1) {
			return fmt.Sprintf("on-drain not run for %s after its last request; on-drain log:\n%s", r1, b)
		}
		return ""
	})
	time.Sleep(time.Second)
	b, _ = os.ReadFile(out)
	if n := strings.Count(string(b), r1+"\n"); n != 1 {
		t.Errorf("on-drain ran %d times for %s; want 1; on-drain log:\n%s", n, r1, b)
	}
}

// TestReloadAfterFailedWarmup: a release whose warm-up fails is not
// switched to (warm-failure = keep, the default): users stay on r1. A
// reload that builds a new root watcher (poll-interval changed) resolved
// the root again and poolRoot.start published whatever it resolved to,
// with a pool but no warm-up: r2, refused a moment ago, then served every
// request, and the old watcher, which kept r1, was retired. Now the
// reload keeps the running watcher (and its poll-interval), which still
// deploys a good release with its warm-up.
func TestReloadAfterFailedWarmup(t *testing.T) {
	c, dir := managedSite(t)
	writeFiles(t, filepath.Join(dir, "releases", "r1"), map[string]string{"public/warm.php": "<?php echo 'ok';"})
	writeFiles(t, filepath.Join(dir, "releases", "r2"), map[string]string{"public/warm.php": "<?php http_response_code(500); echo 'broken';"})
	writeManagedRelease(t, filepath.Join(dir, "releases", "r3"), "r3")
	writeFiles(t, filepath.Join(dir, "releases", "r3"), map[string]string{"public/warm.php": "<?php echo 'ok';"})
	c.Warm = []string{"/warm.php"}
	td := startDaemon(t, c)
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr
	link := filepath.Join(dir, "current")

	flipTo(t, link, "r2")
	eventually(t, 20*time.Second, func() string {
		if len(td.logged("release prepare failed; keeping current release")) == 0 {
			return "r2's failed warm-up not logged yet"
		}
		return ""
	})
	if code, body, _ := get(client, base+"/"); code != 200 || body != "r1" {
		t.Fatalf("after r2's failed warm-up GET / = %d %q; want r1", code, body)
	}

	reloadNewWatcher(t, td, c)
	time.Sleep(time.Second)
	if code, body, _ := get(client, base+"/"); body != "r1" {
		t.Errorf("after a reload that changed poll-interval GET / = %d %q; want r1: r2, whose warm-up failed (warm-failure keep), is published by the new watcher's start without a warm-up", code, body)
	}
	if len(td.logged("release warm-up failed; keeping the running root watcher")) != 1 {
		t.Errorf("the kept root watcher is not logged once")
	}

	flipTo(t, link, "r3")
	eventually(t, 20*time.Second, func() string {
		if code, body, _ := get(client, base+"/"); code != 200 || body != "r3" {
			return fmt.Sprintf("r3 not served yet: %d %q", code, body)
		}
		return ""
	})
}

// TestReloadAfterFailedWarmupShared is TestReloadAfterFailedWarmup with
// the shared php-fpm (no managed pools): buildGen published the new
// watcher's release without its warm-up too.
func TestReloadAfterFailedWarmupShared(t *testing.T) {
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, stdout io.Writer) error {
		if strings.Contains(req.Params["DOCUMENT_ROOT"], "/releases/2/") {
			_, err := io.WriteString(stdout, "Status: 500\r\nContent-Type: text/plain\r\n\r\nbroken")
			return err
		}
		_, err := io.WriteString(stdout, "Content-Type: text/plain\r\n\r\nrelease 1")
		return err
	})
	dir := site(t)
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.Listen = []string{"127.0.0.1:0"}
	c.ReleaseChecks = false
	c.Warm = []string{"/"}
	c.PollInterval = 20 * time.Millisecond
	td := startDaemon(t, c)
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr

	if err := os.Rename(filepath.Join(dir, "other"), filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if len(td.logged("release prepare failed; keeping current release")) == 0 {
			return "the failed warm-up of releases/2 not logged yet"
		}
		return ""
	})
	reloadNewWatcher(t, td, c)
	if code, body, _ := get(client, base+"/"); code != 200 || body != "release 1" {
		t.Errorf("after a reload that changed poll-interval GET / = %d %q; want 200 \"release 1\": releases/2 failed its warm-up", code, body)
	}
}
