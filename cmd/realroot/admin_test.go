package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
	"realroot/internal/testutil"
	"realroot/proxy"
	"realroot/proxy/admin"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// deployServer is a running server for the deploy commands' tests: a real
// php-fpm, the proxy and the admin API on httptest servers, and a deploy
// directory with releases/<name> for each name and current -> the first.
type deployServer struct {
	dir   string // the deploy directory
	link  string // dir/current
	fpm   *phpfpmtest.Server
	rs    *resolve.Releases
	app   *httptest.Server
	admin *httptest.Server
}

// deployFiles are each release's files; {{R}} is the release's name.
var deployFiles = map[string]string{
	"public/index.php": `<?php echo "{{R}}";`,
	// slow.php waits for its gate file, so that the test decides when a
	// request ends.
	"public/slow.php": `<?php
for ($i = 0; $i < 2000 && !file_exists($_GET['gate']); $i++) { clearstatcache(); usleep(10000); }
echo "{{R}}";`,
}

// makeDeploy writes dir/releases/<name> for each name, and current -> the
// first.
func makeDeploy(t *testing.T, names ...string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		for name, content := range deployFiles {
			p := filepath.Join(dir, "releases", n, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "{{R}}", n)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(filepath.Join("releases", names[0]), filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startDeployServer(t *testing.T, opts resolve.Options, names ...string) *deployServer {
	t.Helper()
	d := &deployServer{fpm: phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})}
	d.dir = makeDeploy(t, names...)
	d.link = filepath.Join(d.dir, "current")
	opts.Root = filepath.Join(d.link, "public")
	var err error
	if d.rs, err = resolve.New(opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	client := &fcgi.Client{Network: "unix", Address: d.fpm.Socket, ReadTimeout: 30 * time.Second}
	t.Cleanup(func() { client.Close() })
	m := admin.NewMetrics()
	d.app = httptest.NewServer(proxy.New(d.rs, client, proxy.Options{FrontController: "/index.php", Observer: m}))
	t.Cleanup(d.app.Close)
	d.admin = httptest.NewServer(admin.New(admin.Options{
		Releases:  releasesOf(func() *resolve.Releases { return d.rs }),
		Metrics:   m,
		PoolStats: func() fcgi.PoolStats { return sumPoolStats([]*fcgi.Client{client}) },
		Version:   version,
	}))
	t.Cleanup(d.admin.Close)
	return d
}

// adminAddr is the admin API's host:port, as --admin takes it.
func (d *deployServer) adminAddr() string { return strings.TrimPrefix(d.admin.URL, "http://") }

// slow starts a request to slow.php that ends when gate exists; its body
// arrives on the channel. It returns once the request is in flight.
func (d *deployServer) slow(t *testing.T, gate string) <-chan string {
	t.Helper()
	before := d.rs.Current()
	n := before.InFlight()
	c := make(chan string, 1)
	go func() {
		resp, err := http.Get(d.app.URL + "/slow.php?gate=" + gate)
		if err != nil {
			c <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		c <- string(b)
	}()
	testutil.WaitFor(t, "the slow request in flight", func() bool { return before.InFlight() > n })
	return c
}

// page returns the body of GET path.
func (d *deployServer) page(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(d.app.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// noSignals is a signal channel on which nothing arrives.
var noSignals = make(chan os.Signal)

// runCmd runs a subcommand function with no environment and returns its
// error and output.
func runCmd(f func([]string, func(string) string, io.Writer, io.Writer, <-chan os.Signal) error, args ...string) (string, error) {
	var out syncBuffer
	err := f(args, func(string) string { return "" }, &out, &out, noSignals)
	return out.String(), err
}

func TestCheckAdminAddr(t *testing.T) {
	tests := []struct {
		give   string
		remote bool
		want   string // part of the error; empty: none
	}{
		{give: "127.0.0.1:9180"},
		{give: "[::1]:9180"},
		{give: "localhost:9180"},
		{give: ":9180", want: "every interface"},
		{give: "0.0.0.0:9180", want: "not loopback"},
		{give: "10.1.2.3:9180", want: "--admin-allow-remote"},
		{give: "admin.example:9180", want: "not loopback"},
		{give: "0.0.0.0:9180", remote: true},
		{give: "9180", want: "not host:port"},
	}
	for _, tt := range tests {
		err := checkAdminAddr(tt.give, tt.remote)
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("checkAdminAddr(%q, %v) = %v; want %q", tt.give, tt.remote, err, tt.want)
		}
	}
}

func TestAdminListener(t *testing.T) {
	if _, err := listenAdmin("0.0.0.0:0", false); err == nil {
		t.Fatal("listenAdmin(0.0.0.0:0) succeeded; want it refused")
	}
	ln, err := listenAdmin("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	srv := newAdminServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "admin") }), zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "admin" {
		t.Fatalf("got %q", b)
	}
	srv.Shutdown(context.Background())
	if err := <-done; err != http.ErrServerClosed {
		t.Fatalf("Serve() = %v; want ErrServerClosed", err)
	}
}

func TestAdminBase(t *testing.T) {
	tests := []struct{ give, want string }{
		{"127.0.0.1:9180", "http://127.0.0.1:9180"},
		{":9180", "http://127.0.0.1:9180"},
		{"[::1]:9180", "http://[::1]:9180"},
		{"https://admin.example/rr/", "https://admin.example/rr"},
	}
	for _, tt := range tests {
		if got, err := adminBase(tt.give); err != nil || got != tt.want {
			t.Errorf("adminBase(%q) = %q, %v; want %q", tt.give, got, err, tt.want)
		}
	}
	if _, err := adminBase("nonsense"); err == nil {
		t.Errorf("adminBase(nonsense) succeeded")
	}
}

// TestReadyCheck: ready when php-fpm answers a FastCGI request, not when
// nothing listens.
func TestReadyCheck(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1})
	dir := makeDeploy(t, "A")
	rs, err := resolve.New(resolve.Options{Root: filepath.Join(dir, "current", "public")})
	if err != nil {
		t.Fatal(err)
	}
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	ready := readyCheck(func() (conf.Config, *resolve.Releases) { return c, rs })
	if err := ready(context.Background()); err != nil {
		t.Fatalf("ready with php-fpm running = %v; want nil", err)
	}

	// The root missing for a moment (a copy deploy) does not matter.
	if err := os.Remove(filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	rs.Refresh()
	if err := ready(context.Background()); err != nil {
		t.Fatalf("ready just after the root went = %v; want nil within %v", err, readyDownGrace)
	}

	bad := c
	bad.FastCGI = []string{"unix:" + filepath.Join(dir, "nope.sock")}
	err = readyCheck(func() (conf.Config, *resolve.Releases) { return bad, rs })(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nope.sock") {
		t.Fatalf("ready with no php-fpm = %v; want an error naming the socket", err)
	}
	both := c
	both.FastCGI = append(bad.FastCGI, c.FastCGI...)
	if err := readyCheck(func() (conf.Config, *resolve.Releases) { return both, rs })(context.Background()); err != nil {
		t.Fatalf("ready with one of two php-fpm answering = %v; want nil", err)
	}
}

// TestDrainHook: the command runs once per drained release, with the
// release in its environment, and never blocks the caller.
func TestDrainHook(t *testing.T) {
	dir := makeDeploy(t, "A", "B")
	out := filepath.Join(t.TempDir(), "drained")
	core, logs := observer.New(zap.InfoLevel)
	hook := newDrainHook(`sleep 0.2; echo "$REALROOT_RELEASE $REALROOT_GEN $REALROOT_RELEASE_ROOT" >> `+out, 5*time.Second, nil, zap.New(core))
	rs, err := resolve.New(resolve.Options{Root: filepath.Join(dir, "current", "public"), OnDrain: hook.OnDrain})
	if err != nil {
		t.Fatal(err)
	}
	flip := func(name string) {
		t.Helper()
		if err := resolve.Switch(filepath.Join(dir, "current"), filepath.Join(dir, "releases", name)); err != nil {
			t.Fatal(err)
		}
		rs.Refresh()
	}
	a := rs.Pin()
	flip("B")
	start := time.Now()
	flip("A") // B, with nothing in flight, drains now
	a.Unpin() // and A, gen 1, with its last request
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("drains took %v with a 0.2 s command; want it run in the background", d)
	}
	hook.Close()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines)
	relA, relB := filepath.Join(dir, "releases", "A"), filepath.Join(dir, "releases", "B")
	want := []string{relA + " 1 " + relA + "/public", relB + " 2 " + relB + "/public"}
	if !slices.Equal(lines, want) {
		t.Fatalf("command runs:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if n := logs.FilterMessage("on-drain command done").Len(); n != 2 {
		t.Errorf("%d on-drain command done logs; want 2", n)
	}

	// A command that outlives its timeout is killed and logged.
	slow := newDrainHook("sleep 10", 100*time.Millisecond, nil, zap.New(core))
	start = time.Now()
	slow.OnDrain(resolve.Info{Dir: relA, Gen: 7})
	slow.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a timed out command took %v to end", d)
	}
	w := logs.FilterMessage("on-drain command failed").All()
	if len(w) != 1 || !strings.Contains(w[0].ContextMap()["error"].(string), "killed after 100ms") {
		t.Fatalf("failure logs = %v; want one saying killed after 100ms", w)
	}
	slow.OnDrain(resolve.Info{Dir: relA, Gen: 8}) // after Close: not run
	if n := logs.FilterMessage("on-drain command not run: shutting down").Len(); n != 1 {
		t.Errorf("OnDrain after Close: %d logs; want 1", n)
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		give []string
		want []string
		wait bool
	}{
		{give: []string{"releases/B", "--wait"}, want: []string{"releases/B"}, wait: true},
		{give: []string{"--wait", "releases/B"}, want: []string{"releases/B"}, wait: true},
		{give: []string{"a", "--", "--wait"}, want: []string{"a", "--wait"}},
		{give: nil, want: nil},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		wait := fs.Bool("wait", false, "")
		got, err := parseArgs(fs, tt.give)
		if err != nil || !slices.Equal(got, tt.want) || *wait != tt.wait {
			t.Errorf("parseArgs(%q) = %q, %v, wait %v; want %q, wait %v", tt.give, got, err, *wait, tt.want, tt.wait)
		}
	}
}

// releasesOf adapts a func returning the releases being served (another
// *resolve.Releases after a reload that changes the root) to
// admin.Releases.
type releasesOf func() *resolve.Releases

func (f releasesOf) Snapshot() resolve.Snapshot { return f().Snapshot() }
func (f releasesOf) Stats() resolve.Stats       { return f().Stats() }
