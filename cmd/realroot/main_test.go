package main

import (
	"bytes"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		code    int
		wantOut string
	}{
		{name: "version", args: []string{"version"}, code: 0, wantOut: "realroot dev"},
		{name: "--version", args: []string{"--version"}, code: 0, wantOut: "realroot dev"},
		{name: "help", args: []string{"--help"}, code: 0, wantOut: "SYNOPSIS"},
		{name: "check help", args: []string{"check", "-h"}, code: 0, wantOut: "SYNOPSIS"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, wantOut: `unknown command "frobnicate"`},
		{name: "no root", args: []string{"--listen", "127.0.0.1:0"}, code: 2, wantOut: "root: required"},
		{name: "bad flag", args: []string{"--read-timeout", "soon"}, code: 2, wantOut: "read-timeout"},
		{name: "bad env", env: map[string]string{"REALROOT_FASTCGI": "php"}, args: []string{"--root", "/x"}, code: 2,
			wantOut: `fastcgi: "php" is not unix:/path or host:port`},
		{name: "arguments without --", args: []string{"--root", "/x", "php-fpm"}, code: 2,
			wantOut: `unexpected arguments ["php-fpm"] (put -- before a php-fpm command)`},
		{name: "admin not host:port", args: []string{"--root", "/x", "--admin", "9180"}, code: 2,
			wantOut: "admin: \"9180\" is not host:port\nRun"},
		{name: "admin not loopback", args: []string{"--root", "/x", "--admin", "0.0.0.0:9180"}, code: 2,
			wantOut: "not loopback; the admin API has no authentication"},
		{name: "switch help", args: []string{"switch", "--help"}, code: 0, wantOut: "Usage: realroot switch RELEASE_DIR"},
		{name: "switch without release", args: []string{"switch"}, code: 2, wantOut: "switch: want one RELEASE_DIR, got []\nRun 'realroot switch --help' for its usage."},
		{name: "switch bad flag", args: []string{"switch", "/srv/app/releases/B", "--timeout", "soon"}, code: 2, wantOut: "switch: invalid value"},
		{name: "switch missing release", args: []string{"switch", "/nonexistent/releases/B", "--link", "/nonexistent/current"}, code: 1,
			wantOut: "/nonexistent/releases/B"},
		{name: "releases help", args: []string{"releases", "-h"}, code: 0, wantOut: "Usage: realroot releases"},
		{name: "releases bad keep", args: []string{"releases", "--keep", "0"}, code: 2, wantOut: "releases: --keep 0: keep at least 1"},
		{name: "releases missing link", args: []string{"releases", "--link", "/nonexistent/current"}, code: 1, wantOut: "/nonexistent/current"},
		{name: "root missing", args: []string{"--root", "/nonexistent/current", "--listen", "127.0.0.1:0"}, code: 1,
			wantOut: "/nonexistent/current"},
		{name: "child missing", args: []string{"--root", "/nonexistent/current", "--listen", "127.0.0.1:0", "--", "/nonexistent/php-fpm"},
			code: 1, wantOut: "start /nonexistent/php-fpm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(tt.args, func(k string) string { return tt.env[k] }, &out, &out, nil)
			if code != tt.code || !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("run(%q) = %d, output %q; want %d and %q", tt.args, code, out.String(), tt.code, tt.wantOut)
			}
		})
	}
}

// TestManual checks that --help documents every flag with its environment
// variable and default.
func TestManual(t *testing.T) {
	var b bytes.Buffer
	manual(&b)
	text := b.String()
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "EXAMPLES"} {
		if !strings.Contains(text, "\n"+section+"\n") && !strings.HasPrefix(text, section+"\n") {
			t.Errorf("manual lacks section %s", section)
		}
	}
	oneLine := strings.Join(strings.Fields(text), " ")
	def := conf.Default()
	conf.FlagSet(&def).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(text, "\n    --"+f.Name+" ") && !strings.Contains(text, "\n    --"+f.Name+"\n") {
			t.Errorf("manual lacks --%s", f.Name)
		}
		if !strings.Contains(oneLine, "Environment "+conf.EnvName(f.Name)) {
			t.Errorf("manual lacks %s", conf.EnvName(f.Name))
		}
		if f.DefValue != "" && !strings.Contains(oneLine, conf.EnvName(f.Name)+"; default "+f.DefValue+".") {
			t.Errorf("manual lacks the default of --%s, %s", f.Name, f.DefValue)
		}
	})
	for i, line := range strings.Split(text, "\n") {
		if len(line) > 80 {
			t.Errorf("manual line %d is %d columns: %q", i+1, len(line), line)
		}
	}
}

// TestServeInProcess runs the daemon in the test process, with signals
// sent on a channel, so that the race detector sees the generation swap:
// a reload changes a param and a deny rule while a client loops.
func TestServeInProcess(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer http.DefaultClient.CloseIdleConnections()
	dir := site(t)
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.Listen = []string{"127.0.0.1:0"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	logs, err := newLogs(c, &logBuf)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.close()
	next := c
	next.Params = map[string]string{"RR_TEST": "two"}
	next.Deny = []string{"/secret"}
	next.Root = filepath.Join(dir, "other", "public")
	d := &daemon{cfg: c, logs: logs, log: logs.main, reload: func() (conf.Config, error) { return next, nil }}

	sigs := make(chan os.Signal, 1)
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- d.run(nil, nil, nil, sigs, func(a []net.Addr) { addrc <- a[0] }) }()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-errc:
		t.Fatalf("run: %v", err)
	}
	if status, body, err := get(http.DefaultClient, base+"/"); status != 200 || body != "release 1 param=-" {
		t.Fatalf("GET / = %d %q %v; want 200 release 1 param=-", status, body, err)
	}
	l := startLoad(base, 3, "/", "/style.css")
	time.Sleep(100 * time.Millisecond)
	sigs <- syscall.SIGHUP
	eventually(t, 5*time.Second, func() string {
		if _, body, _ := get(http.DefaultClient, base+"/"); body != "release 2 param=two" {
			return "after reload GET / = " + body
		}
		return ""
	})
	if status, _, _ := get(http.DefaultClient, base+"/secret/x.txt"); status != http.StatusForbidden {
		t.Errorf("after reload GET /secret/x.txt = %d; want 403", status)
	}
	time.Sleep(100 * time.Millisecond)
	l.stop()
	if l.failed.Load() != 0 || l.ok.Load() == 0 {
		t.Errorf("load: %d ok, %d failed: %v", l.ok.Load(), l.failed.Load(), l.errs)
	}
	sigs <- syscall.SIGTERM
	if err := <-errc; err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
	log := logBuf.String()
	for _, want := range []string{`"msg":"config reloaded"`, `"changed":["deny","param","root"]`, `"msg":"stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// newTestDaemon is a daemon for c that logs to w (its logs close at the
// end of the test) and whose reloads read reload.
func newTestDaemon(t testing.TB, c conf.Config, w io.Writer, reload func() (conf.Config, error)) *daemon {
	t.Helper()
	logs, err := newLogs(c, w)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(logs.close)
	return &daemon{cfg: c, logs: logs, log: logs.main, reload: reload}
}
