package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/internal/phpfpmtest"
	"realroot/internal/testutil"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// TestWarmParams: a warm-up request is routed like a client's GET, carries
// the release's realpaths and the warm-up marker, and pins nothing.
func TestWarmParams(t *testing.T) {
	dir := newDeploy(t, map[string]string{"public/index.php": "<?php", "public/api.php": "<?php", "public/app.css": "x"}, "A")
	fake := fcgitest.Start(t, func(req *fcgitest.Request, w io.Writer) error {
		status := "200 OK"
		if req.Params["SCRIPT_NAME"] == "/api.php" && req.Params["QUERY_STRING"] == "fail=1" {
			status = "500 Internal Server Error"
		}
		_, err := fmt.Fprintf(w, "Status: %s\r\nContent-Type: text/plain\r\n\r\nok", status)
		return err
	})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	rel := rs.Current()
	client := &fcgi.Client{Network: "unix", Address: fake.Socket}
	t.Cleanup(func() { client.Close() }) // before the fake stops: it waits for kept connections
	h := New(rs, client, Options{FrontController: "/index.php"})

	if err := h.Warm(context.Background(), rel, []string{"/", "/blog/post?x=1", "/api.php/users/1", "/app.css"}); err != nil {
		t.Fatalf("Warm() = %v", err)
	}
	reqs := fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("php-fpm got %d requests; want 3 (the static file is not requested)", len(reqs))
	}
	tests := []struct{ script, uri, pathInfo string }{
		{"/index.php", "/", ""},
		{"/index.php", "/blog/post?x=1", ""},
		{"/api.php", "/api.php/users/1", "/users/1"},
	}
	for i, tt := range tests {
		p := reqs[i].Params
		if p["SCRIPT_FILENAME"] != rel.Root+tt.script || p["DOCUMENT_ROOT"] != rel.Root ||
			p["REQUEST_URI"] != tt.uri || p["PATH_INFO"] != tt.pathInfo ||
			p["REQUEST_METHOD"] != "GET" || p[WarmupParam] != "1" {
			t.Errorf("request %d params = %v; want SCRIPT_FILENAME %s, REQUEST_URI %s, PATH_INFO %q, %s=1",
				i, p, rel.Root+tt.script, tt.uri, tt.pathInfo, WarmupParam)
		}
	}
	if n := rel.InFlight(); n != 0 {
		t.Errorf("InFlight() after Warm = %d; want 0", n)
	}

	err := h.Warm(context.Background(), rel, []string{"/api.php?fail=1", "/missing.php", "/", "nope"})
	for _, want := range []string{"warm /api.php?fail=1: status 500", "warm /missing.php: no such script", "warm nope: invalid path"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Warm() = %v; want it to contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "warm /:") {
		t.Errorf("Warm() = %v; / succeeded and must not be named", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Warm(ctx, rel, []string{"/"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Warm() with a done context = %v; want context.Canceled", err)
	}
}

// warmSite logs every request to shared/log as "<release> <warm|user>",
// and is slow to warm up, so that users keep coming meanwhile.
var warmSite = map[string]string{
	"public/index.php": `<?php
$warm = isset($_SERVER['REALROOT_WARMUP']);
$rel = basename(dirname(__DIR__));
file_put_contents(__DIR__ . '/../../../shared/log', $rel . ($warm ? ' warm' : ' user') . "\n", FILE_APPEND | LOCK_EX);
if ($warm) {
	usleep(300000);
	if (file_exists(__DIR__ . '/fail-warmup')) { http_response_code(500); }
}
echo $rel;`,
}

// newWarmServer serves dir/current/public through a real php-fpm, warming
// each new release up with paths.
func newWarmServer(t *testing.T, dir string, keep bool, paths ...string) (*httptest.Server, *resolve.Releases, *observer.ObservedLogs) {
	t.Helper()
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	core, logs := observer.New(zap.InfoLevel)
	var h *Handler
	rs, err := resolve.New(resolve.Options{
		Root:               filepath.Join(dir, "current", "public"),
		Logger:             zap.New(core),
		KeepOnPrepareError: keep,
		Prepare: func(ctx context.Context, next *resolve.Release) error {
			return h.Warm(ctx, next, paths)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := &fcgi.Client{Network: "unix", Address: fpm.Socket, ReadTimeout: 10 * time.Second}
	t.Cleanup(func() { client.Close() })
	h = New(rs, client, Options{FrontController: "/index.php"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := newTestServer(t, h)
	t.Cleanup(srv.Close)
	return srv, rs, logs
}

// TestWarmBeforeTraffic: the new release is warmed up before any user
// request reaches it, and users stay on the old one meanwhile.
func TestWarmBeforeTraffic(t *testing.T) {
	dir := newDeploy(t, warmSite, "A", "B")
	srv, _, _ := newWarmServer(t, dir, true, "/", "/some/page")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(srv.URL + "/")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				seen[fmt.Sprintf("%d %s", resp.StatusCode, b)]++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	switchTo(t, dir, "B")
	testutil.WaitFor(t, "users to reach B", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["200 B"] > 0
	})
	close(stop)
	wg.Wait()
	if len(seen) != 2 {
		t.Errorf("responses = %v; want only 200 A and 200 B", seen)
	}

	log, err := os.ReadFile(filepath.Join(dir, "shared", "log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	firstWarm, lastWarm, firstUserB, usersAWhileWarming := -1, -1, -1, 0
	for i, l := range lines {
		switch l {
		case "B warm":
			if firstWarm < 0 {
				firstWarm = i
			}
			lastWarm = i
		case "B user":
			if firstUserB < 0 {
				firstUserB = i
			}
		case "A user":
			if firstWarm >= 0 && firstUserB < 0 {
				usersAWhileWarming++
			}
		case "A warm":
			t.Errorf("release A was warmed up: it was current from the start")
		}
	}
	if firstWarm < 0 || firstUserB < 0 || lastWarm > firstUserB {
		t.Fatalf("log: first B warm-up at line %d, last at %d, first B user request at %d; want warm-ups first:\n%s",
			firstWarm, lastWarm, firstUserB, log)
	}
	if n := strings.Count(string(log), "B warm"); n != 2 {
		t.Errorf("%d warm-up requests on B; want 2 (one per path)", n)
	}
	if usersAWhileWarming == 0 {
		t.Errorf("no user request on A while B warmed up; want users to stay on A:\n%s", log)
	}
}

// TestWarmFailureKeeps: a failed warm-up with KeepOnPrepareError keeps
// users on the old release.
func TestWarmFailureKeeps(t *testing.T) {
	dir := newDeploy(t, warmSite, "A", "B")
	writeTree(t, filepath.Join(dir, "releases", "B"), map[string]string{"public/fail-warmup": ""})
	srv, rs, logs := newWarmServer(t, dir, true, "/")
	a := rs.Current()
	switchTo(t, dir, "B")
	testutil.WaitFor(t, "the warm-up to fail", func() bool { return rs.Stats().PrepareFailures == 1 })
	if resp, body := get(t, srv.URL+"/"); resp.StatusCode != 200 || body != "A" {
		t.Fatalf("GET / after a failed warm-up = %d %q; want 200 A", resp.StatusCode, body)
	}
	if rs.Current() != a || rs.Stats().Switches != 0 {
		t.Fatalf("current release = %s gen %d, %d switches; want A kept", rs.Current().Root, rs.Current().Gen, rs.Stats().Switches)
	}
	w := logs.FilterMessage("release prepare failed; keeping current release").All()
	if len(w) != 1 || !strings.Contains(fmt.Sprint(w[0].ContextMap()["error"]), "warm /: status 500") {
		t.Fatalf("warnings = %v; want one with warm /: status 500", w)
	}

	// Fixed, and switched again: the next change is tried again.
	if err := os.Remove(filepath.Join(dir, "releases", "B", "public", "fail-warmup")); err != nil {
		t.Fatal(err)
	}
	switchTo(t, dir, "B")
	testutil.WaitFor(t, "the switch to B", func() bool { return filepath.Base(filepath.Dir(rs.Current().Root)) == "B" })
	if _, body := get(t, srv.URL+"/"); body != "B" {
		t.Fatalf("GET / = %q; want B", body)
	}
}
