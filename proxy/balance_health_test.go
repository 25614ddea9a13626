package proxy

// The Balancer's active health check, and two real php-fpm, one killed
// under load (balance_test.go has the fakes).

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

func TestBalancerHealthCheck(t *testing.T) {
	verifyNoLeaks(t)
	fs := fakes("a", "b")
	a := fs[0]
	b, _, logs := newTestBalancer(BalancerOptions{HealthInterval: 5 * time.Millisecond, PingPath: "/fpm-ping"}, fs...)
	b.now = time.Now // the checks run on real time
	b.epoch = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not %s after 5s; stats %+v", what, b.Stats())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	isDown := func() bool { return b.Stats()[0].Down }
	// The flag moves before its log line is written: wait for the line.
	logged := func(msg string, n int) func() bool {
		return func() bool { return logs.FilterMessage(msg).Len() >= n }
	}

	a.set(fmt.Errorf("%w: connection refused", fcgi.ErrConnect), 0)
	waitFor("down", isDown)
	waitFor("logged down", logged("upstream down", 1))
	a.mu.Lock()
	p := a.params[0]
	a.mu.Unlock()
	if p["SCRIPT_NAME"] != "/fpm-ping" || p["SCRIPT_FILENAME"] != "/fpm-ping" || p["REQUEST_METHOD"] != "GET" {
		t.Errorf("health check params: got %v; want a GET of /fpm-ping", p)
	}

	a.set(nil, 0)
	waitFor("up", func() bool { return !isDown() })
	waitFor("logged up", logged("upstream up", 1))
	if up := logs.FilterMessage("upstream up").All(); len(up) != 1 || up[0].ContextMap()["reason"] != "health check passed" {
		t.Errorf("got %v; want one upstream up line, health check passed", up)
	}

	// Busy (every connection taken by requests) tells nothing.
	a.set(fmt.Errorf("%w: none free", fcgi.ErrBusy), 0)
	n := a.calls()
	waitFor("checked twice more", func() bool { return a.calls() >= n+2 })
	if isDown() {
		t.Errorf("busy: got down; want up")
	}

	// A ping path php-fpm does not know: 404, down, with a hint.
	a.set(nil, http.StatusNotFound)
	waitFor("down on 404", isDown)
	waitFor("logged down on 404", logged("upstream down", 2))
	down := logs.FilterMessage("upstream down").All()
	if len(down) != 2 || !strings.Contains(fmt.Sprint(down[1].ContextMap()["error"]), "is ping.path = /fpm-ping set") {
		t.Errorf("got %v; want a second upstream down line naming ping.path", down)
	}
	if b.Stats()[1].Down || b.Stats()[1].Failures != 0 {
		t.Errorf("b: got %+v; want up, never failed", b.Stats()[1])
	}

	// Without a ping path, php-fpm's 404 for a missing script is an answer.
	c := &fakeBackend{name: "c", status: http.StatusNotFound}
	nb := NewBalancer([]Backend{{Addr: "c", Upstream: c}}, BalancerOptions{HealthInterval: time.Hour})
	nb.backends[0].down.Store(true)
	nb.backends[0].downUntil.Store(int64(time.Hour))
	nctx, ncancel := context.WithCancel(context.Background())
	ndone := make(chan struct{})
	go func() { nb.Run(nctx); close(ndone) }()
	for nb.Stats()[0].Down {
		time.Sleep(time.Millisecond)
	}
	ncancel()
	<-ndone
	c.mu.Lock()
	if got := c.params[0]["SCRIPT_FILENAME"]; got != healthMissingScript {
		t.Errorf("SCRIPT_FILENAME without ping path: got %q; want %q", got, healthMissingScript)
	}
	c.mu.Unlock()
}

// The PHP site of TestBalancerPHP: who.php names the php-fpm that ran it by
// its php.ini, and echoes the body's length and md5.
var balanceSite = map[string]string{
	"public/who.php": `<?php
$in = file_get_contents('php://input');
usleep(20000);
echo php_ini_loaded_file(), ' ', strlen($in), ' ', md5($in);`,
}

// balanceResult is one request of TestBalancerPHP's load.
type balanceResult struct {
	start, end time.Time
	err        error  // a failure: transport error, status or wrong answer
	who        string // the php.ini of the php-fpm that answered
}

// TestBalancerPHP kills one of two php-fpm under load: only the requests
// it was running may fail, the rest go to the other; restarted, it gets
// traffic again through the active health check.
func TestBalancerPHP(t *testing.T) {
	verifyNoLeaks(t)
	fpm := []*phpfpmtest.Server{
		phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4}),
		phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4}),
	}
	ini := []string{filepath.Join(fpm[0].Dir, "php.ini"), filepath.Join(fpm[1].Dir, "php.ini")}
	dir := newDeploy(t, balanceSite, "A")
	rs := newReleases(t, filepath.Join(dir, "current", "public"))

	core, logs := observer.New(zap.InfoLevel)
	var backends []Backend
	for i, f := range fpm {
		c := &fcgi.Client{Network: "unix", Address: f.Socket, ReadTimeout: 10 * time.Second, MaxConns: 4}
		t.Cleanup(func() { c.Close() })
		backends = append(backends, Backend{Addr: fmt.Sprint("fpm", i), Upstream: c})
	}
	b := NewBalancer(backends, BalancerOptions{
		FailTimeout:    time.Minute, // only the health check brings it back in time
		HealthInterval: 50 * time.Millisecond,
		PingPath:       "/fpm-ping",
		Logger:         zap.New(core),
	})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { b.Run(ctx); close(runDone) }()
	t.Cleanup(func() { cancel(); <-runDone })

	ts := newTestServer(t, New(rs, b, Options{}))
	t.Cleanup(ts.Close)
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)

	body := strings.Repeat("upload ", 15000) // 105 KB: spooled to a temp file
	sum := fmt.Sprintf("%x", md5.Sum([]byte(body)))
	one := func(post bool) (r balanceResult) {
		r.start = time.Now()
		defer func() { r.end = time.Now() }()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/who.php", nil)
		want := " 0 d41d8cd98f00b204e9800998ecf8427e"
		if post {
			req, _ = http.NewRequest(http.MethodPost, ts.URL+"/who.php", strings.NewReader(body))
			want = fmt.Sprintf(" %d %s", len(body), sum)
		}
		resp, err := hc.Do(req)
		if err != nil {
			r.err = err
			return r
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			r.err = err
		case resp.StatusCode != http.StatusOK:
			r.err = fmt.Errorf("status %d: %s", resp.StatusCode, got)
		case !strings.HasSuffix(string(got), want):
			r.err = fmt.Errorf("answer %q; want it to end with %q", got, want)
		default:
			r.who = strings.TrimSuffix(string(got), want)
		}
		return r
	}

	var (
		mu      sync.Mutex
		results []balanceResult
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				r := one((w+i)%2 == 0)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	served := func(who string, after time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			if r.who == who && r.start.After(after) {
				return true
			}
		}
		return false
	}

	time.Sleep(500 * time.Millisecond)
	killAt := time.Now()
	if err := fpm[0].Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	time.Sleep(500 * time.Millisecond)
	restartAt := time.Now()
	fpm[0].Restart(t)
	restartedAt := time.Now()
	back := time.Now().Add(5 * time.Second)
	for !served(ini[0], restartedAt) && time.Now().Before(back) {
		time.Sleep(10 * time.Millisecond)
	}
	backAt := time.Now()
	time.Sleep(100 * time.Millisecond) // some load on both again
	stop.Store(true)
	wg.Wait()

	var before [2]int
	failed := 0
	for _, r := range results {
		inFlightAtKill := r.start.Before(killedAt) && r.end.After(killAt)
		switch {
		case r.err != nil && !inFlightAtKill:
			t.Errorf("request of %v..%v failed, not in flight at the kill (%v..%v): %v",
				r.start.Format(time.StampMicro), r.end.Format(time.StampMicro),
				killAt.Format(time.StampMicro), killedAt.Format(time.StampMicro), r.err)
		case r.err != nil:
			failed++
		case r.end.Before(killAt):
			before[slices.Index(ini, r.who)]++
		case r.start.After(killedAt) && r.end.Before(restartAt) && r.who != ini[1]:
			t.Errorf("request after the kill answered by %q; want %q", r.who, ini[1])
		}
	}
	if failed > 4 {
		t.Errorf("%d requests failed; want at most the 4 in flight at the kill", failed)
	}
	if before[0] == 0 || before[1] == 0 {
		t.Errorf("before the kill: %v requests per php-fpm; want both used", before)
	}
	if !served(ini[0], restartedAt) {
		t.Fatalf("the restarted php-fpm got no request within 5s (health check every 50ms); stats %+v", b.Stats())
	}
	t.Logf("%d requests, %d failed at the kill; before it %v per php-fpm; back %v after the restart",
		len(results), failed, before, backAt.Sub(restartedAt).Round(time.Millisecond))

	var downs, ups int
	for _, e := range logs.All() {
		if e.ContextMap()["upstream"] != "fpm0" {
			continue
		}
		switch e.Message {
		case "upstream down":
			downs++
		case "upstream up":
			ups++
		}
	}
	if downs == 0 || ups == 0 || downs != ups {
		t.Errorf("fpm0: %d upstream down and %d upstream up lines; want as many, at least one", downs, ups)
	}
	if b.Stats()[0].Down {
		t.Errorf("fpm0 still down at the end: %+v", b.Stats()[0])
	}
}
