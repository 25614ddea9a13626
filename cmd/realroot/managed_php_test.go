package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"realroot/conf"
	"realroot/proxy/admin"
)

// These tests run realroot in managed mode against real php-fpm masters,
// with OPcache on and opcache.validate_timestamps=0 (production settings,
// under which a shared pool serves a replaced file's old code forever).

// TestManagedSwitches deploys 20 releases under load, by symlink (atomic
// rename, and unlink + symlink) and by replacing a directory in place (the
// root a plain directory, or a symlink's target): no request fails, mixes
// two releases or runs an older release once the switch is complete; each
// old pool's processes are gone once it drained; the new pool's OPcache
// holds only the new release's scripts.
func TestManagedSwitches(t *testing.T) {
	requirePHPFPM(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer http.DefaultClient.CloseIdleConnections()
	t.Run("symlink", func(t *testing.T) {
		dir := tempDir(t)
		writeManagedRelease(t, filepath.Join(dir, "releases", "r0"), "r0")
		symlink(t, "releases/r0", filepath.Join(dir, "current"))
		runSwitches(t, filepath.Join(dir, "current", "public"), 10, func(i int, name string) (string, string) {
			rel := filepath.Join(dir, "releases", name)
			writeManagedRelease(t, rel, name)
			link := filepath.Join(dir, "current")
			if i%2 == 0 { // atomic: a new link renamed over it
				symlink(t, "releases/"+name, link+".tmp")
				if err := os.Rename(link+".tmp", link); err != nil {
					t.Fatal(err)
				}
			} else { // rm current && ln -s, as BusyBox's ln -sfn
				os.Remove(link)
				time.Sleep(2 * time.Millisecond)
				symlink(t, "releases/"+name, link)
			}
			return rel, rel
		})
	})
	// A copy deploy, made atomic: the new release is copied beside the
	// live directory, then the two are exchanged (renameat2
	// RENAME_EXCHANGE), and the old one is kept, as mv app app.old would.
	copyDeploy := func(t *testing.T, dir, app, rel string) func(int, string) (string, string) {
		return func(i int, name string) (string, string) {
			stage := filepath.Join(dir, "stage")
			writeManagedRelease(t, stage, name)
			if err := unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, app, unix.RENAME_EXCHANGE); err != nil {
				t.Fatalf("exchange %s and %s: %v", stage, app, err)
			}
			if err := os.Rename(stage, filepath.Join(dir, "old-"+name)); err != nil {
				t.Fatal(err)
			}
			return rel, app
		}
	}
	t.Run("copy into a plain directory", func(t *testing.T) {
		dir := tempDir(t)
		app := filepath.Join(dir, "app")
		writeManagedRelease(t, app, "r0")
		// The root has no symlink: the release directory is the root.
		runSwitches(t, filepath.Join(app, "public"), 5, copyDeploy(t, dir, app, filepath.Join(app, "public")))
	})
	t.Run("copy onto a link's target", func(t *testing.T) {
		dir := tempDir(t)
		app := filepath.Join(dir, "app")
		writeManagedRelease(t, app, "r0")
		symlink(t, "app", filepath.Join(dir, "current"))
		runSwitches(t, filepath.Join(dir, "current", "public"), 5, copyDeploy(t, dir, app, app))
	})
}

// runSwitches serves root (release r0) in managed mode and makes n
// switches with deploy, which makes release r<i> live and returns the
// release directory, while 4 clients loop over / and /slow.php.
func runSwitches(t *testing.T, root string, n int, deploy func(i int, name string) (rel, files string)) {
	c := conf.Default()
	c.Root = root
	c.ManagedPool = writePoolTemplate(t, "")
	c.Warm = []string{"/"}
	srv := startManaged(t, c)
	// The first pool compiles r0's scripts (later ones are warmed up): a
	// request running in it when its files are replaced in place finds
	// them all in OPcache, as happens in production.
	if status, body, err := get(http.DefaultClient, srv.base+"/"); status != 200 || body != "r0" {
		t.Fatalf("GET / = %d %q %v; want 200 r0", status, body, err)
	}

	var (
		cur                      atomic.Int64 // the release realroot serves, once its switch is seen
		ok, failed, mixed, stale atomic.Int64
		firstErr                 atomic.Value
		stop                     = make(chan struct{})
		wg                       sync.WaitGroup
		transport                = &http.Transport{MaxIdleConnsPerHost: 4}
		client                   = &http.Client{Timeout: 10 * time.Second, Transport: transport}
		paths                    = []string{"/", "/slow.php"}
	)
	report := func(f string, a ...any) { firstErr.CompareAndSwap(nil, fmt.Sprintf(f, a...)) }
	defer transport.CloseIdleConnections()
	for i := range 4 {
		wg.Go(func() {
			for j := i; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				path := paths[j%len(paths)]
				want := cur.Load()
				status, body, err := get(client, srv.base+path)
				switch {
				case err != nil || status != http.StatusOK:
					failed.Add(1)
					report("GET %s: %d %q %v", path, status, body, err)
				case strings.Contains(body, ","):
					mixed.Add(1)
					report("GET %s mixed releases: %q", path, body)
				default:
					got, err := strconv.ParseInt(strings.TrimPrefix(body, "r"), 10, 64)
					if err != nil {
						failed.Add(1)
						report("GET %s: %q", path, body)
					} else if got < want {
						stale.Add(1)
						report("GET %s began once r%d was served, yet ran %s", path, want, body)
					}
					ok.Add(1)
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		t.Logf("%d switches: %d responses ok, %d failed, %d mixed, %d stale", n, ok.Load(), failed.Load(), mixed.Load(), stale.Load())
		if failed.Load()+mixed.Load()+stale.Load() > 0 || ok.Load() == 0 {
			t.Errorf("%d failed, %d mixed, %d stale of %d; first: %v", failed.Load(), mixed.Load(), stale.Load(), ok.Load(), firstErr.Load())
		}
	}()

	for i := 1; i <= n; i++ {
		st := srv.status(t)
		old := servingPool(t, st)
		name := fmt.Sprintf("r%d", i)
		relDir, filesDir := deploy(i, name)
		var serving admin.Pool
		eventually(t, 10*time.Second, func() string {
			st := srv.status(t)
			if st.Current.Gen != old.Gen+1 {
				return fmt.Sprintf("switch to %s: current is gen %d", name, st.Current.Gen)
			}
			serving = servingPool(t, st)
			return ""
		})
		cur.Store(int64(i))
		if serving.Gen != old.Gen+1 || serving.Release != relDir {
			t.Fatalf("serving pool %+v; want gen %d, release %s", serving, old.Gen+1, relDir)
		}
		// The old pool stops once its requests are done: its master and
		// workers are gone.
		eventually(t, 10*time.Second, func() string {
			if p := poolOf(srv.status(t), old.Name); p.State != "stopped" || p.Error != "" {
				return fmt.Sprintf("old pool %s: %s %s", p.Name, p.State, p.Error)
			}
			if procs := groupMembers(old.PID); len(procs) > 0 {
				return fmt.Sprintf("old pool %s: processes %v left", old.Name, procs)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", old.PID)); err == nil {
				return fmt.Sprintf("old master %d still in /proc", old.PID)
			}
			return ""
		})
		if _, err := os.Stat(old.Socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("old pool's socket %s: %v; want it removed", old.Socket, err)
		}
		// The new pool's OPcache: the new release's scripts, all of them
		// compiled by the warm-up, and nothing else.
		status, body, err := get(client, srv.base+"/opcache.php")
		if status != 200 || err != nil {
			t.Fatalf("GET /opcache.php = %d %v", status, err)
		}
		scripts := strings.Fields(body)
		for _, s := range scripts {
			if !strings.HasPrefix(s, filesDir+"/") {
				t.Errorf("after the switch to %s, OPcache holds %s", name, s)
			}
		}
		if want := filepath.Join(filesDir, "lib", "f49.php"); !slices.Contains(scripts, want) {
			t.Errorf("OPcache lacks %s (warmed up): %q", want, scripts)
		}
	}
}

// TestManagedFailures: a release whose pool cannot start is not switched
// to, and the log says why; the next good one is. A third release while two
// pools are alive waits, is refused after pool-start-timeout, and switches
// by itself once the oldest pool stopped. A draining pool that crashes fails
// its own requests only; a serving pool that crashes is started again.
func TestManagedFailures(t *testing.T) {
	requirePHPFPM(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer http.DefaultClient.CloseIdleConnections()
	dir := tempDir(t)
	link := filepath.Join(dir, "current")
	for _, r := range []string{"r1", "r2", "r3", "r4", "r5"} {
		writeManagedRelease(t, filepath.Join(dir, "releases", r), r)
	}
	// bad has no lib/, the pool's chdir: php-fpm refuses to start.
	writeFiles(t, filepath.Join(dir, "releases", "bad"), map[string]string{"public/index.php": "<?php echo 'bad';"})
	symlink(t, "releases/r1", link)
	flip := func(name string) {
		t.Helper()
		symlink(t, "releases/"+name, link+".tmp")
		if err := os.Rename(link+".tmp", link); err != nil {
			t.Fatal(err)
		}
	}
	c := conf.Default()
	c.Root = filepath.Join(link, "public")
	c.ManagedPool = writePoolTemplate(t, "chdir = {{release}}/lib\n")
	c.PoolStartTimeout = 2 * time.Second // also the wait for room of a third release
	srv := startManaged(t, c)
	serves := func(want string) {
		t.Helper()
		eventually(t, 10*time.Second, func() string {
			if status, body, err := get(http.DefaultClient, srv.base+"/"); status != 200 || body != want {
				return fmt.Sprintf("GET / = %d %q %v; want 200 %q", status, body, err, want)
			}
			return ""
		})
	}
	serves("r1")

	// A release whose pool does not start.
	flip("bad")
	eventually(t, 10*time.Second, func() string {
		for _, l := range logged(srv.log.String(), "release prepare failed; keeping current release") {
			if e, _ := l["error"].(string); strings.Contains(e, "the chdir path '"+filepath.Join(dir, "releases", "bad", "lib")+"' does not exist") {
				return ""
			}
		}
		return "no log line saying why the pool of bad did not start"
	})
	serves("r1")
	// /status shows bad's pool stopped with php-fpm's reason, r1's serving.
	// A poll may retry bad meanwhile, so a pool of bad can be starting for
	// a moment; none may ever serve.
	eventually(t, 10*time.Second, func() string {
		st := srv.status(t)
		stopped := false
		for _, p := range st.PHPFPMPools {
			if filepath.Base(p.Release) != "bad" {
				continue
			}
			if p.State == "serving" {
				t.Fatalf("bad's pool serves: %+v", st.PHPFPMPools)
			}
			stopped = stopped || p.State == "stopped" && strings.Contains(p.Error, "chdir")
		}
		if st.Current.Gen != 1 || !stopped {
			return fmt.Sprintf("/status after the failed start: gen %d, pools %+v", st.Current.Gen, st.PHPFPMPools)
		}
		return ""
	})
	flip("r2")
	serves("r2")

	// A third release while two pools are alive: r2 drains a slow request.
	slow := func(ms int, mark string) chan string {
		res := make(chan string, 1)
		go func() {
			status, body, err := get(http.DefaultClient, fmt.Sprintf("%s/slow.php?ms=%d&mark=%s", srv.base, ms, mark))
			res <- fmt.Sprintf("%d %s %v", status, body, err)
		}()
		waitMarks(t, mark)
		return res
	}
	slow2 := slow(6000, filepath.Join(dir, "mark2"))
	flip("r3")
	serves("r3")
	measureOverlap(t, srv.status(t))
	flip("r4")
	eventually(t, 10*time.Second, func() string {
		for _, l := range logged(srv.log.String(), "release prepare failed; keeping current release") {
			if e, _ := l["error"].(string); strings.Contains(e, "(max-pools 2)") {
				return ""
			}
		}
		return "no log line saying r4 waits for room"
	})
	serves("r3")
	if got := <-slow2; got != "200 r2 <nil>" {
		t.Errorf("slow request on r2 = %s; want 200 r2", got)
	}
	serves("r4") // with no further change of the link

	// A draining pool crashes: its request fails, nothing else does.
	slow4 := slow(5000, filepath.Join(dir, "mark4"))
	flip("r5")
	serves("r5")
	p4 := poolOf(srv.status(t), servingPoolOf(t, srv.status(t), 4).Name)
	if p4.State != "draining" || p4.InFlight != 1 {
		t.Fatalf("pool of r4 after the switch: %+v; want draining with 1 in flight", p4)
	}
	syscall.Kill(-p4.PID, syscall.SIGKILL)
	if got := <-slow4; !strings.HasPrefix(got, "502 ") {
		t.Errorf("slow request on r4 when its pool died = %s; want 502", got)
	}
	serves("r5")
	eventually(t, 5*time.Second, func() string {
		if p := poolOf(srv.status(t), p4.Name); p.State != "stopped" || !strings.Contains(p.Error, "exited") {
			return fmt.Sprintf("pool of r4: %+v; want stopped, exited", p)
		}
		return ""
	})

	// The serving pool crashes: it is started again.
	p5 := servingPool(t, srv.status(t))
	syscall.Kill(-p5.PID, syscall.SIGKILL)
	eventually(t, 10*time.Second, func() string {
		st := srv.status(t)
		for _, p := range st.PHPFPMPools {
			if p.State == "serving" && p.Gen == p5.Gen && p.Name != p5.Name {
				return ""
			}
		}
		return fmt.Sprintf("pools %+v; want a new one serving gen %d", st.PHPFPMPools, p5.Gen)
	})
	serves("r5")
	if n := len(logged(srv.log.String(), "php-fpm pool restarted")); n != 1 {
		t.Errorf("%d php-fpm pool restarted log lines; want 1", n)
	}

	pids := []int{}
	for _, p := range srv.status(t).PHPFPMPools {
		pids = append(pids, p.PID)
	}
	srv.stop(t)
	for _, pid := range pids {
		if procs := groupMembers(pid); len(procs) > 0 {
			t.Errorf("after shutdown, processes %v of pool %d are left", procs, pid)
		}
	}
}

// measureOverlap logs the memory of the pools alive during a switch, for
// docs/managed-pools.md: RSS (shared pages counted once per process) and
// PSS (shared pages divided among the processes sharing them).
func measureOverlap(t *testing.T, st admin.Status) {
	for _, p := range st.PHPFPMPools {
		if p.State == "stopped" {
			continue
		}
		var pss int64
		for _, pid := range groupMembers(p.PID) {
			data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
			for _, l := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(l, "Pss:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					pss += kb << 10
				}
			}
		}
		t.Logf("pool %s (%s): %d processes, RSS %.1f MiB, PSS %.1f MiB", p.Name, p.State, p.Processes,
			float64(p.RSS)/(1<<20), float64(pss)/(1<<20))
		if p.RSS <= 0 || p.Processes < 2 {
			t.Errorf("pool %+v: want its processes and RSS", p)
		}
	}
}
