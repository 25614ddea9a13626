// Package phpfpmtest starts a private, real php-fpm for tests.
//
// Each Server has its own short temp directory (config, logs, socket), its
// own process group and a production-like php.ini (OPcache on, timestamps not
// revalidated). Tests skip when php-fpm is absent, except under CI=true where
// they fail: CI never skips silently.
//
//	srv := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
//	// dial "unix", srv.Socket; SCRIPT_FILENAME must be an absolute path
//	// readable by the pool user.
package phpfpmtest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"realroot/internal/testutil"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure a Server. The zero value is a 4-worker static pool.
type Options struct {
	// Workers is pm.max_children of a pm=static pool. 0 means 4.
	Workers int
	// MaxRequests is pm.max_requests. 0 means unlimited.
	MaxRequests int
	// INI holds extra php.ini settings, e.g.
	// "opcache.validate_timestamps": "1". They are appended to the generated
	// php.ini after the defaults, so they override them and remain
	// changeable by ini_set (unlike php_admin_value).
	INI map[string]string
	// Pool holds extra pool directives, e.g.
	// "request_terminate_timeout": "5s". They override the defaults
	// (pm, listen, status and ping paths).
	Pool map[string]string
}

// Server is a running php-fpm.
type Server struct {
	// Socket is the absolute path of the pool's unix socket.
	Socket string
	// Network and Address are where the pool listens: "unix" and Socket,
	// or "tcp" and host:port when Options.Pool sets listen to one.
	Network, Address string
	// Dir is the private temp dir holding config, logs and the socket.
	Dir string

	bin  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{} // closed when cmd has been waited for
	err  error         // cmd.Wait's result, valid after done
}

const (
	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

// Binary returns the path of php-fpm 8.2: php-fpm8.2 on PATH,
// /usr/sbin/php-fpm8.2, then php-fpm on PATH.
func Binary() (string, error) {
	if p, err := exec.LookPath("php-fpm8.2"); err == nil {
		return p, nil
	}
	if fi, err := os.Stat("/usr/sbin/php-fpm8.2"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/php-fpm8.2", nil
	}
	if p, err := exec.LookPath("php-fpm"); err == nil {
		return p, nil
	}
	return "", errors.New("php-fpm not found: run scripts/deps.sh")
}

// Start starts php-fpm and waits until its socket accepts connections.
// t.Cleanup stops it and removes its directory. When php-fpm is absent, the
// test is skipped, or fails when the environment has CI=true.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "fpm")
	if err != nil {
		t.Fatal(err)
	}
	// The pool user must reach the socket and scripts under it.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Server{Socket: filepath.Join(dir, "php-fpm.sock"), Dir: dir, bin: bin}
	s.Network, s.Address = "unix", s.Socket
	if l := opts.Pool["listen"]; l != "" && !strings.HasPrefix(l, "/") {
		s.Network, s.Address = "tcp", l
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("phpfpmtest: stop: %v\n%s", err, s.Log())
		}
		os.RemoveAll(dir)
	})
	if err := s.writeConfig(opts); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

func (s *Server) writeConfig(opts Options) error {
	ini, err := phpINI(s.bin, opts.INI)
	if err != nil {
		return err
	}
	iniPath := filepath.Join(s.Dir, "php.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o644); err != nil {
		return err
	}
	confPath := filepath.Join(s.Dir, "php-fpm.conf")
	if err := os.WriteFile(confPath, []byte(s.fpmConf(opts)), 0o644); err != nil {
		return err
	}
	s.args = []string{"-F", "-y", confPath, "-c", iniPath}
	if os.Geteuid() == 0 {
		// php-fpm refuses to run as root without -R (--allow-to-run-as-root).
		s.args = append(s.args, "-R")
	}
	return nil
}

func (s *Server) fpmConf(opts Options) string {
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	pool := map[string]string{
		"listen":               s.Socket,
		"listen.mode":          "0666",
		"pm":                   "static",
		"pm.max_children":      fmt.Sprint(workers),
		"pm.max_requests":      fmt.Sprint(opts.MaxRequests),
		"pm.status_path":       "/fpm-status",
		"ping.path":            "/fpm-ping",
		"catch_workers_output": "no",
	}
	if os.Geteuid() == 0 {
		// As root the pool must name a user; with -R it may be root itself.
		// As a normal user, user/group are ignored (with a notice), so they
		// are left out.
		pool["user"] = "root"
		pool["group"] = "root"
	}
	maps.Copy(pool, opts.Pool)

	var b strings.Builder
	fmt.Fprintf(&b, "[global]\n")
	fmt.Fprintf(&b, "pid = %s\n", filepath.Join(s.Dir, "php-fpm.pid"))
	fmt.Fprintf(&b, "error_log = %s\n", filepath.Join(s.Dir, "php-fpm.log"))
	fmt.Fprintf(&b, "daemonize = no\n")
	// Bounds a graceful stop: children get SIGTERM after this.
	fmt.Fprintf(&b, "process_control_timeout = 2s\n")
	fmt.Fprintf(&b, "\n[test]\n")
	for _, k := range slices.Sorted(maps.Keys(pool)) {
		fmt.Fprintf(&b, "%s = %s\n", k, pool[k])
	}
	return b.String()
}

var opcacheBuiltin = sync.OnceValues(func() (bool, error) {
	// The conf.d scan dir is compiled in and still read with -c; Debian's
	// php8.2-opcache loads the extension there. Ask with an empty ini.
	bin, err := Binary()
	if err != nil {
		return false, err
	}
	out, err := exec.Command(bin, "-c", os.DevNull, "-m").Output()
	if err != nil {
		return false, fmt.Errorf("%s -m: %w", bin, err)
	}
	return bytes.Contains(out, []byte("\nZend OPcache\n")), nil
})

// phpINI returns php.ini-production (when present) followed by the test
// defaults and then extra.
func phpINI(bin string, extra map[string]string) (string, error) {
	var b strings.Builder
	if base, err := os.ReadFile("/usr/lib/php/8.2/php.ini-production"); err == nil {
		b.Write(base)
		b.WriteString("\n")
	}
	b.WriteString("\n; phpfpmtest\n[PHP]\n")
	loaded, err := opcacheBuiltin()
	if err != nil {
		return "", err
	}
	if !loaded {
		b.WriteString("zend_extension = opcache\n")
	}
	settings := map[string]string{
		"opcache.enable":              "1",
		"opcache.validate_timestamps": "0",
		"opcache.revalidate_path":     "0",
		"realpath_cache_ttl":          "120",
		"realpath_cache_size":         "4096k",
		"display_errors":              "Off",
		"log_errors":                  "On",
		// error_log is left unset: errors reach the web server as
		// FCGI_STDERR.
	}
	maps.Copy(settings, extra)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteINI(settings[k]))
	}
	return b.String(), nil
}

// quoteINI quotes values that php.ini would otherwise interpret.
func quoteINI(v string) string {
	if v == "" || strings.ContainsAny(v, " ;=\"'&|~!^(){}[]$") {
		return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
	}
	return v
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	if err := s.startProcess(); err != nil {
		t.Fatalf("phpfpmtest: start %s: %v", s.bin, err)
	}
	if err := s.waitReady(); err != nil {
		s.Kill()
		t.Fatalf("phpfpmtest: %v\n%s", err, s.Log())
	}
}

func (s *Server) startProcess() error {
	cmd := exec.Command(s.bin, s.args...)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Stdin = nil
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Kill the master if the test binary dies without cleanup.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.out, s.done = cmd, out, done
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(done)
	}()
	return nil
}

// waitReady returns when the socket accepts a connection, or an error when
// php-fpm exits first or startTimeout passes.
func (s *Server) waitReady() error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout(s.Network, s.Address, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			s.mu.Lock()
			werr := s.err
			s.mu.Unlock()
			return fmt.Errorf("php-fpm exited during start-up: %v", werr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("php-fpm socket %s not accepting after %v: %v", s.Address, startTimeout, err)
		}
	}
}

// Stop stops php-fpm gracefully (SIGQUIT) and waits for it to exit. After
// stopTimeout it kills the process group. Stopping a stopped server is a
// no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return s.waitGroup(cmd.Process.Pid)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		s.Kill()
		return fmt.Errorf("php-fpm did not stop within %v after SIGQUIT; killed", stopTimeout)
	}
	// Children may outlive the master briefly.
	return s.waitGroup(cmd.Process.Pid)
}

// Kill sends SIGKILL to php-fpm's process group (master and workers) and
// waits until none of them is left.
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		return fmt.Errorf("php-fpm master %d not reaped %v after SIGKILL", pgid, stopTimeout)
	}
	return s.waitGroup(pgid)
}

// waitGroup waits until no live process is left in process group pgid,
// SIGKILLing stragglers.
func (s *Server) waitGroup(pgid int) error {
	deadline := time.Now().Add(stopTimeout)
	for {
		pids := testutil.GroupPids(pgid)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of group %d still alive after %v", pids, pgid, stopTimeout)
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart kills php-fpm and starts it again with the same configuration and
// socket, waiting until it accepts connections.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Kill(); err != nil {
		t.Fatalf("phpfpmtest: restart: %v", err)
	}
	s.start(t)
}

// Pid returns the php-fpm master's pid (also its process group id), or 0.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log returns php-fpm's error log, followed by anything the process wrote to
// stdout/stderr, for failure messages.
func (s *Server) Log() string {
	var b strings.Builder
	logData, err := os.ReadFile(filepath.Join(s.Dir, "php-fpm.log"))
	if err != nil {
		fmt.Fprintf(&b, "(php-fpm.log: %v)\n", err)
	}
	b.Write(logData)
	s.mu.Lock()
	out := s.out
	s.mu.Unlock()
	if out != nil {
		if o := out.String(); o != "" {
			b.WriteString("--- php-fpm output ---\n")
			b.WriteString(o)
		}
	}
	return b.String()
}

// Buffer is a bytes.Buffer safe for concurrent use: what a process or a
// logger writes while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
