// HTTP/2 tests from a second review of realroot over HTTP/2 (see
// h2_test.go): each failed before its fix, for the reason its comment gives.

package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/h2raw"
)

// TestH2PathSpace: over HTTP/1.1 a request target cannot hold a space
// (it ends the target: Go's parser and proxy/h1 answer 400), and RFC 9113
// §8.3.1 wants an HTTP/2 :path in origin-form. Go's HTTP/2 server takes
// both a space and an absolute URI in :path, and realroot sent the space
// on to PHP, raw, in REQUEST_URI, QUERY_STRING and PATH_INFO (a PHP app
// that logs "$method $uri" could be fed forged fields). nginx 1.22 (h2c)
// answers 400 to each, PHP never asked.
func TestH2PathSpace(t *testing.T) {
	addr, pub := h2Site(t, map[string]string{
		"public/index.php": `<?php touch(__DIR__ . '/ran'); echo "REQUEST_URI=", $_SERVER['REQUEST_URI'];`,
	})
	ran := filepath.Join(pub, "ran")
	for _, path := range []string{
		"/index.php?a=b c",
		"/index.php/x y",
		"/a b",
		"http://other.test/index.php",
	} {
		os.Remove(ran)
		c := h2raw.Dial(t, addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, 1, c.Request("GET", path)))
		e := c.ReadStream(1)
		if _, err := os.Stat(ran); err == nil || e.Status != "400" {
			t.Errorf("GET over HTTP/2 with :path %q: status %q, PHP ran %v, body %q; want 400 (as nginx) and php-fpm never asked",
				path, e.Status, err == nil, strings.TrimSpace(string(e.Data)))
		}
	}
	// What nginx takes, realroot still takes.
	c := h2raw.Dial(t, addr)
	c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, 1, c.Request("GET", `/index.php?a%20b"<>\{|}`)))
	if e := c.ReadStream(1); e.Status != "200" || string(e.Data) != `REQUEST_URI=/index.php?a%20b"<>\{|}` {
		t.Errorf("GET over HTTP/2 with a query nginx takes: status %q, body %q; want 200 and REQUEST_URI as sent", e.Status, e.Data)
	}
}
