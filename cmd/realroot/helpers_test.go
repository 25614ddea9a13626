package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
)

// binary is realroot built once by TestMain (with -race when the tests
// are), for the tests that send it real signals.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rrbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "realroot")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The -race binary otherwise sleeps 1s at exit (TSan's default), in
	// every test that stops it; a race still exits 66.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// site makes a deploy layout in a new temp dir: releases/1 and releases/2,
// each with public/{index.php,slow.php,orphan.php,style.css,secret/x.txt}
// (slow.php?ms=N&mark=FILE creates FILE, then sleeps N ms; index.php run
// by a warm-up creates public/warmed), current -> releases/1 and other ->
// releases/2. It returns the dir.
func site(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"index.php": `<?php if (isset($_SERVER['REALROOT_WARMUP'])) touch(__DIR__ . '/warmed');
			echo "release {{R}} param=", $_SERVER['RR_TEST'] ?? '-';`,
		// mark, when given, is a file created once the script runs.
		"slow.php": `<?php if (isset($_GET['mark'])) touch($_GET['mark']);
			usleep((int)($_GET['ms'] ?? 1000) * 1000); echo "slow done";`,
		// A grandchild whose parent exits at once: it is re-parented to
		// PID 1 (or the nearest subreaper) and must be reaped there.
		"orphan.php":   `<?php exec('sh -c "sleep 0.5 >/dev/null 2>&1 &"'); echo "spawned";`,
		"style.css":    "body{}",
		"secret/x.txt": "secret",
	}
	for _, rel := range []string{"1", "2"} {
		for name, text := range files {
			p := filepath.Join(dir, "releases", rel, "public", name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, "{{R}}", rel)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for link, target := range map[string]string{"current": "releases/1", "other": "releases/2"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// get fetches url and returns the status and body; status 0 on error.
func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventually polls f every 20ms until it returns "" (or timeout passes,
// and then fails with f's last message).
func eventually(t *testing.T, timeout time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is the realroot binary running as a subprocess.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer // stderr: the JSON log
	addr string      // the first listen address, once serving
	done chan struct{}
	code int
}

// startRealroot runs the binary with args and waits for its "serving" log
// line. attr, if not nil, is the process's SysProcAttr.
func startRealroot(t *testing.T, attr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	p := startProc(t, attr, args...)
	var addr string
	eventually(t, 20*time.Second, func() string {
		select {
		case <-p.done:
			t.Fatalf("realroot exited with %d before serving:\n%s", p.code, p.out)
		default:
		}
		for _, l := range p.logLines() {
			if l["msg"] == "serving" {
				addrs, _ := l["listen"].([]any)
				if len(addrs) > 0 {
					addr, _ = addrs[0].(string)
					return ""
				}
			}
		}
		return "no serving log line:\n" + p.out.String()
	})
	p.addr = addr
	return p
}

// startProc runs the binary with args without waiting.
func startProc(t *testing.T, attr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = attr
	if err := p.cmd.Start(); err != nil {
		if attr != nil && attr.Cloneflags != 0 {
			t.Skipf("cannot start in a new namespace: %v", err)
		}
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("realroot output:\n%s", p.out)
		}
	})
	return p
}

func (p *proc) url(path string) string { return "http://" + p.addr + path }

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait returns the exit code, failing the test after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("realroot still running %v later", timeout)
		return -1
	}
}

// logLines parses the JSON log lines written so far.
func (p *proc) logLines() []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// logged returns the log lines with message msg.
func (p *proc) logged(msg string) []map[string]any {
	var found []map[string]any
	for _, l := range p.logLines() {
		if l["msg"] == msg {
			found = append(found, l)
		}
	}
	return found
}

// syncBuffer is what the daemon's logs are written to in tests.
type syncBuffer = phpfpmtest.Buffer

// load is a few clients requesting paths in a loop, counting answers that
// are not 200.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stopc      chan struct{}
	wg         sync.WaitGroup
}

// startLoad starts n clients; each stops after 20000 requests, 30s, or stop.
func startLoad(base string, n int, paths ...string) *load {
	l := &load{stopc: make(chan struct{})}
	deadline := time.Now().Add(30 * time.Second)
	for i := range n {
		l.wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			defer client.CloseIdleConnections()
			for j := 0; j < 20000 && time.Now().Before(deadline); j++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				path := paths[(i+j)%len(paths)]
				status, body, err := get(client, base+path)
				if err != nil || status != http.StatusOK {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, fmt.Sprintf("GET %s: %d %q %v", path, status, body, err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *load) stop() {
	close(l.stopc)
	l.wg.Wait()
}

// groupProcs returns the pids and states of the processes of process group
// pgid, zombies included, read from /proc.
func groupProcs(pgid int) map[int]string {
	return procsWhere(func(ppid, pgrp int) bool { return pgrp == pgid })
}

// childProcs returns the pids and states of the children of ppid.
func childProcs(parent int) map[int]string {
	return procsWhere(func(ppid, pgrp int) bool { return ppid == parent })
}

func procsWhere(match func(ppid, pgrp int) bool) map[int]string {
	procs := map[int]string{}
	eachProc(func(p procStat) {
		if match(p.ppid, p.pgrp) {
			procs[p.pid] = p.state + " " + p.comm
		}
	})
	return procs
}

// waitMarks waits until every file exists: slow.php created it, so its
// request is running in PHP.
func waitMarks(t *testing.T, files ...string) {
	t.Helper()
	eventually(t, 10*time.Second, func() string {
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				return "slow request not running yet: " + err.Error()
			}
		}
		return ""
	})
}
