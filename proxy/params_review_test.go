package proxy

// From a review of the FastCGI transport: a header too long for FastCGI.

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"realroot/proxy/fcgi"
)

// TestParamTooLong: a request header too long for one FCGI_PARAMS
// record (php-fpm parses each record on its own) never reaches php-fpm.
// net/http's server takes a header line past 64 KiB (MaxHeaderBytes plus
// its 4 KiB of slack), so it can happen behind TLS or h2c. That is the
// client's doing, a 431 like any header over the limit; it was a 502 "bad
// response from php-fpm", counted against php-fpm as a protocol error.
func TestParamTooLong(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php echo 1;"}, "A")
	c := &fcgi.Client{Network: "unix", Address: filepath.Join(t.TempDir(), "none.sock")}
	defer c.Close()
	h := New(newReleases(t, filepath.Join(dir, "current")), c, Options{})
	r := httptest.NewRequest("GET", "/index.php", nil)
	r.Header.Set("X-Big", strings.Repeat("a", 66000))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d; want 431", w.Code)
	}
	if s := c.Stats(); s.Dials != 0 {
		t.Errorf("%d dials; want none", s.Dials)
	}
}
