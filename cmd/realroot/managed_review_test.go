// Tests of a fourth review of managed mode (docs/managed-pools.md): each
// failed on the code as reviewed, for the reason its comment gives.

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
	"realroot/resolve"
)

// TestManagedCountersAcrossPoolStop: in managed mode the FastCGI counters of
// /metrics (realroot_fastcgi_dials_total, ..._reuses_total) summed the
// clients of the pools alive only: once a release's pool stopped, what its
// client had counted left the sum, and the counters went down in a running
// process (rate() and increase() then count a reset that did not happen).
// TestCountersAcrossReload covers the same for reloads, not for pools.
func TestManagedCountersAcrossPoolStop(t *testing.T) {
	c, dir := managedSite(t)
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 {
		if code, body, err := get(client, "http://"+td.addr+"/"); code != 200 || body != "r1" {
			t.Fatalf("GET / = %d %q %v; want 200 r1", code, body, err)
		}
	}
	old := servingPool(t, status(t, adminURL))
	before := metricsText(t, adminURL)
	if v := metricValue(t, before, "realroot_fastcgi_dials_total"); v < 1 {
		t.Fatalf("realroot_fastcgi_dials_total = %v after 3 requests; want at least 1", v)
	}
	if err := resolve.Switch(filepath.Join(dir, "current"), filepath.Join(dir, "releases", "r2")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if p := poolOf(status(t, adminURL), old.Name); p.State != "stopped" {
			return fmt.Sprintf("r1's pool %s is %s; want stopped", p.Name, p.State)
		}
		return ""
	})
	after := metricsText(t, adminURL)
	for _, name := range []string{"realroot_fastcgi_dials_total", "realroot_fastcgi_reuses_total"} {
		if b, a := metricValue(t, before, name), metricValue(t, after, name); a < b {
			t.Errorf("counter %s went from %v to %v once r1's pool stopped", name, b, a)
		}
	}
}

// hangingFPM makes c's php-fpm a wrapper: while dir/hang exists, a
// start writes its pid to dir/hung.pid and hangs (a master that never
// answers); else it runs php-fpm. It returns the hang and pid files.
func hangingFPM(t *testing.T, c *conf.Config, dir string) (hang, pidFile string) {
	t.Helper()
	bin, err := phpfpmtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	hang, pidFile = filepath.Join(dir, "hang"), filepath.Join(dir, "hung.pid")
	wrapper := filepath.Join(dir, "php-fpm")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 600; fi\nexec %s \"$@\"\n",
		hang, pidFile, pidFile, pidFile, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.PHPFPM = wrapper
	return hang, pidFile
}

// pidFromFile reads a pid file the wrapper wrote.
func pidFromFile(t *testing.T, pidFile string) int {
	t.Helper()
	var pid int
	eventually(t, 10*time.Second, func() string {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return "php-fpm not started yet: " + err.Error()
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatal(err)
		}
		return ""
	})
	return pid
}

// TestManagedStopDuringFirstStart: SIGTERM while the current release's pool
// starts, before realroot listens. run did not look at its signals until
// newServer returned: it waited for the pool up to pool-start-timeout (here
// a minute) and then either served anyway, then drained, or, php-fpm never
// answering, failed with "no answer within pool-start-timeout". The
// entrypoint mode (-- php-fpm) stops at once (waitChild); managed mode must
// too: no listener, no php-fpm left, a clean exit.
func TestManagedStopDuringFirstStart(t *testing.T) {
	c, dir := managedSite(t)
	hang, pidFile := hangingFPM(t, &c, dir)
	if err := os.WriteFile(hang, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.PoolStartTimeout = time.Minute
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	d := newTestDaemon(t, c, &buf, func() (conf.Config, error) { return c, nil })
	sigs := make(chan os.Signal, 1)
	errc := make(chan error, 1)
	go func() { errc <- d.run(nil, nil, nil, sigs, func([]net.Addr) { t.Error("serving after SIGTERM") }) }()
	pid := pidFromFile(t, pidFile)
	t.Cleanup(func() {
		if t.Failed() {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	sigs <- syscall.SIGTERM
	stopped := time.Now()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run after a SIGTERM during the first pool's start = %v; want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run still waits for the pool 15s after SIGTERM (pool-start-timeout %v)\n%s", c.PoolStartTimeout, &buf)
	}
	t.Logf("run returned %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	if procs := groupMembers(pid); len(procs) > 0 {
		t.Errorf("processes %v of the pool starting are left", procs)
	}
	if t.Failed() {
		t.Logf("log:\n%s", &buf)
	}
}

// TestManagedRestartKeepsPreparedPool: the serving pool of r1 crashed and its
// restart is starting when the deploy of r2, prepared, is held up because
// the link moved on to r3 (resolve then prepares r3 before publishing
// anything). promote(restart) made r1's restarted pool serve and drained
// every other serving pool of the root: r2's, prepared but not published.
// r3's warm-up then failed, so r2 went live as resolve documents, with its
// only pool draining (stopped at pool-drain-timeout with r2 current: every
// request 502) and /readyz failing, while r1's restarted pool, serving a
// superseded release, held a max-pools slot that nothing drains.
func TestManagedRestartKeepsPreparedPool(t *testing.T) {
	c, dir := managedSite(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r3"), "r3")
	gate2, gate3 := filepath.Join(dir, "gate2"), filepath.Join(dir, "gate3")
	gated := `<?php while (!file_exists('%s')) usleep(10000); %s echo 'warm';`
	writeFiles(t, filepath.Join(dir, "releases", "r1"), map[string]string{"public/warm.php": "<?php echo 'warm';"})
	writeFiles(t, filepath.Join(dir, "releases", "r2"), map[string]string{"public/warm.php": fmt.Sprintf(gated, gate2, "")})
	writeFiles(t, filepath.Join(dir, "releases", "r3"), map[string]string{"public/warm.php": fmt.Sprintf(gated, gate3, "http_response_code(500);")})
	// php-fpm, or while dir/hold exists, for a pool of r1, a start held
	// before php-fpm runs (its pid in dir/held.pid).
	bin, err := phpfpmtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	hold, heldPID := filepath.Join(dir, "hold"), filepath.Join(dir, "held.pid")
	wrapper := filepath.Join(dir, "php-fpm")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %s ] && grep -qF 'releases/r1 (gen' \"$3\"; then echo $$ > %s.tmp; mv %s.tmp %s; while [ -e %s ]; do sleep 0.02; done; fi\nexec %s \"$@\"\n",
		hold, heldPID, heldPID, heldPID, hold, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.PHPFPM = wrapper
	c.Warm = []string{"/warm.php"}
	c.WarmTimeout = 2 * time.Minute
	c.PoolStartTimeout = time.Minute
	c.MaxPools = 4
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	link := filepath.Join(dir, "current")
	poolIn := func(rel, state string) string {
		for _, p := range status(t, adminURL).PHPFPMPools {
			if filepath.Base(p.Release) == rel && p.State == state {
				return p.Name
			}
		}
		return ""
	}
	waitPool := func(rel, state string) {
		t.Helper()
		eventually(t, 20*time.Second, func() string {
			if poolIn(rel, state) == "" {
				return fmt.Sprintf("no pool of %s %s: %+v", rel, state, status(t, adminURL).PHPFPMPools)
			}
			return ""
		})
	}
	p1 := servingPool(t, status(t, adminURL))

	flipTo(t, link, "r2")
	waitPool("r2", "warming")
	// r1's pool crashes; its restart is held before php-fpm runs.
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(-p1.PID, syscall.SIGKILL)
	pidFromFile(t, heldPID)
	// The link moves on to r3; r2's warm-up ends: r2 is prepared, r3 warms.
	flipTo(t, link, "r3")
	if err := os.WriteFile(gate2, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitPool("r3", "warming")
	if name := poolIn("r2", "serving"); name == "" {
		t.Fatalf("r2's pool does not serve once prepared: %+v", status(t, adminURL).PHPFPMPools)
	}
	// r1's restart goes on and ends, one way or another.
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if len(td.logged("php-fpm pool restarted"))+len(td.logged("php-fpm pool restart failed")) == 0 {
			return "r1's restart not done yet"
		}
		return ""
	})
	// r3's warm-up fails: r2, prepared, goes live.
	if err := os.WriteFile(gate3, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if st := status(t, adminURL); filepath.Base(st.Current.Dir) != "r2" {
			return "r2 not current yet: " + st.Current.Dir
		}
		return ""
	})
	st := status(t, adminURL)
	if p := servingPoolOf(t, st, st.Current.Gen); p.State != "serving" {
		t.Errorf("r2 is current, its pool %s is %s; want serving (pools %+v)", p.Name, p.State, st.PHPFPMPools)
	}
	for _, p := range st.PHPFPMPools {
		if p.State == "serving" && p.Gen != st.Current.Gen {
			t.Errorf("pool %s of superseded release %s serves", p.Name, p.Release)
		}
	}
	if code, body, err := get(http.DefaultClient, "http://"+td.addr+"/"); code != 200 || body != "r2" {
		t.Errorf("GET / = %d %q %v; want 200 r2", code, body, err)
	}
	eventually(t, 10*time.Second, func() string { // /readyz is cached for a second
		if code, body, err := get(http.DefaultClient, adminURL+"/readyz"); code != 200 {
			return fmt.Sprintf("/readyz with r2 current = %d %q %v; want 200", code, body, err)
		}
		return ""
	})
	// r1's pools all stop: none holds a slot.
	eventually(t, 20*time.Second, func() string {
		for _, p := range status(t, adminURL).PHPFPMPools {
			if filepath.Base(p.Release) == "r1" && p.State != "stopped" {
				return fmt.Sprintf("pool %s of r1 is %s", p.Name, p.State)
			}
		}
		return ""
	})
}

// TestManagedRollbackDuringWarmup: with max-pools 2 (the default), the
// link is rolled back to r1 while r2's pool warms up. Preparing r1 again
// needs a third pool, and none of the two alive can stop before a switch:
// r1's pool drains a release that is still current, r2's serves. Waiting
// pool-start-timeout for room (a minute here) is waiting for nothing; the
// rollback must complete within seconds (r2, prepared, goes live, then r1
// again as the next generation).
func TestManagedRollbackDuringWarmup(t *testing.T) {
	c, dir := managedSite(t)
	gate := filepath.Join(dir, "gate")
	writeFiles(t, filepath.Join(dir, "releases", "r1"), map[string]string{"public/warm.php": "<?php echo 'warm';"})
	writeFiles(t, filepath.Join(dir, "releases", "r2"), map[string]string{
		"public/warm.php": fmt.Sprintf(`<?php while (!file_exists('%s')) usleep(10000); echo 'warm';`, gate)})
	c.Warm = []string{"/warm.php"}
	c.PoolStartTimeout = time.Minute
	c.MaxPools = 2
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	link := filepath.Join(dir, "current")

	flipTo(t, link, "r2")
	eventually(t, 20*time.Second, func() string {
		for _, p := range status(t, adminURL).PHPFPMPools {
			if filepath.Base(p.Release) == "r2" && p.State == "warming" {
				return ""
			}
		}
		return "r2's pool not warming yet"
	})
	flipTo(t, link, "r1") // the rollback
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		st := status(t, adminURL)
		if filepath.Base(st.Current.Dir) != "r1" || st.Current.Gen < 3 {
			return fmt.Sprintf("current %s gen %d; want r1 again, a new generation (pools %+v)", st.Current.Dir, st.Current.Gen, st.PHPFPMPools)
		}
		return ""
	})
	if code, body, err := get(http.DefaultClient, "http://"+td.addr+"/"); code != 200 || body != "r1" {
		t.Errorf("GET / after the rollback = %d %q %v; want 200 r1", code, body, err)
	}
}
