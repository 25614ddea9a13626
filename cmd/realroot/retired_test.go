// Retired roots (docs/managed-pools.md): a restart under way when its root
// is retired (a bug, fixed with the test), and the release counters across
// reloads that replace the root watcher (a guard: they never went down).

package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/admin"
	"realroot/resolve"
)

// TestRetiredRestartCancelled: the serving pool of a root dies and its
// restart is inside launch (here php-fpm never answers) when a reload
// retires that root. restart launched with the manager's context, which
// retire does not cancel: the retired root's php-fpm went on starting
// until pool-start-timeout, holding a max-pools slot. The start must be
// cancelled, its processes gone, and the pool never serve.
func TestRetiredRestartCancelled(t *testing.T) {
	c, dir := managedSite(t)
	bin, err := phpfpmtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	// php-fpm, or while the hang file exists a master that never answers.
	hang, pidFile := filepath.Join(dir, "hang"), filepath.Join(dir, "hung.pid")
	wrapper := filepath.Join(dir, "php-fpm")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 600; fi\nexec %s \"$@\"\n",
		hang, pidFile, pidFile, pidFile, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.PHPFPM = wrapper
	c.PoolStartTimeout = time.Minute
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	// The serving pool dies; its restart hangs in launch.
	p1 := servingPool(t, status(t, adminURL))
	if err := os.WriteFile(hang, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(-p1.PID, syscall.SIGKILL)
	var p2 admin.Pool
	eventually(t, 10*time.Second, func() string {
		if _, err := os.Stat(pidFile); err != nil {
			return "the restart has not started php-fpm yet: " + err.Error()
		}
		for _, p := range status(t, adminURL).PHPFPMPools {
			if p.Gen == p1.Gen && p.Name != p1.Name && p.State == "starting" {
				p2 = p
				return ""
			}
		}
		return fmt.Sprintf("no restarted pool of gen %d starting", p1.Gen)
	})
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}

	// A reload retires the root: the new one starts a pool that answers.
	if err := os.Remove(hang); err != nil {
		t.Fatal(err)
	}
	reloadNewWatcher(t, td, c)
	retired := time.Now()
	eventually(t, 10*time.Second, func() string {
		if p := poolOf(status(t, adminURL), p2.Name); p.State != "stopped" {
			return fmt.Sprintf("%v after the reload, the retired root's restarted pool %s is %s (pool-start-timeout %v); want stopped: its start is not cancelled",
				time.Since(retired).Round(time.Millisecond), p.Name, p.State, c.PoolStartTimeout)
		}
		if procs := groupMembers(pid); len(procs) > 0 {
			return fmt.Sprintf("processes %v of the retired root's pool %s still run", procs, p2.Name)
		}
		return ""
	})
	st := status(t, adminURL)
	for _, p := range st.PHPFPMPools {
		if p.Gen == p1.Gen && p.State != "stopped" {
			t.Errorf("pool %s of the retired root is %s; want stopped", p.Name, p.State)
		}
	}
	eventually(t, 5*time.Second, func() string {
		if len(td.logged("php-fpm pool restart cancelled")) != 1 {
			return "the cancelled restart is not logged once"
		}
		return ""
	})
	// Both say why: the reload, not a bare "context canceled".
	const why = "a reload replaced this root watcher"
	if l := td.logged("php-fpm pool restart cancelled")[0]; !strings.Contains(fmt.Sprint(l["reason"]), why) {
		t.Errorf("restart cancelled reason = %v; want %q", l["reason"], why)
	}
	if p := poolOf(st, p2.Name); !strings.Contains(p.Error, why) {
		t.Errorf("the cancelled pool's error = %q; want it to say %q", p.Error, why)
	}
	if n := len(td.logged("php-fpm pool restarted")); n != 0 {
		t.Errorf("%d php-fpm pool restarted log lines; want 0", n)
	}
	if code, body, _ := get(client, "http://"+td.addr+"/"); code != 200 || body != "r1" {
		t.Errorf("after the reload GET / = %d %q; want 200 \"r1\"", code, body)
	}
}

// TestReleaseStatsMonotonic: the release counters /status reports are
// the current root watcher's plus those of the watchers reloads replaced;
// none goes down across reloads that build a new watcher, nor once the
// replaced watchers, retired, are closed.
func TestReleaseStatsMonotonic(t *testing.T) {
	c, dir := managedSite(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r3"), "r3")
	for _, r := range []string{"r1", "r2", "r3"} {
		warm := "<?php echo 'ok';"
		if r == "r3" {
			warm = "<?php http_response_code(500); echo 'broken';"
		}
		writeFiles(t, filepath.Join(dir, "releases", r), map[string]string{"public/warm.php": warm})
	}
	c.Warm = []string{"/warm.php"}
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + td.addr
	link := filepath.Join(dir, "current")
	serves := func(want string) {
		t.Helper()
		if !servedWithin(client, base+"/", want, 20*time.Second) {
			t.Fatalf("%s not served within 20s", want)
		}
	}
	var last resolve.Stats
	check := func(when string) resolve.Stats {
		t.Helper()
		got := status(t, adminURL).Stats
		for _, f := range []struct {
			name      string
			got, last uint64
		}{
			{"switches", got.Switches, last.Switches},
			{"resolve_failures", got.ResolveFailures, last.ResolveFailures},
			{"watch_detections", got.WatchDetections, last.WatchDetections},
			{"poll_detections", got.PollDetections, last.PollDetections},
			{"prepare_failures", got.PrepareFailures, last.PrepareFailures},
		} {
			if f.got < f.last {
				t.Errorf("%s: release_stats.%s = %d; want at least %d, as before", when, f.name, f.got, f.last)
			}
		}
		last = got
		return got
	}

	// The first watcher refuses r3 (its warm-up fails), then switches to r2.
	flipTo(t, link, "r3")
	eventually(t, 20*time.Second, func() string {
		if len(td.logged("release prepare failed; keeping current release")) == 0 {
			return "r3's failed warm-up not logged yet"
		}
		return ""
	})
	flipTo(t, link, "r2")
	serves("r2")
	if s := check("after r3 refused and r2 deployed"); s.Switches != 1 || s.PrepareFailures < 1 || s.WatchDetections+s.PollDetections < 1 {
		t.Fatalf("release_stats after r3 refused and r2 deployed = %+v; want 1 switch, a prepare failure, a detection", s)
	}

	// A reload replaces the watcher; the first one retires.
	reloadNewWatcher(t, td, c)
	check("after the first reload")
	flipTo(t, link, "r1")
	serves("r1")
	if s := check("after r1 deployed"); s.Switches != 2 {
		t.Errorf("release_stats.switches after r1 deployed = %d; want 2", s.Switches)
	}

	// Another reload; each replaced watcher is closed once its generation
	// has no request left.
	c.PollInterval = 40 * time.Millisecond
	if td.reload(t, c) {
		t.Fatal("reload rejected")
	}
	check("after the second reload")
	eventually(t, 10*time.Second, func() string {
		for _, p := range status(t, adminURL).PHPFPMPools {
			if p.State != "stopped" && p.Gen != status(t, adminURL).Current.Gen {
				return fmt.Sprintf("pool %s of a retired root is %s", p.Name, p.State)
			}
		}
		return ""
	})
	if s := check("once the retired roots' pools stopped"); s.Switches != 2 || s.PrepareFailures < 1 {
		t.Errorf("release_stats at the end = %+v; want 2 switches, a prepare failure", s)
	}
}
