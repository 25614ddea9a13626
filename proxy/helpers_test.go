package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"realroot/proxy/h1"
	"realroot/resolve"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// writeTree writes files (path -> content) below dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// newDeploy makes a Capistrano-style deploy in a temp dir: releases/<name>
// for every name, each with files, shared/, and current -> releases/<first>.
// It returns the deploy dir.
func newDeploy(t testing.TB, files map[string]string, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		writeTree(t, filepath.Join(dir, "releases", n), files)
	}
	if err := os.MkdirAll(filepath.Join(dir, "shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("releases", names[0]), filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// switchTo points dir/current at releases/name atomically (mv -T).
func switchTo(t testing.TB, dir, name string) {
	t.Helper()
	tmp := filepath.Join(dir, "current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", name), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
}

func newReleases(t testing.TB, root string) *resolve.Releases {
	t.Helper()
	rs, err := resolve.New(resolve.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// newTestServer serves h on 127.0.0.1 like httptest.NewServer, with
// proxy/h1 (realroot's default HTTP/1.1 server), or with Go's net/http
// server when REALROOT_HTTP1_SERVER=net/http (make test runs this package
// both ways). Close it as an httptest.Server.
func newTestServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	if os.Getenv("REALROOT_HTTP1_SERVER") == "net/http" {
		return httptest.NewServer(h)
	}
	ts := httptest.NewUnstartedServer(h) // its listener, never started
	ts.URL = "http://" + ts.Listener.Addr().String()
	s := &h1.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zaptest.NewLogger(t)}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ts.Listener) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return ts
}

// getWithin sends method url with a deadline, so that a hung request fails
// the test instead of hanging it.
func getWithin(t *testing.T, method, url string, d time.Duration, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := identityClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// asNobody runs f on a thread of its own whose file-system uid and gid are
// nobody's when the tests run as root, so that file permissions apply to it.
func asNobody(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if os.Geteuid() == 0 {
			unix.Setfsuid(65534)
			unix.Setfsgid(65534)
		}
		f()
	}()
	<-done
}
