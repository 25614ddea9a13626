// HTTP/2 tests with a hand-written client (internal/h2raw), each from a
// review of realroot over HTTP/2: every one failed before its fix, for the
// reason its comment gives.

package proxy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"realroot/internal/h2raw"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// h2Site serves files with a real php-fpm behind realroot's Handler on
// an h2c server configured as `realroot --h2c` configures its own
// (h2cServer), with the default Options but a front controller. It returns
// the server's address and the deploy's public dir.
func h2Site(t *testing.T, files map[string]string) (addr, pub string) {
	t.Helper()
	dir := newDeploy(t, files, "r1")
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second}
	t.Cleanup(func() { c.Close() })
	h := New(rs, c, Options{FrontController: "/index.php"})
	return h2cServer(t, h), filepath.Join(dir, "releases", "r1", "public")
}

// TestH2ConnectionFields: RFC 9113 §8.2.2 forbids connection-
// specific fields in HTTP/2 (a response carrying one is malformed), and
// §8.3.2 content-length in a 204. Go's HTTP/2 server only drops
// Connection and Transfer-Encoding; realroot copied every other header
// PHP sent, and curl and nghttp (nghttp2) refused the whole response
// ("Invalid HTTP header field was received ... keep-alive", RST_STREAM
// PROTOCOL_ERROR; curl exit 92): the page did not load over HTTP/2 though
// it did over HTTP/1.1. nginx 1.22 drops Keep-Alive (and Connection) from
// php-fpm's headers and content-length from a 204.
func TestH2ConnectionFields(t *testing.T) {
	addr, _ := h2Site(t, map[string]string{
		"public/index.php":     `<?php echo "index\n";`,
		"public/keepalive.php": `<?php header('Connection: keep-alive'); header('Keep-Alive: timeout=5, max=100'); echo "ka\n";`,
		"public/proxyconn.php": `<?php header('Proxy-Connection: keep-alive'); echo "pc\n";`,
		"public/upgrade.php":   `<?php header('Upgrade: h2,h2c'); echo "up\n";`,
		"public/nocontent.php": `<?php http_response_code(204); header('Content-Length: 3');`,
	})
	client := h2cClient(t)
	for _, tt := range []struct{ path, forbidden string }{
		{"/keepalive.php", "Keep-Alive"},
		{"/proxyconn.php", "Proxy-Connection"},
		{"/upgrade.php", "Upgrade"},
		{"/nocontent.php", "Content-Length"},
	} {
		resp, err := client.Get("http://" + addr + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("GET %s: %s; want HTTP/2", tt.path, resp.Proto)
		}
		if v, ok := resp.Header[tt.forbidden]; ok {
			t.Errorf("GET %s over HTTP/2: %d with %s: %q; want no %s field (RFC 9113 §8.2.2/§8.3.2: the response is malformed; nghttp2 resets it)",
				tt.path, resp.StatusCode, tt.forbidden, v, tt.forbidden)
		}
	}
}

// TestH2ShortBodyReset: a PHP download that declared its
// Content-Length and died part way (a fatal error, max_execution_time, a
// file that shrank) must not look whole. Over HTTP/1.1 the server closes
// the connection after the short body (stream() relies on it: "With the
// length sent, the server closes the connection itself, as nginx"); over
// HTTP/2 nothing did: Go's server ended the stream with END_STREAM, so
// the only sign left was a content-length mismatch that not every client
// checks, and realroot logged a clean 200. nginx (1.22, h2c) resets the
// stream: RST_STREAM INTERNAL_ERROR after the bytes it got.
func TestH2ShortBodyReset(t *testing.T) {
	addr, _ := h2Site(t, map[string]string{
		"public/index.php": `<?php echo "index\n";`,
		// 1 MB declared, 100 KB sent, then a fatal error ends the script.
		"public/download.php": `<?php header('Content-Type: application/octet-stream');
header('Content-Length: 1000000');
while (ob_get_level()) ob_end_flush();
echo str_repeat('a', 100000); flush();
undefined_function();`,
	})
	c := h2raw.Dial(t, addr)
	c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, 1, c.Request("GET", "/download.php")))
	// Give the stream the window for the whole body: the server is not
	// held by flow control.
	c.Send(t, h2raw.Encode(h2raw.WindowUpdate, 0, 0, []byte{0, 0x10, 0, 0}), h2raw.Encode(h2raw.WindowUpdate, 0, 1, []byte{0, 0x10, 0, 0}))
	e := c.ReadStream(1)
	if e.Err != nil {
		t.Fatalf("reading the response: %v", e.Err)
	}
	if e.Status != "200" || len(e.Data) != 100000 {
		t.Fatalf("GET /download.php: status %q, %d body bytes; want 200 and the 100000 bytes PHP sent", e.Status, len(e.Data))
	}
	if e.EndStream || !e.Reset {
		t.Errorf("GET /download.php over HTTP/2, Content-Length 1000000, 100000 bytes then PHP died: stream ended with END_STREAM=%v RST_STREAM=%v; want it reset (RST_STREAM), not ended cleanly",
			e.EndStream, e.Reset)
	}
}

// TestH2DeclaredLengthMismatch: over HTTP/2 a request whose
// content-length is not the length of its DATA is malformed (RFC 9113
// §8.1.1), and PHP must never get it as a whole (empty) body. Go's HTTP/2
// server reports ContentLength 0 for a content-length it cannot parse
// ("abc", "-1"), and for any content-length when HEADERS ends the stream;
// spoolBody then took "no body" and php-fpm ran the script at once:
// CONTENT_LENGTH empty, an empty php://input, HTTP_CONTENT_LENGTH as sent
// (Symfony's Request reads that one as Content-Length), even while the
// client was still to send its body. Over HTTP/1.1 the same requests are a
// 400 (Go's parser, proxy/h1) or wait for their bytes. nginx 1.22 (h2c)
// answers 400 to each and never asks php-fpm.
func TestH2DeclaredLengthMismatch(t *testing.T) {
	addr, pub := h2Site(t, map[string]string{
		"public/index.php": `<?php echo "index\n";`,
		"public/body.php": `<?php touch(__DIR__ . '/ran'); $b = file_get_contents('php://input');
echo "PHPRAN CONTENT_LENGTH=", var_export($_SERVER['CONTENT_LENGTH'] ?? null, true),
	" HTTP_CONTENT_LENGTH=", var_export($_SERVER['HTTP_CONTENT_LENGTH'] ?? null, true), " body=", strlen($b);`,
	})
	for _, tt := range []struct {
		name, cl  string
		endStream bool // END_STREAM on HEADERS: no DATA ever
	}{
		{"content-length 5, no DATA", "5", true},
		{"content-length abc, body not sent yet", "abc", false},
		{"content-length -1, body not sent yet", "-1", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ran := filepath.Join(pub, "ran")
			os.Remove(ran)
			c := h2raw.Dial(t, addr)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			flags := byte(h2raw.EndHeaders)
			if tt.endStream {
				flags |= h2raw.EndStream
			}
			c.Send(t, h2raw.Encode(h2raw.Headers, flags, 1, c.Request("POST", "/body.php",
				"content-type: application/x-www-form-urlencoded", "content-length: "+tt.cl)))
			e := c.ReadStream(1)
			if _, err := os.Stat(ran); err == nil || e.Status != "400" {
				t.Errorf("POST /body.php over HTTP/2 with content-length: %s (END_STREAM on HEADERS %v, no DATA): status %q, PHP ran %v, body %q; want 400 (as nginx) and php-fpm never asked",
					tt.cl, tt.endStream, e.Status, err == nil, strings.TrimSpace(string(e.Data)))
			}
		})
	}
}

// TestH2ErrorKeepsConnection: an error about a request's body (413 here)
// ends its stream, not the connection. Found by a review: the error kept
// its Connection: close, which Go's HTTP/2 server turns into a GOAWAY for
// the client's other streams; nginx resets the stream only.
func TestH2ErrorKeepsConnection(t *testing.T) {
	dir := newDeploy(t, map[string]string{"public/index.php": `<?php echo "index\n";`}, "r1")
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	h := New(rs, &fcgi.Client{Network: "unix", Address: filepath.Join(dir, "no-php-fpm.sock")}, Options{MaxBodySize: 10})
	c := h2raw.Dial(t, h2cServer(t, h))
	c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndHeaders, 1, c.Request("POST", "/index.php", "content-length: 100")))
	e := c.ReadStream(1)
	if e.Status != "413" {
		t.Fatalf("POST of 100 bytes with max-body-size 10 over HTTP/2: %q, %v; want 413", e.Status, e.Err)
	}
	c.Send(t, h2raw.Encode(h2raw.Headers, h2raw.EndStream|h2raw.EndHeaders, 3, c.Request("GET", "/index.php")))
	if e := c.ReadStream(3); e.GoAway || e.Status == "" {
		t.Errorf("the next stream on the connection: GOAWAY %v, status %q, %v; want it answered, the connection kept", e.GoAway, e.Status, e.Err)
	}
}
