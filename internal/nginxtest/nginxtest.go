// Package nginxtest starts a private, real nginx for tests.
//
// Each Server has its own temp directory (its -p prefix: config, pid, error
// log, temp paths), its own process group and a free port of 127.0.0.1. The
// caller writes the http block's body (its server blocks); Start adds what
// every test nginx needs around it. Tests skip when nginx is absent, except
// under CI=true where they fail: CI never skips silently (as
// internal/phpfpmtest does for php-fpm).
//
//	srv := nginxtest.Start(t, nginxtest.Options{HTTP: `
//		server {
//			listen 127.0.0.1:{{port}};
//			root /srv/www;
//			access_log {{prefix}}/access.log combined;
//		}`})
//	// http://srv.Addr/...; the log is filepath.Join(srv.Prefix, "access.log").
package nginxtest

import (
	"errors"
	"fmt"
	"net"
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

// Options configure a Server.
type Options struct {
	// HTTP is written inside the http block after Start's defaults:
	// typically one server block, which must listen on
	// 127.0.0.1:{{port}}. Every "{{port}}" is replaced with the port
	// Start chose and every "{{prefix}}" with Server.Prefix.
	//
	// The defaults are: mime.types (or a few types when
	// /etc/nginx/mime.types is missing), default_type
	// application/octet-stream, access_log off (an access_log in a server
	// block overrides it), and every *_temp_path inside the prefix.
	HTTP string
	// Main is written in the main context, before the events block (e.g.
	// "worker_processes 2;"). Start already writes user (root, when run as
	// root), worker_processes 1, daemon off, pid and error_log.
	Main string
}

// Server is a running nginx.
type Server struct {
	// Addr is host:port of the listener, 127.0.0.1.
	Addr string
	// Port is Addr's port, as written for {{port}}.
	Port string
	// Prefix is the private temp dir: nginx's -p, holding nginx.conf,
	// error.log and the temp paths.
	Prefix string

	bin     string
	cmd     *exec.Cmd
	out     *phpfpmtest.Buffer
	exited  chan struct{}
	stopped sync.Once
}

const (
	startTimeout = 5 * time.Second
	stopTimeout  = 5 * time.Second
	portAttempts = 5
)

// Binary returns the path of nginx: nginx on PATH, then /usr/sbin/nginx.
func Binary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not found: run scripts/deps.sh")
}

// Require returns nginx's path. When nginx is absent the test is skipped, or
// fails when the environment has CI=true. Start calls it; a test calls it
// first to skip before it starts anything else.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	return bin
}

var configure = sync.OnceValue(func() string {
	bin, err := Binary()
	if err != nil {
		return ""
	}
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	return string(out)
})

// HasModule reports whether nginx was built with the optional module name
// compiled in, as `nginx -V` lists it: "gzip_static" for
// --with-http_gzip_static_module, "stream" for --with-stream. A dynamic
// module (=dynamic) is not loaded, so it does not count; nor does a module
// built by default, which -V does not list. False without nginx.
func HasModule(name string) bool {
	for _, f := range strings.Fields(configure()) {
		if f == "--with-http_"+name+"_module" || f == "--with-"+name+"_module" || f == "--with-"+name {
			return true
		}
	}
	return false
}

// HasModule is the package's HasModule, for the server's binary.
func (s *Server) HasModule(name string) bool { return HasModule(name) }

// Start writes nginx.conf from o, starts nginx on a free port of 127.0.0.1
// (retrying on another port when that one turns out to be in use) and waits
// until the port accepts connections. t.Cleanup stops it: SIGTERM, then
// SIGKILL of its process group after 5 s. A configuration nginx refuses
// fails the test at once, with nginx's complaint.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Require(t)
	prefix := t.TempDir()
	var lastErr string
	for range portAttempts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		s := &Server{Addr: addr, Port: port, Prefix: prefix, bin: bin}
		if err := os.WriteFile(s.ConfPath(), []byte(s.conf(o)), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(s.ErrorLog())
		if err := s.startProcess(); err != nil {
			t.Fatalf("nginxtest: start %s: %v", bin, err)
		}
		if s.waitPort() {
			// nginx's master stops its workers before it exits.
			t.Cleanup(func() {
				if err := s.Stop(); err != nil {
					t.Errorf("nginxtest: %v\n%s", err, s.Log())
				}
			})
			return s
		}
		s.Stop()
		lastErr = s.Log()
		if !strings.Contains(lastErr, "in use") {
			break
		}
	}
	t.Fatalf("nginxtest: nginx did not start:\n%s", lastErr)
	return nil
}

// ConfPath is the path of the nginx.conf Start wrote.
func (s *Server) ConfPath() string { return filepath.Join(s.Prefix, "nginx.conf") }

// ErrorLog is the path of nginx's error log (level warn).
func (s *Server) ErrorLog() string { return filepath.Join(s.Prefix, "error.log") }

func (s *Server) conf(o Options) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		// nginx's workers would run as nobody, who cannot enter the
		// test's 0700 temp dirs.
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, "worker_processes 1;\ndaemon off;\npid %s;\nerror_log %s warn;\n",
		filepath.Join(s.Prefix, "nginx.pid"), s.ErrorLog())
	if o.Main != "" {
		b.WriteString(o.Main + "\n")
	}
	b.WriteString("events { worker_connections 64; }\nhttp {\n")
	if _, err := os.Stat("/etc/nginx/mime.types"); err == nil {
		b.WriteString("\tinclude /etc/nginx/mime.types;\n")
	} else {
		b.WriteString("\ttypes { text/html html; text/css css; text/plain txt; application/javascript js; }\n")
	}
	b.WriteString("\tdefault_type application/octet-stream;\n\taccess_log off;\n")
	for _, p := range []string{"client_body", "fastcgi", "proxy", "scgi", "uwsgi"} {
		fmt.Fprintf(&b, "\t%s_temp_path %s;\n", p, filepath.Join(s.Prefix, p+"_temp"))
	}
	b.WriteString(strings.NewReplacer("{{port}}", s.Port, "{{prefix}}", s.Prefix).Replace(o.HTTP))
	b.WriteString("\n}\n")
	return b.String()
}

func (s *Server) startProcess() error {
	s.out = &phpfpmtest.Buffer{}
	s.cmd = exec.Command(s.bin, "-p", s.Prefix, "-c", s.ConfPath(), "-e", s.ErrorLog())
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Dir = s.Prefix
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Kill the master if the test binary dies without cleanup.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	return nil
}

// waitPort waits up to startTimeout for Addr to accept a connection; false
// when it does not, or nginx exits first.
func (s *Server) waitPort() bool {
	for deadline := time.Now().Add(startTimeout); time.Now().Before(deadline); {
		select {
		case <-s.exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Stop stops nginx (SIGTERM: a fast shutdown; the master waits for its
// workers) and waits for it to exit; after 5 s it kills the process group. Stopping a stopped server is a
// no-op.
func (s *Server) Stop() error {
	var err error
	s.stopped.Do(func() {
		pgid := s.cmd.Process.Pid
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.exited
			err = fmt.Errorf("nginx did not stop within %v after SIGTERM; killed", stopTimeout)
		}
	})
	return err
}

// Log returns nginx's error log, followed by anything the process wrote to
// stdout/stderr, for failure messages.
func (s *Server) Log() string {
	var b strings.Builder
	data, err := os.ReadFile(s.ErrorLog())
	if err != nil {
		fmt.Fprintf(&b, "(error.log: %v)\n", err)
	}
	b.Write(data)
	if s.out != nil {
		if o := s.out.String(); o != "" {
			b.WriteString("--- nginx output ---\n")
			b.WriteString(o)
		}
	}
	return b.String()
}

// Pid returns the nginx master's pid, also its process group id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }
