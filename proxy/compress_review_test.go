// From a review of on-the-fly compression (compress.go): the test failed
// before its fix.

package proxy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// smallWindowClient reads responses undecoded through connections
// whose receive buffer is small, so that a server writing a large body
// stays blocked until the client reads; over h2c (prior knowledge) if h2.
func smallWindowClient(t *testing.T, h2 bool) *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10) })
		return errors.Join(err, serr)
	}}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	if h2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestCompressedFileTruncated: a static file that shrinks while it is
// served (rewritten in place, truncated by a log rotation) is a response
// shorter than the Content-Length http.ServeContent declared. Sent as it
// is, the server breaks the connection, and the client knows the body is
// cut. Compressed on the fly, the length is dropped, and the compressor
// closed the gzip stream as if the file had ended: a clean 200 whose body
// decodes without error to part of the file, which a cache stores as the
// whole.
func TestCompressedFileTruncated(t *testing.T) {
	const size = 32 << 20 // far more than the socket buffers and brotli's window hold
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data) // incompressible: gzip no smaller
	dir := newDeploy(t, map[string]string{"big.txt": string(data)}, "A")
	file := filepath.Join(dir, "releases", "A", "big.txt")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{})
	ts := newTestServer(t, h)
	t.Cleanup(ts.Close)
	h2Addr := h2cServer(t, h)

	for _, tt := range []struct {
		proto, url string
		h2         bool
	}{{"http1", ts.URL, false}, {"h2c", "http://" + h2Addr, true}} {
		client := smallWindowClient(t, tt.h2)
		for _, ae := range []string{"", "gzip", "br"} {
			truncatedWhileServed(t, client, tt.proto, tt.url, ae, file, data)
		}
	}
}

// truncatedWhileServed gets /big.txt, truncates it on disk once its body has
// begun, and expects the response to fail rather than end cleanly.
func truncatedWhileServed(t *testing.T, client *http.Client, proto, url, ae, file string, data []byte) {
	t.Helper()
	t.Run(proto+"/ae="+ae, func(t *testing.T) {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", url+"/big.txt", nil)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if enc := resp.Header.Get("Content-Encoding"); enc != ae {
			t.Fatalf("Content-Encoding %q; want %q", enc, ae)
		}
		// The body has begun: the server is inside the file, blocked
		// on the client, far from its end.
		var first [1]byte
		if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(file, 1<<20); err != nil {
			t.Fatal(err)
		}
		body := io.MultiReader(bytes.NewReader(first[:]), resp.Body)
		var dec io.Reader = body
		switch ae {
		case "gzip":
			zr, err := gzip.NewReader(body)
			if err != nil {
				t.Fatal(err)
			}
			dec = zr
		case "br":
			dec = brotli.NewReader(body)
		}
		n, err := io.Copy(io.Discard, dec)
		if err == nil {
			t.Errorf("%s: file truncated while served with Content-Encoding %q: a clean %d response of %d decoded bytes (of %d); want the connection broken, as when sent uncompressed",
				resp.Proto, ae, resp.StatusCode, n, len(data))
		}
	})
}
