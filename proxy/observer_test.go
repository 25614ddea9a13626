package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"realroot/proxy/fcgi"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type recordingObserver struct {
	mu       sync.Mutex
	requests []string
	errors   []string
}

func (o *recordingObserver) ObserveRequest(route string, status int, total, upstream time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests = append(o.requests, fmt.Sprintf("%s %d upstream=%v", route, status, upstream > 0))
}

func (o *recordingObserver) ObserveUpstreamError(kind string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.errors = append(o.errors, kind)
}

func TestObserver(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php", "a.css": "x"}, "A")
	o := &recordingObserver{}
	h := New(newReleases(t, filepath.Join(dir, "current")),
		&fcgi.Client{Network: "unix", Address: filepath.Join(dir, "nope.sock")},
		Options{FrontController: "/index.php", Observer: o})
	for _, p := range []string{"/a.css", "/index.php", "/.env", "/x"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://example.test"+p, nil))
	}
	want := []string{"static 200 upstream=false", "php 502 upstream=true", "none 404 upstream=false", "front 502 upstream=true"}
	if !slices.Equal(o.requests, want) {
		t.Errorf("requests observed = %q; want %q", o.requests, want)
	}
	if want := []string{"connect", "connect"}; !slices.Equal(o.errors, want) {
		t.Errorf("upstream errors observed = %q; want %q", o.errors, want)
	}
}

// TestLogRejected: a request refused by the HTTP server is observed and
// logged with route "none" and a bounded reason.
func TestLogRejected(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var seen []string
	h := New(newReleases(t, t.TempDir()), nil, Options{AccessLog: zap.New(core),
		Observer: observerFunc(func(route string, status int) { seen = append(seen, fmt.Sprint(route, " ", status)) })})
	h.LogRejected("192.0.2.1:5", http.StatusBadRequest, strings.Repeat("r", 1000), 15)
	if !slices.Equal(seen, []string{"none 400"}) {
		t.Errorf("observed %v; want [none 400]", seen)
	}
	all := logs.FilterMessage("request").All()
	if len(all) != 1 {
		t.Fatalf("got %d access lines; want 1", len(all))
	}
	f := all[0].ContextMap()
	if f["remote_addr"] != "192.0.2.1:5" || f["status"] != int64(400) || f["bytes"] != int64(15) || f["route"] != "none" ||
		len(f["reason"].(string)) != maxRejectReason {
		t.Errorf("access line %v; want remote_addr, status 400, bytes 15, route none, reason cut to %d bytes", f, maxRejectReason)
	}
}
