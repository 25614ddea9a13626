// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package admin

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"realroot/proxy/fcgi"
)

// TestMetricsNonUTF8Release: a release directory is a file name, any
// bytes but / and NUL. One whose name is not UTF-8 (a Latin-1 "é", 0xe9)
// becomes the release label of realroot_release_in_flight, and
// stateCollector.Collect calls prometheus.MustNewConstMetric, which panics
// on a label value that is not UTF-8. The registry recovers the panic, but
// Collect stops there: every metric it would have sent after that series
// (the generation, root_resolves, build_info, the upstream and pool
// metrics) is missing from /metrics for as long as that release is listed,
// and the scrape still answers 200.
func TestMetricsNonUTF8Release(t *testing.T) {
	f := newFake()
	f.snap.Draining[0].Dir = "/srv/app/releases/caf\xe9"
	f.snap.Draining[0].Root = "/srv/app/releases/caf\xe9/public"
	h := New(Options{Releases: f, Version: "1.2.3", PoolStats: func() fcgi.PoolStats { return fcgi.PoolStats{Open: 2} }})
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Logf("GET /metrics = %d", code)
	}
	var missing []string
	for _, name := range []string{"realroot_release_generation", "realroot_root_resolves", "realroot_build_info", "realroot_fastcgi_conns_open"} {
		if !strings.Contains(body, "\n"+name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("with a draining release whose directory name is not UTF-8, /metrics (status %d) lacks %v", code, missing)
	}
}

// TestReadyzStopping: once Options.Stopping says so, /readyz answers 503
// at once, whatever Ready said last (it is cached for a second).
func TestReadyzStopping(t *testing.T) {
	var stopping atomic.Bool
	h := New(Options{Releases: newFake(), Ready: func(context.Context) error { return nil }, Stopping: stopping.Load})
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q; want 200", code, body)
	}
	stopping.Store(true)
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while stopping = %d %q; want 503, shutting down", code, body)
	}
}
