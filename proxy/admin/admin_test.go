package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"realroot/proxy"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

var _ proxy.Observer = (*Metrics)(nil)

// fakeReleases is a fixed state of releases.
type fakeReleases struct {
	snap  resolve.Snapshot
	stats resolve.Stats
}

func (f *fakeReleases) Snapshot() resolve.Snapshot { return f.snap }
func (f *fakeReleases) Stats() resolve.Stats       { return f.stats }

func newFake() *fakeReleases {
	now := time.Now()
	return &fakeReleases{
		snap: resolve.Snapshot{
			Current:  resolve.Info{Root: "/srv/app/releases/B/public", Dir: "/srv/app/releases/B", Gen: 2, Since: now.Add(-90 * time.Second), InFlight: 1},
			Draining: []resolve.Info{{Root: "/srv/app/releases/A/public", Dir: "/srv/app/releases/A", Gen: 1, Since: now.Add(-time.Hour), Until: now.Add(-90 * time.Second), InFlight: 3}},
			Drained:  []resolve.Info{},
		},
		stats: resolve.Stats{Switches: 1, ResolveFailures: 2, WatchDetections: 1, PrepareFailures: 4},
	}
}

// get fetches path from h and returns its status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape parses /metrics of h.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

// metric returns the value of the series of name with labels (name=value
// pairs): a counter's or gauge's value, a histogram's count. It fails the
// test when the series is absent.
func metric(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	h := New(Options{
		Releases: newFake(),
		Metrics:  m,
		Version:  "1.2.3",
		PoolStats: func() fcgi.PoolStats {
			return fcgi.PoolStats{Open: 5, Idle: 2, InUse: 3, Waiting: 1, Dials: 10, Reuses: 90, Busy: 7}
		},
	})
	before := scrape(t, h)
	if got := metric(t, before, "realroot_http_requests_total", "route", "front", "class", "2xx"); got != 0 {
		t.Fatalf("requests before any = %v; want 0 (every series exists at start)", got)
	}

	m.ObserveRequest("php", 200, 30*time.Millisecond, 25*time.Millisecond)
	m.ObserveRequest("php", 200, 30*time.Millisecond, 25*time.Millisecond)
	m.ObserveRequest("static", 304, time.Millisecond, 0)
	m.ObserveRequest("none", 404, time.Millisecond, 0)
	m.ObserveRequest("front", 503, time.Millisecond, time.Millisecond)
	m.ObserveUpstreamError("busy")
	m.ObserveUpstreamError("timeout")
	m.ObserveUpstreamError("surprise")
	mfs := scrape(t, h)

	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"realroot_http_requests_total", []string{"route", "php", "class", "2xx"}, 2},
		{"realroot_http_requests_total", []string{"route", "static", "class", "3xx"}, 1},
		{"realroot_http_requests_total", []string{"route", "none", "class", "4xx"}, 1},
		{"realroot_http_requests_total", []string{"route", "front", "class", "5xx"}, 1},
		{"realroot_http_request_duration_seconds", []string{"route", "php"}, 2},
		{"realroot_upstream_duration_seconds", nil, 3},
		{"realroot_upstream_errors_total", []string{"kind", "busy"}, 1},
		{"realroot_upstream_errors_total", []string{"kind", "timeout"}, 1},
		{"realroot_upstream_errors_total", []string{"kind", "other"}, 1},
		{"realroot_fastcgi_conns_open", nil, 5},
		{"realroot_fastcgi_conns_in_use", nil, 3},
		{"realroot_fastcgi_conns_idle", nil, 2},
		{"realroot_fastcgi_requests_waiting", nil, 1},
		{"realroot_fastcgi_dials_total", nil, 10},
		{"realroot_fastcgi_reuses_total", nil, 90},
		{"realroot_fastcgi_busy_total", nil, 7},
		{"realroot_release_switches_total", nil, 1},
		{"realroot_resolve_failures_total", nil, 2},
		{"realroot_release_detections_total", []string{"source", "watch"}, 1},
		{"realroot_release_detections_total", []string{"source", "poll"}, 0},
		{"realroot_release_prepare_failures_total", nil, 4},
		{"realroot_release_in_flight", []string{"gen", "2", "state", "current", "release", "/srv/app/releases/B/public"}, 1},
		{"realroot_release_in_flight", []string{"gen", "1", "state", "draining"}, 3},
		{"realroot_release_generation", nil, 2},
		{"realroot_root_resolves", nil, 1},
		{"realroot_build_info", []string{"version", "1.2.3"}, 1},
	}
	for _, tt := range tests {
		if got := metric(t, mfs, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v; want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if got := metric(t, mfs, "realroot_release_seconds_since_switch"); got < 90 || got > 100 {
		t.Errorf("realroot_release_seconds_since_switch = %v; want about 90", got)
	}
	if mfs["go_goroutines"] == nil {
		t.Errorf("no Go runtime metrics")
	}
}

// TestObserveAllocs: the request path allocates nothing.
func TestObserveAllocs(t *testing.T) {
	m := NewMetrics()
	n := testing.AllocsPerRun(1000, func() {
		m.ObserveRequest("front", 200, 3*time.Millisecond, 2*time.Millisecond)
		m.ObserveRequest("static", 404, time.Millisecond, 0)
		m.ObserveUpstreamError("connect")
	})
	if n != 0 {
		t.Fatalf("%v allocations per observed request; want 0", n)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRequest("front", 200, 3*time.Millisecond, 2*time.Millisecond)
	}
}

func TestHealthAndReady(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	h := New(Options{
		Releases:   newFake(),
		ReadyCache: 200 * time.Millisecond,
		Ready: func(ctx context.Context) error {
			calls.Add(1)
			time.Sleep(20 * time.Millisecond) // long enough for probes to overlap
			if fail.Load() {
				return errors.New("php-fpm: connection refused")
			}
			return nil
		},
	})
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}

	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := get(t, h, "/readyz"); code != 200 || body != "ready\n" {
				t.Errorf("/readyz = %d %q; want 200 ready", code, body)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("10 probes within the cache time made %d checks; want 1", n)
	}

	fail.Store(true)
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("/readyz within the cache time = %d; want the cached 200", code)
	}
	time.Sleep(250 * time.Millisecond)
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "connection refused") {
		t.Fatalf("/readyz after the cache time = %d %q; want 503 naming the error", code, body)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d checks; want 2", n)
	}
	if code, _ := get(t, h, "/nope"); code != 404 {
		t.Errorf("/nope = %d; want 404", code)
	}
}

func TestStatus(t *testing.T) {
	start := time.Now().Add(-time.Minute)
	h := New(Options{
		Releases:  newFake(),
		Version:   "1.2.3",
		Start:     start,
		Ready:     func(context.Context) error { return errors.New("dial unix /run/php.sock: no such file") },
		PoolStats: func() fcgi.PoolStats { return fcgi.PoolStats{Open: 2, InUse: 2} },
	})
	code, body := get(t, h, "/status")
	if code != 200 {
		t.Fatalf("/status = %d %s", code, body)
	}
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	if s.Version != "1.2.3" || s.Uptime < 60 || !s.Started.Equal(start) {
		t.Errorf("version %q, uptime %v, started %v; want 1.2.3, >= 60, %v", s.Version, s.Uptime, s.Started, start)
	}
	if s.Current.Gen != 2 || s.Current.Dir != "/srv/app/releases/B" || len(s.Draining) != 1 || s.Draining[0].InFlight != 3 || s.InFlight != 4 {
		t.Errorf("releases = %+v, in flight %d; want current gen 2, gen 1 draining with 3, 4 in all", s.Snapshot, s.InFlight)
	}
	if s.PHPFPM.Ready || !strings.Contains(s.PHPFPM.Error, "no such file") || s.PHPFPM.Checked.IsZero() {
		t.Errorf("php_fpm = %+v; want not ready with the error", s.PHPFPM)
	}
	if s.Pool == nil || s.Pool.InUse != 2 || s.Stats.PrepareFailures != 4 {
		t.Errorf("pool %+v, stats %+v", s.Pool, s.Stats)
	}
	for _, key := range []string{`"current"`, `"draining"`, `"drained"`, `"in_flight"`, `"php_fpm"`, `"uptime_seconds"`} {
		if !strings.Contains(body, key) {
			t.Errorf("/status lacks %s:\n%s", key, body)
		}
	}
}

// TestPools: the php-fpm pools of managed mode are in /status, and those
// with processes in /metrics.
func TestPools(t *testing.T) {
	pools := []Pool{
		{Name: "B-2", Release: "/srv/app/releases/B", Gen: 2, PID: 20, State: "serving", InFlight: 1, Processes: 5, RSS: 50 << 20},
		{Name: "A-1", Release: "/srv/app/releases/A", Gen: 1, PID: 10, State: "draining", InFlight: 3, Processes: 5, RSS: 60 << 20},
		{Name: "C-3", Release: "/srv/app/releases/C", Gen: 3, PID: 30, State: "stopped", Error: "php-fpm exited with status 78"},
	}
	h := New(Options{Releases: newFake(), Pools: func() []Pool { return pools }})
	_, body := get(t, h, "/status")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	if len(s.PHPFPMPools) != 3 || s.PHPFPMPools[1].RSS != 60<<20 || s.PHPFPMPools[2].Error == "" {
		t.Errorf("/status php_fpm_pools = %+v; want the 3 pools", s.PHPFPMPools)
	}
	mfs := scrape(t, h)
	if got := metric(t, mfs, "realroot_php_fpm_pool_rss_bytes", "pool", "A-1", "state", "draining"); got != 60<<20 {
		t.Errorf("rss of A-1 = %v; want %v", got, 60<<20)
	}
	if got := metric(t, mfs, "realroot_php_fpm_pool_in_flight", "pool", "B-2", "gen", "2"); got != 1 {
		t.Errorf("in flight of B-2 = %v; want 1", got)
	}
	if n := len(mfs["realroot_php_fpm_pool_processes"].GetMetric()); n != 2 {
		t.Errorf("%d series of realroot_php_fpm_pool_processes; want 2 (the stopped pool has none)", n)
	}
	if _, ok := scrape(t, New(Options{Releases: newFake()}))["realroot_php_fpm_pool_rss_bytes"]; ok {
		t.Errorf("pool metrics without Options.Pools")
	}
}

func TestUpstreams(t *testing.T) {
	ups := []proxy.UpstreamStats{
		{Addr: "unix:/run/a.sock", InFlight: 2, Requests: 10},
		{Addr: "10.0.0.2:9000", Down: true, DownUntil: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC), Failures: 3},
	}
	h := New(Options{Releases: newFake(), Upstreams: func() []proxy.UpstreamStats { return ups }})
	_, body := get(t, h, "/status")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	if len(s.Upstreams) != 2 || s.Upstreams[0].InFlight != 2 || !s.Upstreams[1].Down || s.Upstreams[1].Failures != 3 {
		t.Errorf("/status upstreams = %+v; want the 2 upstreams", s.Upstreams)
	}
	_, body = get(t, New(Options{Releases: newFake()}), "/status")
	if strings.Contains(body, `"upstreams"`) {
		t.Errorf("/status with one upstream lists upstreams:\n%s", body)
	}

	m := scrape(t, h)
	want := map[string]map[string]float64{
		"realroot_upstream_up":             {"unix:/run/a.sock": 1, "10.0.0.2:9000": 0},
		"realroot_upstream_in_flight":      {"unix:/run/a.sock": 2, "10.0.0.2:9000": 0},
		"realroot_upstream_failures_total": {"unix:/run/a.sock": 0, "10.0.0.2:9000": 3},
		"realroot_upstream_requests_total": {"unix:/run/a.sock": 10, "10.0.0.2:9000": 0},
	}
	for name, byAddr := range want {
		mf := m[name]
		if mf == nil || len(mf.Metric) != len(byAddr) {
			t.Errorf("%s: %v; want %d series", name, mf, len(byAddr))
			continue
		}
		for _, s := range mf.Metric {
			v := s.GetGauge().GetValue() + s.GetCounter().GetValue()
			if addr := s.GetLabel()[0].GetValue(); v != byAddr[addr] {
				t.Errorf("%s{addr=%q} = %v, want %v", name, addr, v, byAddr[addr])
			}
		}
	}
	if _, ok := scrape(t, New(Options{Releases: newFake()}))["realroot_upstream_up"]; ok {
		t.Error("/metrics with one upstream has realroot_upstream_up")
	}
}

// TestPprof: the profiler is served only when asked for.
func TestPprof(t *testing.T) {
	if code, _ := get(t, New(Options{Releases: newFake()}), "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("without Pprof: /debug/pprof/ = %d, want 404", code)
	}
	code, body := get(t, New(Options{Releases: newFake(), Pprof: true}), "/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("with Pprof: /debug/pprof/goroutine = %d %.80q", code, body)
	}
}
