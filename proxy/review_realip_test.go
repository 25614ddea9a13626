// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// TestXFFZoneRefused: netip.ParseAddr accepts an IPv6 zone
// ("fe80::1%anything"), so the client behind a trusted proxy puts any text
// it likes (no comma, no CR/LF) into REMOTE_ADDR, which PHP code takes to be
// an IP address (nginx's realip does not parse zones).
func TestXFFZoneRefused(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	srv := fcgitest.Start(t, func(_ *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket},
		Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, xff := range []string{"fe80::1%<script>alert(1)</script>", "[fe80::1%' OR '1'='1]:80"} {
		r := httptest.NewRequest("GET", "http://example.test/index.php", nil)
		r.RemoteAddr = "10.1.2.3:40000"
		r.Header.Set("X-Forwarded-For", xff)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		got := srv.Last().Params["REMOTE_ADDR"]
		if a, err := netip.ParseAddr(got); err != nil || a.Zone() != "" {
			t.Errorf("X-Forwarded-For %q: PHP gets REMOTE_ADDR=%q; want an address without a zone (or the peer)", xff, got)
		}
	}
}
