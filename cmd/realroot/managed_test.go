package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/admin"
	"realroot/resolve"
)

// Managed mode's configuration and template, and the helpers of
// managed_php_test.go.

func TestManagedConfig(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "pool.conf")
	tests := []struct {
		name string
		args []string
		want string // in the error; empty: valid
	}{
		{name: "valid", args: []string{"--managed-pool", tmpl}},
		{name: "with fastcgi", args: []string{"--managed-pool", tmpl, "--fastcgi", "unix:/run/php.sock"},
			want: `fastcgi: ["unix:/run/php.sock"] cannot be set with managed-pool`},
		{name: "with an entrypoint", args: []string{"--managed-pool", tmpl, "--", "php-fpm8.2", "-F"},
			want: "managed-pool: not with -- PHP-FPM-COMMAND"},
		{name: "relative template", args: []string{"--managed-pool", "pool.conf"}, want: `managed-pool: "pool.conf" is not an absolute path`},
		{name: "one pool", args: []string{"--managed-pool", tmpl, "--max-pools", "1"}, want: "max-pools: 1 is below 2"},
		{name: "no start timeout", args: []string{"--managed-pool", tmpl, "--pool-start-timeout", "0s"}, want: "pool-start-timeout: 0s is below 1ms"},
		{name: "no binary", args: []string{"--managed-pool", tmpl, "--php-fpm", ""}, want: "php-fpm: a binary is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := loadConfig(append([]string{"--root", "/srv/app/current"}, tt.args...), func(string) string { return "" })
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("loadConfig = %v; want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("loadConfig = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestPoolTemplate(t *testing.T) {
	tests := []struct {
		name, give string
		want       []string // lines of the result
		err        string
	}{
		{name: "placeholders", give: "[{{name}}]\nlisten = {{socket}}\nchdir = {{release}}\nphp_admin_value[doc_root] = {{root}}\n",
			want: []string{"[global]", "daemonize = no", "error_log = /proc/self/fd/2", "pid = /run/rr/p7.pid",
				"process_control_timeout = 10s", "[B-7]", "listen = /run/rr/p7.sock", "chdir = /srv/app/releases/B",
				"php_admin_value[doc_root] = /srv/app/releases/B/public"}},
		{name: "no section", give: "listen = {{socket}}", want: []string{"[B-7]", "listen = /run/rr/p7.sock"}},
		{name: "spaces inside", give: "listen = {{ socket }}", err: "unknown placeholder {{ socket }}"},
		{name: "unknown", give: "listen = {{socket}}\nuser = {{user}}", err: "unknown placeholder {{user}}"},
		{name: "no socket", give: "[www]\nlisten = /run/php.sock", err: "no {{socket}}"},
	}
	rel := &resolve.Release{Root: "/srv/app/releases/B/public", Dir: "/srv/app/releases/B", Gen: 7}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTemplate(tt.give)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("checkTemplate = %v; want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := &fpmPool{name: "B-7", rel: rel, socket: "/run/rr/p7.sock", pid: "/run/rr/p7.pid"}
			got, err := renderPool(tt.give, p, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(got, "\n")
			for _, w := range tt.want {
				if !slices.Contains(lines, w) {
					t.Errorf("no line %q in\n%s", w, got)
				}
			}
		})
	}
	if got := poolName("2026-11-22 12:00/ä"); got != "2026-11-22_12_00___" {
		t.Errorf("poolName = %q; want %q", got, "2026-11-22_12_00___")
	}
}

// TestManagedStartFails: realroot does not serve when the first release's
// pool does not start, and says why.
func TestManagedStartFails(t *testing.T) {
	requirePHPFPM(t)
	dir := tempDir(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r1"), "r1")
	symlink(t, "releases/r1", filepath.Join(dir, "current"))
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.ManagedPool = writePoolTemplate(t, "pm.max_children = lots\n")
	c.Listen = []string{"127.0.0.1:0"}
	c.AccessLog = "off"
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	d := newTestDaemon(t, c, &buf, func() (conf.Config, error) { return c, nil })
	err := d.run(nil, nil, nil, make(chan os.Signal), func([]net.Addr) { t.Error("serving") })
	if err == nil || !strings.Contains(err.Error(), "pm.max_children") || !strings.Contains(err.Error(), filepath.Join(dir, "releases", "r1")) {
		t.Errorf("run = %v; want an error naming the release and pm.max_children", err)
	}
}

// TestManagedCheck: realroot check has php-fpm test the template made for
// the current release.
func TestManagedCheck(t *testing.T) {
	requirePHPFPM(t)
	dir := tempDir(t)
	writeManagedRelease(t, filepath.Join(dir, "releases", "r1"), "r1")
	symlink(t, "releases/r1", filepath.Join(dir, "current"))
	root := filepath.Join(dir, "current", "public")
	for _, tt := range []struct {
		name, extra string
		code        int
		want        string
	}{
		{name: "good", code: 0, want: "configuration test successful for release " + filepath.Join(dir, "releases", "r1")},
		{name: "bad", extra: "chdir = {{release}}/nope\n", code: 1, want: "the chdir path '" + filepath.Join(dir, "releases", "r1", "nope") + "' does not exist"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			args := []string{"check", "--root", root, "--managed-pool", writePoolTemplate(t, tt.extra)}
			if code := run(args, func(string) string { return "" }, &out, &out, noSignals); code != tt.code || !strings.Contains(out.String(), tt.want) {
				t.Errorf("realroot check = %d\n%s\nwant %d and %q", code, out.String(), tt.code, tt.want)
			}
		})
	}
}

// managedServer is the daemon running in the test process in managed mode.
type managedServer struct {
	base, admin string
	log         *syncBuffer
	sigs        chan os.Signal
	errc        chan error
	stopped     bool
}

// startManaged serves c (root and managed-pool set) with an admin
// listener, a 20ms poll and max-conns 4 (the template's pm.max_children).
func startManaged(t *testing.T, c conf.Config) *managedServer {
	t.Helper()
	c.Listen = []string{"127.0.0.1:0"}
	c.Admin = "127.0.0.1:0"
	c.AccessLog = "off"
	c.MaxConns = 4
	c.PollInterval = 20 * time.Millisecond
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	s := &managedServer{log: &syncBuffer{}, sigs: make(chan os.Signal, 1), errc: make(chan error, 1)}
	logs, err := newLogs(c, s.log)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: c, logs: logs, log: logs.main, reload: func() (conf.Config, error) { return c, nil }}
	addrc := make(chan net.Addr, 1)
	go func() { s.errc <- d.run(nil, nil, nil, s.sigs, func(a []net.Addr) { addrc <- a[0] }) }()
	select {
	case a := <-addrc:
		s.base = "http://" + a.String()
	case err := <-s.errc:
		t.Fatalf("run: %v\n%s", err, s.log)
	}
	s.admin = "http://" + loggedAdmin(t, s.log.String())
	t.Cleanup(func() {
		s.stop(t)
		logs.close()
		if t.Failed() || os.Getenv("RR_LOG") != "" {
			t.Logf("realroot log:\n%s", s.log)
		}
	})
	return s
}

func (s *managedServer) stop(t *testing.T) {
	if s.stopped {
		return
	}
	s.stopped = true
	s.sigs <- syscall.SIGTERM
	select {
	case err := <-s.errc:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("realroot still running 30s after SIGTERM")
	}
}

func (s *managedServer) status(t *testing.T) admin.Status { return status(t, s.admin) }

// servingPool returns the pool serving st's current release.
func servingPool(t *testing.T, st admin.Status) admin.Pool {
	t.Helper()
	return servingPoolOf(t, st, st.Current.Gen)
}

// servingPoolOf returns the newest pool of gen that is not stopped.
func servingPoolOf(t *testing.T, st admin.Status, gen uint64) admin.Pool {
	t.Helper()
	for _, p := range slices.Backward(st.PHPFPMPools) {
		if p.Gen == gen && p.State != "stopped" {
			return p
		}
	}
	t.Fatalf("no pool of gen %d alive: %+v", gen, st.PHPFPMPools)
	return admin.Pool{}
}

func poolOf(st admin.Status, name string) admin.Pool {
	for _, p := range st.PHPFPMPools {
		if p.Name == name {
			return p
		}
	}
	return admin.Pool{Name: name, State: "unlisted"}
}

// requirePHPFPM skips the test without php-fpm, or fails it under CI=true.
func requirePHPFPM(t *testing.T) {
	t.Helper()
	if _, err := phpfpmtest.Binary(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
}

// writePoolTemplate writes a pool template with OPcache on and timestamps
// never revalidated, plus extra, and returns its path.
func writePoolTemplate(t *testing.T, extra string) string {
	t.Helper()
	text := "[{{name}}]\nlisten = {{socket}}\npm = static\npm.max_children = 4\n" +
		"catch_workers_output = yes\n" +
		"php_admin_value[opcache.validate_timestamps] = 0\n" + extra
	if os.Geteuid() == 0 {
		text += "user = root\ngroup = root\n" // php-fpm, as root, needs -R, which realroot then passes
	}
	path := filepath.Join(t.TempDir(), "pool.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeManagedRelease writes release name in dir: a front controller that
// includes 50 files (half through __DIR__, half through DOCUMENT_ROOT), a
// slow script (slow.php?ms=N&mark=FILE) including one file before its sleep
// and one after, and opcache.php, which lists the scripts in OPcache. Every
// included file returns name.
func writeManagedRelease(t *testing.T, dir, name string) {
	t.Helper()
	files := map[string]string{
		"public/index.php": `<?php $seen = [];
for ($i = 0; $i < 25; $i++) $seen[] = require __DIR__ . "/../lib/f$i.php";
for ($i = 25; $i < 50; $i++) $seen[] = require $_SERVER['DOCUMENT_ROOT'] . "/../lib/f$i.php";
echo implode(",", array_unique($seen));`,
		"public/slow.php": `<?php if (isset($_GET['mark'])) touch($_GET['mark']);
$a = require __DIR__ . '/../lib/f0.php';
usleep((int)($_GET['ms'] ?? 150) * 1000);
$b = require $_SERVER['DOCUMENT_ROOT'] . '/../lib/f1.php';
echo implode(",", array_unique([$a, $b]));`,
		"public/opcache.php": `<?php echo implode("\n", array_keys(opcache_get_status()['scripts'] ?? []));`,
	}
	for i := range 50 {
		files[fmt.Sprintf("lib/f%d.php", i)] = fmt.Sprintf("<?php return '%s';", name)
	}
	writeFiles(t, dir, files)
}

// writeFiles writes files below dir, dated an hour ago as a build's files
// are (cp -a keeps their dates): OPcache does not cache a file changed less
// than opcache.file_update_protection (2s) ago.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// tempDir is a t.TempDir that php-fpm's workers can read.
func tempDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
