// Regression tests of a review of the command (2026-11-22): each failed
// before its fix.

package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/internal/fcgitest"
	"realroot/resolve"
)

// gatedPHP is a FastCGI responder whose requests to /slow wait until gate
// is closed; it answers with the DOCUMENT_ROOT it got.
func gatedPHP(t *testing.T) (conf.Config, chan struct{}, string) {
	t.Helper()
	gate := make(chan struct{})
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, stdout io.Writer) error {
		if strings.HasPrefix(req.Params["REQUEST_URI"], "/slow") {
			<-gate
		}
		_, err := io.WriteString(stdout, "Content-Type: text/plain\r\n\r\n"+req.Params["DOCUMENT_ROOT"])
		return err
	})
	dir, err := filepath.EvalSymlinks(site(t))
	if err != nil {
		t.Fatal(err)
	}
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.Listen = []string{"127.0.0.1:0"}
	c.Admin = "127.0.0.1:0"
	c.ReleaseChecks = false
	c.AccessLog = "off"
	return c, gate, dir
}

// TestPruneAfterRootReload: a release switch leaves release 1 draining with
// a request in flight; then a reload changes poll-interval, and a new root
// watcher is built. /status still lists release 1 as draining (the older
// watcher's releases are merged in), so `realroot releases --prune` keeps
// it. Before the fix /status forgot it and prune deleted it under the
// running request.
func TestPruneAfterRootReload(t *testing.T) {
	c, gate, dir := gatedPHP(t)
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	closeGate := gateCloser(gate)
	defer closeGate()
	slow := slowInFlight(t, td, adminURL)
	rel1, rel2 := filepath.Join(dir, "releases", "1"), filepath.Join(dir, "releases", "2")
	if err := resolve.Switch(filepath.Join(dir, "current"), rel2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() string {
		st := status(t, adminURL)
		if st.Current.Dir != rel2 || len(st.Draining) != 1 {
			return "release 2 not served yet, or release 1 not draining"
		}
		return ""
	})

	next := c
	next.PollInterval = c.PollInterval + time.Second
	if td.reload(t, next) {
		t.Fatalf("reload rejected")
	}

	out, err := runCmd(listReleases, "--link", filepath.Join(dir, "current"), "--admin", strings.TrimPrefix(adminURL, "http://"), "--prune", "--keep", "1")
	_, statErr := os.Stat(rel1)
	close(gate)
	body := <-slow
	if statErr != nil {
		t.Errorf("release 1 was pruned while a request ran on it (that request answered %q); prune = %v\n%s", body, err, out)
	}
}

// managedSite is a deploy dir with releases r1 and r2 for managed mode,
// current -> releases/r1, and the configuration serving it.
func managedSite(t *testing.T) (conf.Config, string) {
	t.Helper()
	requirePHPFPM(t)
	dir := tempDir(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r1"), "r1")
	writeManagedRelease(t, filepath.Join(dir, "releases", "r2"), "r2")
	symlink(t, "releases/r1", filepath.Join(dir, "current"))
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.ManagedPool = writePoolTemplate(t, "")
	c.Listen = []string{"127.0.0.1:0"}
	c.Admin = "127.0.0.1:0"
	c.AccessLog = "off"
	c.MaxConns = 4
	c.PollInterval = 20 * time.Millisecond
	c.ReleaseChecks = false
	return c, dir
}

// switchOutcome switches current to releases/r2 and waits for the switch
// or its refusal to be logged; it returns the message.
func switchOutcome(t *testing.T, td *testDaemon, dir string) string {
	t.Helper()
	if err := resolve.Switch(filepath.Join(dir, "current"), filepath.Join(dir, "releases", "r2")); err != nil {
		t.Fatal(err)
	}
	var msg string
	eventually(t, 20*time.Second, func() string {
		for _, m := range []string{"release switched", "release prepare failed; keeping current release"} {
			if len(td.logged(m)) > 0 {
				msg = m
				return ""
			}
		}
		return "no switch logged yet"
	})
	return msg
}

// TestManagedRejectedReloadKeepsPools: in managed mode a reload whose new
// root does not resolve is rejected, and the pools keep the running
// configuration: the next release's pool starts from it. Before the fix
// server.build had handed the rejected configuration (here a broken
// template) to the pools, and the next deploy failed.
func TestManagedRejectedReloadKeepsPools(t *testing.T) {
	c, dir := managedSite(t)
	td := startDaemon(t, c)

	bad := c
	bad.Root = filepath.Join(dir, "nonexistent", "public")
	bad.ManagedPool = writePoolTemplate(t, "pm.max_children = lots\n")
	if !td.reload(t, bad) {
		t.Fatalf("reload with a root that does not resolve was not rejected")
	}
	if got := switchOutcome(t, td, dir); got != "release switched" {
		t.Errorf("after a rejected reload, a deploy logs %q; want release switched (the running configuration was to be kept):\n%v",
			got, td.logged("release prepare failed; keeping current release"))
	}
}

// TestManagedReloadPHPFPM: a reload that changes php-fpm (the binary
// managed pools run) applies to the next release's pool. Before the fix it
// was logged as applied and ignored (managedPools.bin was resolved once).
func TestManagedReloadPHPFPM(t *testing.T) {
	c, dir := managedSite(t)
	bin, err := lookupPHPFPM(c.PHPFPM)
	if err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(t.TempDir(), "wrapper-ran")
	wrapper := filepath.Join(t.TempDir(), "php-fpm-wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\ntouch "+mark+"\nexec "+bin+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	td := startDaemon(t, c)
	next := c
	next.PHPFPM = wrapper
	if td.reload(t, next) {
		t.Fatalf("reload rejected")
	}
	if w := td.logged("changing these settings needs a restart; they keep their running values"); len(w) > 0 {
		t.Fatalf("php-fpm reported as restart-only: %v", w)
	}
	if got := switchOutcome(t, td, dir); got != "release switched" {
		t.Fatalf("switch: %s", got)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("the pool started after a reload to php-fpm = %s did not run it (%v); the reload logged changed %v",
			wrapper, err, td.logged("config reloaded")[0]["changed"])
	}
}

// TestSIGHUPWhilePHPFPMStarts: a SIGHUP that arrives while realroot waits
// for its php-fpm child to accept (a slow start: OPcache preload, a big
// pool) reloads realroot's configuration once it serves. Before the fix
// waitChild forwarded it to php-fpm only: the changed configuration was
// never applied, and nothing was logged.
func TestSIGHUPWhilePHPFPMStarts(t *testing.T) {
	argv, sock := fpmCommand(t)
	// php-fpm, started a second late; the shell survives the forwarded
	// SIGUSR2 as php-fpm does.
	started := filepath.Join(t.TempDir(), "started")
	argv = append([]string{"/bin/sh", "-c", `trap : USR1 USR2; touch "$0"; sleep 1; exec "$@"`, started}, argv...)
	c := fpmSiteConfig(t, sock)
	next := c
	next.Params = map[string]string{"RR_TEST": "reloaded"}
	var logBuf syncBuffer
	d := newTestDaemon(t, c, &logBuf, func() (conf.Config, error) { return next, nil })
	sigs := make(chan os.Signal, 1)
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- d.run(argv, io.Discard, io.Discard, sigs, func(a []net.Addr) { addrc <- a[0].String() })
	}()
	waitMarks(t, started)
	sigs <- syscall.SIGHUP // before php-fpm accepts: it sleeps 1s first
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("run: %v\n%s", err, logBuf.String())
	}
	_, body, err := get(http.DefaultClient, "http://"+addr+"/")
	sigs <- syscall.SIGTERM
	if err := <-errc; err != nil {
		t.Errorf("run after SIGTERM: %v", err)
	}
	if body != "release 1 param=reloaded" {
		t.Errorf("GET / after a SIGHUP sent while php-fpm started = %q %v; want the reloaded configuration's param (release 1 param=reloaded); reload logged: %d, rejected: %d",
			body, err, len(logged(logBuf.String(), "config reloaded")), len(logged(logBuf.String(), "reload rejected; the running configuration is kept")))
	}
}

// TestSIGHUPAtPHPFPMStart: a SIGHUP that arrives just as realroot starts
// its php-fpm child (here: queued before it) does not reach php-fpm before
// it has installed its signal handlers. Before the fix it was forwarded at
// once as SIGUSR2, whose default action killed php-fpm: realroot exited
// 128+12 instead of serving.
func TestSIGHUPAtPHPFPMStart(t *testing.T) {
	argv, sock := fpmCommand(t)
	c := fpmSiteConfig(t, sock)
	var logBuf syncBuffer
	d := newTestDaemon(t, c, &logBuf, func() (conf.Config, error) { return c, nil })
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGHUP // a config-management HUP racing the container start
	served := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- d.run(argv, io.Discard, io.Discard, sigs, func([]net.Addr) { close(served) })
	}()
	select {
	case <-served:
		sigs <- syscall.SIGTERM
		if err := <-errc; err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case err := <-errc:
		t.Errorf("run = %v before serving; want php-fpm to survive a SIGHUP at start\n%s", err, logBuf.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("neither serving nor stopped")
	}
}

// TestManagedReloadBadTemplate: a managed-pool template that start-up
// refuses (an unknown placeholder) is refused by a reload too. Before the
// fix the reload said "config reloaded" and the next deploy failed.
func TestManagedReloadBadTemplate(t *testing.T) {
	c, dir := managedSite(t)
	td := startDaemon(t, c)
	bad := c
	bad.ManagedPool = writePoolTemplate(t, "chdir = {{bogus}}\n")
	if _, err := newManaged(bad, nil, zapNop()); err == nil {
		t.Fatalf("start-up accepts the template; the test's premise is wrong")
	}
	rejected := td.reload(t, bad)
	outcome := switchOutcome(t, td, dir)
	if !rejected {
		t.Errorf("a reload to a template that start-up refuses was accepted; the next deploy: %q", outcome)
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }

// TestPID1OnDrainStatus: realroot as PID 1 reaps every child with wait4(-1)
// on SIGCHLD; the on-drain command's status goes through the reaper, so a
// command that succeeds is logged as done. Before the fix exec.Cmd.Wait
// raced the reaper and lost (ECHILD) in half the runs: "on-drain command
// failed".
func TestPID1OnDrainStatus(t *testing.T) {
	argv, sock := fpmCommand(t)
	dir := site(t)
	p := startRealroot(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
		append([]string{"--root", filepath.Join(dir, "current", "public"), "--poll-interval", "20ms",
			"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--on-drain", "exit 0", "--"}, argv...)...)
	const n = 20
	for i := range n {
		target := filepath.Join(dir, "releases", []string{"2", "1"}[i%2])
		if err := resolve.Switch(filepath.Join(dir, "current"), target); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() string {
			if len(p.logged("on-drain command done"))+len(p.logged("on-drain command failed")) < i+1 {
				return "on-drain not run yet"
			}
			return ""
		})
	}
	if failed := p.logged("on-drain command failed"); len(failed) > 0 {
		t.Errorf("%d of %d on-drain runs of `exit 0` logged as failed, e.g. %v", len(failed), n, failed[0]["error"])
	}
	p.signal(syscall.SIGTERM)
	p.wait(15 * time.Second)
}

// gateCloser returns a func that closes gatedPHP's gate, once.
func gateCloser(gate chan struct{}) func() {
	return func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
}

// slowInFlight GETs gatedPHP's /slow.php, which waits for the gate, and
// waits until the server at adminURL counts it in flight; the body (or the
// error) comes on the channel.
func slowInFlight(t *testing.T, td *testDaemon, adminURL string) <-chan string {
	t.Helper()
	slow := make(chan string, 1)
	go func() {
		_, body, err := get(&http.Client{Timeout: 20 * time.Second}, "http://"+td.addr+"/slow.php")
		if err != nil {
			body = err.Error()
		}
		slow <- body
	}()
	eventually(t, 5*time.Second, func() string {
		if st := status(t, adminURL); st.Current.InFlight != 1 {
			return "slow request not in flight"
		}
		return ""
	})
	return slow
}

// fpmSiteConfig is a valid configuration for site(t) behind the php-fpm of
// fpmCommand at sock, on a free port, without access log or release
// checks.
func fpmSiteConfig(t *testing.T, sock string) conf.Config {
	t.Helper()
	c := conf.Default()
	c.Root = filepath.Join(site(t), "current", "public")
	c.FastCGI = []string{"unix:" + sock}
	c.Listen = []string{"127.0.0.1:0"}
	c.AccessLog = "off"
	c.ReleaseChecks = false
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	return c
}
