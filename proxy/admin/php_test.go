package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"realroot/internal/phpfpmtest"
	"realroot/internal/testutil"
	"realroot/proxy"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// slowSite: slow.php waits until its gate file exists, so that the test
// decides when requests end.
var slowSite = map[string]string{
	"public/index.php": `<?php echo basename(dirname(__DIR__));`,
	"public/slow.php": `<?php
for ($i = 0; $i < 1000 && !file_exists($_GET['gate']); $i++) { clearstatcache(); usleep(10000); }
echo basename(dirname(__DIR__));`,
}

// deploy makes dir/releases/{A,B} with slowSite and current -> releases/A.
func deploy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, rel := range []string{"A", "B"} {
		for name, content := range slowSite {
			p := filepath.Join(dir, "releases", rel, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink("releases/A", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStatusWithPHP: /status and /metrics follow requests through a real
// php-fpm: slow requests stay in flight on release A after a switch to B,
// and A shows as drained once they are done.
func TestStatusWithPHP(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	dir := deploy(t)
	rs, err := resolve.New(resolve.Options{Root: filepath.Join(dir, "current", "public")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	client := &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 15 * time.Second}
	t.Cleanup(func() { client.Close() })
	m := NewMetrics()
	srv := httptest.NewServer(proxy.New(rs, client, proxy.Options{FrontController: "/index.php", Observer: m}))
	t.Cleanup(srv.Close)
	adm := New(Options{Releases: rs, Metrics: m, PoolStats: client.Stats, Version: "test"})

	status := func() Status {
		t.Helper()
		code, body := get(t, adm, "/status")
		var s Status
		if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
			t.Fatalf("/status = %d %v\n%s", code, err, body)
		}
		return s
	}
	fetch := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	if got := fetch("/"); got != "A" {
		t.Fatalf("GET / = %q; want A", got)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	var wg sync.WaitGroup
	results := make([]string, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = fetch("/slow.php?gate=" + gate)
		}()
	}
	testutil.WaitFor(t, "3 requests in flight on A", func() bool { return status().Current.InFlight == 3 })

	if err := os.Symlink("releases/B", filepath.Join(dir, "current.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "current.tmp"), filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the switch to B", func() bool { return status().Current.Gen == 2 })
	s := status()
	a := filepath.Join(dir, "releases", "A")
	if s.Current.Dir != filepath.Join(dir, "releases", "B") || len(s.Draining) != 1 ||
		s.Draining[0].Dir != a || s.Draining[0].InFlight != 3 || s.InFlight != 3 {
		t.Fatalf("/status after the switch: current %+v, draining %+v, in flight %d; want B, A draining with 3", s.Current, s.Draining, s.InFlight)
	}
	mfs := scrape(t, adm)
	if got := metric(t, mfs, "realroot_release_in_flight", "state", "draining", "gen", "1"); got != 3 {
		t.Errorf("in flight on the draining release = %v; want 3", got)
	}
	if got := metric(t, mfs, "realroot_release_switches_total"); got != 1 {
		t.Errorf("switches = %v; want 1", got)
	}
	if got := fetch("/"); got != "B" {
		t.Fatalf("GET / after the switch = %q; want B", got)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range results {
		if r != "A" {
			t.Errorf("slow request %d = %q; want A", i, r)
		}
	}
	testutil.WaitFor(t, "A to drain", func() bool { return len(status().Draining) == 0 })
	s = status()
	if len(s.Drained) != 1 || s.Drained[0].Dir != a || s.Drained[0].InFlight != 0 || s.Drained[0].DrainedAt.IsZero() {
		t.Fatalf("/status drained = %+v; want A, drained, nothing in flight", s.Drained)
	}
	if s.Pool == nil || s.Pool.Dials == 0 {
		t.Errorf("/status pool = %+v; want dials counted", s.Pool)
	}

	mfs = scrape(t, adm)
	if got := metric(t, mfs, "realroot_http_requests_total", "route", "php", "class", "2xx"); got != 3 {
		t.Errorf("php 2xx requests = %v; want 3", got)
	}
	if got := metric(t, mfs, "realroot_http_requests_total", "route", "index", "class", "2xx"); got != 2 {
		t.Errorf("index 2xx requests = %v; want 2", got)
	}
	if got := metric(t, mfs, "realroot_upstream_duration_seconds"); got != 5 {
		t.Errorf("upstream durations observed = %v; want 5", got)
	}
	if got := metric(t, mfs, "realroot_fastcgi_dials_total"); got < 3 {
		t.Errorf("dials = %v; want >= 3", got)
	}
}
