package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/admin"
)

// TestKeepRestartOnly: a reload keeps the running value of every
// restart-only setting and reports it; the others take effect.
func TestKeepRestartOnly(t *testing.T) {
	def := conf.Default()
	fs := conf.FlagSet(&def)
	var names []string
	for _, s := range restartOnly {
		if fs.Lookup(s.name) == nil {
			t.Errorf("restartOnly names %q, which is no setting", s.name)
		}
		names = append(names, s.name)
	}
	slices.Sort(names)

	old := conf.Default()
	old.Root = "/srv/a"
	c := old
	c.Listen = []string{"127.0.0.1:1"}
	c.HTTPSRedirect, c.H2C, c.ProxyProtocol = "127.0.0.1:80", true, true
	c.HeaderTimeout, c.IdleTimeout, c.SendTimeout = time.Second, time.Second, time.Second
	c.LogFile, c.AccessLogFile = "/var/log/rr.log", "/var/log/rr-access.log"
	c.Admin, c.AdminAllowRemote, c.AdminPprof = "127.0.0.1:9180", true, true
	c.HTTP1Server = "net/http"
	c.ReleaseChecks, c.PHPUser = false, "www-data"
	c.Warm, c.WarmTimeout, c.WarmFailure = []string{"/"}, time.Second, "switch"
	c.OnDrain, c.OnDrainTimeout = "true", time.Second
	c.Root, c.Deny = "/srv/b", []string{"/x"}
	if got := conf.Changed(old, c); len(got) != len(names)+2 {
		t.Fatalf("the test changes %v; want every restart-only setting, deny and root", got)
	}

	kept := keepRestartOnly(&c, old)
	if !slices.Equal(kept, names) {
		t.Errorf("keepRestartOnly = %v; want %v", kept, names)
	}
	if got := strings.Join(conf.Changed(old, c), ","); got != "deny,root" {
		t.Errorf("after keepRestartOnly, changed = %s; want deny,root", got)
	}
	if kept := keepRestartOnly(&c, old); len(kept) != 0 {
		t.Errorf("keepRestartOnly again = %v; want none", kept)
	}
}

// TestServeDeploy runs the daemon in the test process with the admin
// listener, a warm-up and an on-drain command, and deploys a release with
// `realroot switch --wait` through run: the admin API answers, the
// warm-up ran before the release took traffic, the old release drained and
// the on-drain command ran for it, and `realroot releases` sees it all.
func TestServeDeploy(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer http.DefaultClient.CloseIdleConnections()
	dir := site(t)
	link := filepath.Join(dir, "current")
	rel1, rel2 := filepath.Join(dir, "releases", "1"), filepath.Join(dir, "releases", "2")
	drainedLog := filepath.Join(t.TempDir(), "drained")

	c := conf.Default()
	c.Root = filepath.Join(link, "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.Listen = []string{"127.0.0.1:0"}
	c.Admin = "127.0.0.1:0"
	c.Warm = []string{"/"}
	c.OnDrain = `echo "$REALROOT_GEN $REALROOT_RELEASE" >> ` + drainedLog
	c.AccessLog = "off"
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	d := newTestDaemon(t, c, &logBuf, func() (conf.Config, error) { return c, nil })

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
	adminAddr := loggedAdmin(t, logBuf.String())
	adminURL := "http://" + adminAddr

	if status, body, err := get(http.DefaultClient, base+"/"); status != 200 || body != "release 1 param=-" {
		t.Fatalf("GET / = %d %q %v; want 200 release 1 param=-", status, body, err)
	}
	if _, err := os.Stat(filepath.Join(rel1, "public", "warmed")); err == nil {
		t.Errorf("release 1 was warmed up; want warm-up for new releases only")
	}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		if status, body, err := get(http.DefaultClient, adminURL+path); status != 200 || body != want {
			t.Errorf("GET admin %s = %d %q %v; want 200 %q", path, status, body, err, want)
		}
	}
	before := requestsTotal(t, adminURL)
	for range 3 {
		get(http.DefaultClient, base+"/style.css")
	}
	if after := requestsTotal(t, adminURL); after < before+3 {
		t.Errorf("realroot_http_requests_total = %v after 3 more requests; want at least %v", after, before+3)
	}
	if st := status(t, adminURL); st.Current.Dir != rel1 || st.Current.Gen != 1 || st.Version != version {
		t.Errorf("/status current = %+v, version %q; want %s, gen 1, version %q", st.Current, st.Version, rel1, version)
	}

	// A client loops on / while the release is switched: the first time it
	// sees release 2, the warm-up must have run already.
	type sighting struct {
		body      string
		warmedErr error
	}
	seen := make(chan sighting, 1)
	stopLoop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopLoop:
				seen <- sighting{body: "stopped before release 2 was served"}
				return
			default:
			}
			_, body, err := get(http.DefaultClient, base+"/")
			if err == nil && body == "release 2 param=-" {
				_, err := os.Stat(filepath.Join(rel2, "public", "warmed"))
				seen <- sighting{body, err}
				return
			}
		}
	}()
	var out syncBuffer
	code := run([]string{"switch", rel2, "--link", link, "--wait", "--admin", adminAddr, "--timeout", "20s"},
		func(string) string { return "" }, &out, &out, noSignals)
	if code != 0 || !strings.Contains(out.String(), "the server serves "+rel2+" (gen 2)") ||
		!strings.Contains(out.String(), "the previous release "+rel1+" (gen 1) drained") {
		t.Fatalf("realroot switch --wait = %d\n%s", code, out.String())
	}
	var first sighting
	select {
	case first = <-seen:
	case <-time.After(10 * time.Second):
		close(stopLoop)
		first = <-seen
	}
	if first.body != "release 2 param=-" || first.warmedErr != nil {
		t.Errorf("first sighting of release 2: %q, warm-up marker: %v; want it warmed up before it took traffic", first.body, first.warmedErr)
	}
	if len(logged(logBuf.String(), "release prepared")) != 1 {
		t.Errorf("want one release prepared log line")
	}

	st := status(t, adminURL)
	if st.Current.Dir != rel2 || st.Current.Gen != 2 || len(st.Drained) != 1 || st.Drained[0].Dir != rel1 {
		t.Errorf("/status after the switch: current %+v, drained %+v; want %s current and %s drained", st.Current, st.Drained, rel2, rel1)
	}
	eventually(t, 10*time.Second, func() string {
		b, _ := os.ReadFile(drainedLog)
		if string(b) != "1 "+rel1+"\n" {
			return fmt.Sprintf("on-drain wrote %q; want %q", b, "1 "+rel1+"\n")
		}
		return ""
	})
	if m := metricsText(t, adminURL); !regexp.MustCompile(`(?m)^realroot_release_switches_total 1$`).MatchString(m) {
		t.Errorf("/metrics lacks realroot_release_switches_total 1")
	}

	out = syncBuffer{}
	if code := run([]string{"releases", "--link", link, "--admin", adminAddr}, func(string) string { return "" }, &out, &out, noSignals); code != 0 {
		t.Fatalf("realroot releases = %d\n%s", code, out.String())
	}
	for name, want := range map[string]string{"1": `^1\s+drained\s`, "2": `^2\s+current\s.*current$`} {
		if r := row(out.String(), name); !regexp.MustCompile(want).MatchString(r) {
			t.Errorf("releases row of %s = %q; want it to match %s\n%s", name, r, want, out.String())
		}
	}

	sigs <- syscall.SIGTERM
	if err := <-errc; err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
	if _, err := net.DialTimeout("tcp", adminAddr, time.Second); err == nil {
		t.Errorf("the admin listener still accepts after the server stopped")
	}
}

// loggedAdmin returns the admin address of log's serving line.
func loggedAdmin(t *testing.T, log string) string {
	t.Helper()
	lines := logged(log, "serving")
	if len(lines) != 1 {
		t.Fatalf("want one serving log line; got %v in\n%s", lines, log)
	}
	a, _ := lines[0]["admin"].(string)
	if a == "" {
		t.Fatalf("the serving log line has no admin address: %v", lines[0])
	}
	return a
}

// logged returns the JSON lines of log with message msg.
func logged(log, msg string) []map[string]any {
	p := &proc{out: &syncBuffer{}}
	p.out.Write([]byte(log))
	return p.logged(msg)
}

func metricsText(t *testing.T, adminURL string) string {
	t.Helper()
	status, body, err := get(http.DefaultClient, adminURL+"/metrics")
	if status != 200 || err != nil {
		t.Fatalf("GET /metrics = %d %v", status, err)
	}
	return body
}

// requestsTotal sums realroot_http_requests_total over its labels.
func requestsTotal(t *testing.T, adminURL string) float64 {
	t.Helper()
	var sum float64
	n := 0
	for _, l := range strings.Split(metricsText(t, adminURL), "\n") {
		if !strings.HasPrefix(l, "realroot_http_requests_total{") {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		sum += v
		n++
	}
	if n == 0 {
		t.Fatalf("/metrics has no realroot_http_requests_total")
	}
	return sum
}

func status(t *testing.T, adminURL string) admin.Status {
	t.Helper()
	code, body, err := get(http.DefaultClient, adminURL+"/status")
	var s admin.Status
	if code != 200 || err != nil {
		t.Fatalf("GET /status = %d %v", code, err)
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return s
}
