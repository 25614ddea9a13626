// Tests of a third review of managed mode (docs/managed-pools.md): each
// fails on the code as reviewed, for the reason its comment gives.

package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"realroot/conf"
	"realroot/proxy/admin"
)

// flipTo points link at releases/name atomically (ln -s + mv -T).
func flipTo(t *testing.T, link, name string) {
	t.Helper()
	symlink(t, "releases/"+name, link+".tmp")
	if err := os.Rename(link+".tmp", link); err != nil {
		t.Fatal(err)
	}
}

// TestRestartBackoffKept: docs/managed-pools.md says a serving pool
// that dies is started again "after 1 s, then 2, 4, ... 30 s while it
// fails". restart resets its delay to 1s whenever a restarted pool
// answered once, so a pool whose master dies soon after every start (an
// OOM kill, a crash at the first requests) is restarted every ~1s forever:
// the third consecutive crash should wait ~4s, it waits ~1s.
func TestRestartBackoffKept(t *testing.T) {
	c, _ := managedSite(t)
	srv := startManaged(t, c)
	var waits []time.Duration
	for i := range 3 {
		p := servingPool(t, srv.status(t))
		killed := time.Now()
		syscall.Kill(-p.PID, syscall.SIGKILL)
		eventually(t, 20*time.Second, func() string {
			st := srv.status(t)
			for _, q := range st.PHPFPMPools {
				if q.State == "serving" && q.Gen == p.Gen && q.Name != p.Name {
					return ""
				}
			}
			return fmt.Sprintf("crash %d: no new pool serving gen %d yet", i+1, p.Gen)
		})
		waits = append(waits, time.Since(killed))
	}
	t.Logf("time from each crash to the next serving pool: %v", waits)
	if waits[2] < 3*time.Second {
		t.Errorf("third consecutive crash of the serving pool was restarted after %v (all: %v); want the documented backoff (1s, 2s, 4s ...)",
			waits[2].Round(time.Millisecond), waits)
	}
}

// TestRestartOfSupersededRelease: restart checks that its release
// is current only before launch, and launch may wait (reserve) up to
// pool-start-timeout for room. Here the serving pool of A crashes while B is
// being warmed up; A's restart waits for room; B is switched to and its
// pool crashes too. A's restart then gets the room and promote(restart)
// accepts it, since no pool serves: a pool of the superseded release A
// serves, nothing ever drains it, and every restart of B is refused ("its
// release is no longer current") because a pool serves. B's requests get
// 502 until the next deploy.
func TestRestartOfSupersededRelease(t *testing.T) {
	requirePHPFPM(t)
	dir := tempDir(t)
	link := filepath.Join(dir, "current")
	for _, r := range []string{"z", "a", "b"} {
		rel := filepath.Join(dir, "releases", r)
		writeManagedRelease(t, rel, r)
		ms := 0
		if r == "b" {
			ms = 3000 // B's warm-up is slow: A's restart starts meanwhile
		}
		writeFiles(t, rel, map[string]string{
			"public/warm.php": fmt.Sprintf("<?php usleep(%d); echo 'warm';", ms*1000),
			"public/who.php":  "<?php echo '" + r + "';",
		})
	}
	symlink(t, "releases/z", link)
	c := conf.Default()
	c.Root = filepath.Join(link, "public")
	c.ManagedPool = writePoolTemplate(t, "")
	c.Warm = []string{"/warm.php"}
	c.PoolStartTimeout = 20 * time.Second
	srv := startManaged(t, c)
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()

	// z drains a long request: with max-pools 2, a third pool waits.
	mark := filepath.Join(dir, "mark")
	slow := make(chan string, 1)
	go func() {
		st, body, err := get(client, srv.base+"/slow.php?ms=14000&mark="+mark)
		slow <- fmt.Sprintf("%d %s %v", st, body, err)
	}()
	waitMarks(t, mark)
	flipTo(t, link, "a")
	var pa admin.Pool
	eventually(t, 10*time.Second, func() string {
		st := srv.status(t)
		if filepath.Base(st.Current.Dir) != "a" {
			return "a not current yet"
		}
		pa = servingPool(t, st)
		return ""
	})

	// A's pool crashes; B is deployed at once and warms up for 3s.
	syscall.Kill(-pa.PID, syscall.SIGKILL)
	flipTo(t, link, "b")
	var pb admin.Pool
	var genB uint64
	eventually(t, 15*time.Second, func() string {
		st := srv.status(t)
		if filepath.Base(st.Current.Dir) != "b" {
			return "b not current yet"
		}
		genB = st.Current.Gen
		pb = servingPool(t, st)
		return ""
	})
	// B's pool crashes too.
	syscall.Kill(-pb.PID, syscall.SIGKILL)

	deadline := time.Now().Add(8 * time.Second)
	for {
		st := srv.status(t)
		for _, p := range st.PHPFPMPools {
			if p.State == "serving" && p.Gen != st.Current.Gen {
				code, body, _ := get(client, srv.base+"/who.php")
				t.Errorf("pool %s of superseded release %s (gen %d) serves while gen %d (%s) is current; GET /who.php = %d %q",
					p.Name, p.Release, p.Gen, st.Current.Gen, st.Current.Dir, code, body)
				goto done
			}
		}
		if code, body, _ := get(client, srv.base+"/who.php"); code == 200 && body == "b" && st.Current.Gen == genB {
			break // B served again by a restarted pool
		}
		if time.Now().After(deadline) {
			t.Errorf("b not served 8s after its pool crashed; pools %+v", st.PHPFPMPools)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
done:
	t.Logf("slow request on z: %s", <-slow)
}
