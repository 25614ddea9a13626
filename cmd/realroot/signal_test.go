package main

// Tests that run the realroot binary (built by TestMain) and send it real
// signals.

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
)

// TestReloadUnderLoad sends SIGHUP with a valid, then an invalid
// configuration while clients loop: no request fails, the valid one is in
// effect (a new param reaches PHP, a new deny rule answers 403, a new root is
// served), the invalid one is rejected with its errors logged.
func TestReloadUnderLoad(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 8})
	dir := site(t)
	cfg := filepath.Join(t.TempDir(), "realroot.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("root = %q\nfastcgi = \"unix:%s\"\nmax-conns = 6\naccess-log = \"off\"\n",
		filepath.Join(dir, "current", "public"), fpm.Socket))
	p := startRealroot(t, nil, "--config", cfg, "--listen", "127.0.0.1:0")

	l := startLoad(p.url(""), 4, "/", "/style.css", "/index.php?x=1")
	time.Sleep(200 * time.Millisecond)

	write(fmt.Sprintf("root = %q\nfastcgi = \"unix:%s\"\nmax-conns = 6\naccess-log = \"off\"\n"+
		"deny = [\"/secret\"]\nheader-timeout = \"5s\"\n[param]\nRR_TEST = \"two\"\n",
		filepath.Join(dir, "other", "public"), fpm.Socket))
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, func() string {
		if _, body, _ := get(http.DefaultClient, p.url("/")); body != "release 2 param=two" {
			return "after a valid reload, GET / = " + body
		}
		return ""
	})
	if status, _, _ := get(http.DefaultClient, p.url("/secret/x.txt")); status != http.StatusForbidden {
		t.Errorf("after a valid reload, GET /secret/x.txt = %d; want 403", status)
	}
	if w := p.logged("changing these settings needs a restart; they keep their running values"); len(w) != 1 ||
		fmt.Sprint(w[0]["settings"]) != "[header-timeout]" {
		t.Errorf("want one warning that header-timeout needs a restart; got %v", w)
	}
	time.Sleep(200 * time.Millisecond)

	write("root = \"relative\"\nread-timeout = \"soon\"\n")
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, func() string {
		if len(p.logged("reload rejected; the running configuration is kept")) == 0 {
			return "no reload rejected log line"
		}
		return ""
	})
	write("root = \"relative\"\nmax-conns = 0\n")
	p.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, func() string {
		if n := len(p.logged("reload rejected; the running configuration is kept")); n != 2 {
			return fmt.Sprintf("%d reload rejected log lines; want 2", n)
		}
		return ""
	})
	rejected := p.logged("reload rejected; the running configuration is kept")
	if got := fmt.Sprint(rejected[0]["errors"]); !strings.Contains(got, `read-timeout: "soon" is not a duration`) {
		t.Errorf("first rejection logs %s; want the read-timeout error", got)
	}
	if got := fmt.Sprint(rejected[1]["errors"]); !strings.Contains(got, `root: "relative" is not an absolute path`) ||
		!strings.Contains(got, "max-conns: 0 is below 1") {
		t.Errorf("second rejection logs %s; want every Validate error", got)
	}
	time.Sleep(200 * time.Millisecond)
	if _, body, _ := get(http.DefaultClient, p.url("/")); body != "release 2 param=two" {
		t.Errorf("after an invalid reload, GET / = %q; want the last valid configuration", body)
	}
	l.stop()
	if l.failed.Load() != 0 || l.ok.Load() < 50 {
		t.Errorf("load: %d ok, %d failed: %v", l.ok.Load(), l.failed.Load(), l.errs)
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d; want 0", code)
	}
}

// TestDrainOnSIGTERM sends SIGTERM while slow PHP requests are in flight:
// each completes, and realroot exits 0 once they are done.
func TestDrainOnSIGTERM(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 8})
	dir := site(t)
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:"+fpm.Socket, "--listen", "127.0.0.1:0", "--access-log", "off")

	l := startLoad(p.url(""), 2, "/", "/style.css")
	const slow = 4
	var wg sync.WaitGroup
	results := make(chan string, slow)
	marks := make([]string, slow)
	for i := range slow {
		marks[i] = filepath.Join(dir, fmt.Sprintf("mark%d", i))
		wg.Go(func() {
			status, body, err := get(&http.Client{Timeout: 20 * time.Second}, p.url("/slow.php?ms=1500&mark="+marks[i]))
			results <- fmt.Sprintf("%d %s %v", status, body, err)
		})
	}
	waitMarks(t, marks...)
	start := time.Now()
	p.signal(syscall.SIGTERM)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "200 slow done <nil>" {
			t.Errorf("slow request in flight at SIGTERM: %s; want 200 slow done", r)
		}
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d; want 0", code)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("realroot exited %v after SIGTERM; want after the slow requests (~1s)", d)
	}
	close(l.stopc) // requests after SIGTERM may be refused: not counted
	l.wg.Wait()
	if _, _, err := get(http.DefaultClient, p.url("/")); err == nil {
		t.Errorf("GET after exit succeeded")
	}
}

// fpmCommand writes a php-fpm config with a socket in a short temp dir and
// returns the command that runs it in the foreground, and the socket.
func fpmCommand(t *testing.T) ([]string, string) {
	t.Helper()
	bin, err := phpfpmtest.Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "rr")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "fpm.sock")
	argv, err := demoFPMCommand(bin, dir, sock)
	if err != nil {
		t.Fatal(err)
	}
	return argv, sock
}

// fpmPid is the pid of php-fpm as realroot logged it.
func fpmPid(t *testing.T, p *proc) int {
	t.Helper()
	started := p.logged("php-fpm started")
	if len(started) != 1 {
		t.Fatalf("want one php-fpm started line; got %v", started)
	}
	pid, _ := started[0]["pid"].(float64)
	t.Cleanup(func() { syscall.Kill(-int(pid), syscall.SIGKILL) })
	return int(pid)
}

// TestEntrypoint runs realroot -- php-fpm: it serves once php-fpm accepts,
// drains on SIGTERM before stopping php-fpm, exits with php-fpm's status and
// leaves no process behind. SIGQUIT does the same: it is the STOPSIGNAL of
// the php:*-fpm images (docker stop, Kubernetes) and the graceful stop of
// nginx and php-fpm; Go's default for it is a goroutine dump and exit 2.
func TestEntrypoint(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			argv, sock := fpmCommand(t)
			dir := site(t)
			p := startRealroot(t, nil, append([]string{"--root", filepath.Join(dir, "current", "public"),
				"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--"}, argv...)...)
			pid := fpmPid(t, p)
			if status, body, err := get(http.DefaultClient, p.url("/")); status != 200 || body != "release 1 param=-" {
				t.Fatalf("GET / = %d %q %v", status, body, err)
			}

			slow := make(chan string, 1)
			mark := filepath.Join(dir, "mark")
			go func() {
				status, body, err := get(http.DefaultClient, p.url("/slow.php?ms=800&mark="+mark))
				slow <- fmt.Sprintf("%d %s %v", status, body, err)
			}()
			waitMarks(t, mark)
			p.signal(sig)
			if r := <-slow; r != "200 slow done <nil>" {
				t.Errorf("request in flight at %v: %s; want 200 slow done", sig, r)
			}
			if code := p.wait(15 * time.Second); code != 0 {
				t.Errorf("exit code = %d; want php-fpm's 0", code)
			}
			// realroot drained its requests before it stopped php-fpm.
			out := p.out.String()
			if i, j := strings.Index(out, `"uri":"/slow.php?ms=800&mark=`), strings.Index(out, `"msg":"php-fpm stopped"`); i < 0 || j < i {
				t.Errorf("php-fpm stopped (at %d) before the slow request was done (at %d)", j, i)
			}
			if strings.Contains(out, "goroutine ") {
				t.Errorf("%v dumped goroutines; want a graceful stop", sig)
			}
			if procs := groupProcs(pid); len(procs) != 0 {
				t.Errorf("php-fpm's processes left after exit: %v", procs)
			}
		})
	}
}

// TestEntrypointChildDies kills php-fpm: realroot drains and exits with
// php-fpm's status (128+9). php-fpm failing at start gives its exit status.
func TestEntrypointChildDies(t *testing.T) {
	argv, sock := fpmCommand(t)
	dir := site(t)
	p := startRealroot(t, nil, append([]string{"--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--"}, argv...)...)
	pid := fpmPid(t, p)
	syscall.Kill(pid, syscall.SIGKILL)
	if code := p.wait(15 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code = %d; want %d", code, 128+int(syscall.SIGKILL))
	}
	if len(p.logged("php-fpm exited; draining")) != 1 {
		t.Errorf("no php-fpm exited log line")
	}

	bad := append(append([]string{}, argv[:3]...), "/nonexistent/php-fpm.conf")
	want := exec.Command(bad[0], bad[1:]...).Run()
	wantCode := 1
	if ee, ok := want.(*exec.ExitError); ok {
		wantCode = ee.ExitCode()
	}
	q := startProc(t, nil, append([]string{"--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--"}, bad...)...)
	if code := q.wait(15 * time.Second); code != wantCode || code == 0 {
		t.Errorf("php-fpm failing at start: exit code = %d; want php-fpm's %d", code, wantCode)
	}
}

// TestEntrypointPID1 runs realroot as PID 1 of a new PID namespace, as in a
// container: a PHP script leaves an orphan, re-parented to realroot, which
// reaps it.
func TestEntrypointPID1(t *testing.T) {
	argv, sock := fpmCommand(t)
	dir := site(t)
	p := startRealroot(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
		append([]string{"--root", filepath.Join(dir, "current", "public"),
			"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--log-level", "debug", "--"}, argv...)...)
	if status, body, err := get(http.DefaultClient, p.url("/orphan.php")); status != 200 || body != "spawned" {
		t.Fatalf("GET /orphan.php = %d %q %v", status, body, err)
	}
	rr := p.cmd.Process.Pid
	sawOrphan := false
	eventually(t, 5*time.Second, func() string {
		for _, s := range childProcs(rr) {
			if strings.HasSuffix(s, " sleep") {
				sawOrphan = true
			}
		}
		if !sawOrphan {
			return fmt.Sprintf("the orphaned sleep never had realroot as parent; children: %v", childProcs(rr))
		}
		return ""
	})
	eventually(t, 5*time.Second, func() string {
		for pid, s := range childProcs(rr) {
			if strings.HasPrefix(s, "Z") || strings.HasSuffix(s, " sleep") {
				return fmt.Sprintf("child %d of realroot: %s", pid, s)
			}
		}
		return ""
	})
	if len(p.logged("reaped orphan")) == 0 {
		t.Errorf("no reaped orphan log line")
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code = %d; want 0", code)
	}
}

// TestReopenLogs renames the log files and sends SIGUSR1: the next lines go
// to new files under the configured paths.
func TestReopenLogs(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	dir := site(t)
	logDir := t.TempDir()
	access, main := filepath.Join(logDir, "access.log"), filepath.Join(logDir, "realroot.log")
	p := startProc(t, nil, "--root", filepath.Join(dir, "current", "public"), "--fastcgi", "unix:"+fpm.Socket,
		"--listen", "127.0.0.1:0", "--access-log", "combined", "--access-log-file", access, "--log-file", main)
	eventually(t, 10*time.Second, func() string {
		b, _ := os.ReadFile(main)
		if i := strings.Index(string(b), `"listen":["`); i >= 0 {
			p.addr = strings.SplitN(string(b[i+len(`"listen":["`):]), `"`, 2)[0]
			return ""
		}
		return "no serving line in " + main
	})
	if status, _, _ := get(http.DefaultClient, p.url("/style.css")); status != 200 {
		t.Fatalf("GET /style.css = %d", status)
	}
	for _, f := range []string{access, main} {
		if err := os.Rename(f, f+".1"); err != nil {
			t.Fatal(err)
		}
	}
	p.signal(syscall.SIGUSR1)
	eventually(t, 5*time.Second, func() string {
		get(http.DefaultClient, p.url("/style.css?after"))
		b, _ := os.ReadFile(access)
		if !strings.Contains(string(b), `"GET /style.css?after HTTP/1.1" 200 6`) {
			return "no access line in the reopened " + access
		}
		return ""
	})
	old, _ := os.ReadFile(access + ".1")
	if !strings.HasPrefix(string(old), "127.0.0.1 - - [") || !strings.Contains(string(old), `"GET /style.css HTTP/1.1" 200 6 "-" "Go-http-client/1.1"`) {
		t.Errorf("rotated access log = %q; want the first request in combined format", old)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code = %d; want 0", code)
	}
	if b, _ := os.ReadFile(main); !strings.Contains(string(b), `"msg":"stopped"`) {
		t.Errorf("reopened %s lacks the stopped line: %q", main, b)
	}
}
