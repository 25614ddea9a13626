package proxy

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"realroot/proxy/fcgi"
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
