// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"realroot/proxy/admin"
	"realroot/resolve"
)

// TestPruneReloadThenSwitch: like TestPruneAfterRootReload, but the
// release switch comes after the reload. A slow request runs on release 1
// under the first root watcher; a reload (poll-interval) builds a second
// watcher, whose own generation of release 1 has nothing in flight. The
// switch to release 2 drains that generation at once, so the new watcher
// lists release 1 as drained, and server.snapshot's listed() then skips the
// old watcher's release 1 (1 in flight) because its directory is "listed"
// already, among the drained. /status says release 1 is drained, and
// `realroot releases --prune` deletes it under the running request.
func TestPruneReloadThenSwitch(t *testing.T) {
	c, gate, dir := gatedPHP(t)
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	closeGate := gateCloser(gate)
	defer closeGate()
	slow := slowInFlight(t, td, adminURL)

	next := c
	next.PollInterval = c.PollInterval + time.Second
	if td.reload(t, next) {
		t.Fatalf("reload rejected")
	}

	rel1, rel2 := filepath.Join(dir, "releases", "1"), filepath.Join(dir, "releases", "2")
	if err := resolve.Switch(filepath.Join(dir, "current"), rel2); err != nil {
		t.Fatal(err)
	}
	var st admin.Status
	eventually(t, 5*time.Second, func() string {
		st = status(t, adminURL)
		if st.Current.Dir != rel2 {
			return "release 2 not served yet"
		}
		for _, d := range append(st.Draining, st.Drained...) {
			if d.Dir == rel1 {
				return ""
			}
		}
		return "release 1 neither draining nor drained"
	})
	listedDraining := false
	for _, d := range st.Draining {
		listedDraining = listedDraining || d.Dir == rel1
	}

	out, err := runCmd(listReleases, "--link", filepath.Join(dir, "current"), "--admin", strings.TrimPrefix(adminURL, "http://"), "--prune", "--keep", "1")
	_, statErr := os.Stat(rel1)
	closeGate()
	body := <-slow
	if !listedDraining || statErr != nil {
		t.Errorf("release 1 has a request in flight: /status lists it as draining: %v (draining %+v); "+
			"still there after prune: %v (the request answered %q); prune = %v\n%s",
			listedDraining, st.Draining, statErr == nil, body, err, out)
	}
}

// fixedReleases is admin.Releases with a fixed state.
type fixedReleases resolve.Snapshot

func (f fixedReleases) Snapshot() resolve.Snapshot { return resolve.Snapshot(f) }
func (f fixedReleases) Stats() resolve.Stats       { return resolve.Stats{} }

// TestPruneNonUTF8Refused: a release directory whose name is not
// UTF-8 (Latin-1 "café", made by a deploy script in a non-UTF-8 locale)
// has requests in flight. /status (JSON) replaces the byte 0xe9 by U+FFFD,
// so releaseState no longer recognises the draining release, calls it
// "never served", and --prune deletes it under its requests.
func TestPruneNonUTF8Refused(t *testing.T) {
	dir := makeDeploy(t, "new", "caf\xe9")
	link := filepath.Join(dir, "current")
	old, cur := filepath.Join(dir, "releases", "caf\xe9"), filepath.Join(dir, "releases", "new")
	if err := os.Chtimes(old, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	srv := httptest.NewServer(admin.New(admin.Options{Releases: fixedReleases{
		Current:  resolve.Info{Root: cur + "/public", Dir: cur, Gen: 2, Since: now},
		Draining: []resolve.Info{{Root: old + "/public", Dir: old, Gen: 1, Since: now.Add(-time.Hour), Until: now, InFlight: 3}},
		Drained:  []resolve.Info{},
	}}))
	defer srv.Close()

	out, err := runCmd(listReleases, "--link", link, "--admin", strings.TrimPrefix(srv.URL, "http://"), "--prune", "--keep", "1")
	if _, serr := os.Stat(old); serr != nil {
		t.Fatalf("prune deleted the draining release %q (3 requests in flight): prune = %v\n%s", old, err, out)
	}
}

// TestPruneLinkToPublic: the link points at a release's docroot
// (current -> releases/B/public, root /srv/app/current; or the common
// /var/www/html -> /srv/app/releases/B/public). The server serves
// releases/B/public; ListReleases takes the "releases directory" to be
// releases/B itself and lists B's subdirectories (vendor, src, config...)
// as releases. The safety check passes (the server's root is below that
// directory), the subdirectories are "never served", and --prune deletes
// the live release's vendor/, src/... while it serves traffic.
func TestPruneLinkToPublic(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join(dir, "releases", "20261122120000")
	for i, sub := range []string{"vendor", "src", "config", "public"} {
		p := filepath.Join(rel, sub)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "f.php"), []byte("<?php"), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "current")
	if err := os.Symlink("releases/20261122120000/public", link); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(listReleases, "--link", link, "--admin", releasesAdmin(t, link), "--prune", "--keep", "1")
	var gone []string
	for _, sub := range []string{"vendor", "src", "config", "public"} {
		if _, serr := os.Stat(filepath.Join(rel, sub)); serr != nil {
			gone = append(gone, sub)
		}
	}
	if len(gone) > 0 {
		t.Fatalf("prune of the link %s -> releases/20261122120000/public deleted %v of the current release; prune = %v\n%s", link, gone, err, out)
	}
}

// TestReadyzWhileDraining: on SIGTERM the server stops accepting at
// once and drains for up to shutdown-timeout, but /readyz still answers
// 200 "ready" all that time: a load balancer or orchestrator probing it
// keeps sending new connections to a listener that is closed.
func TestReadyzWhileDraining(t *testing.T) {
	c, gate, _ := gatedPHP(t)
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	closeGate := gateCloser(gate)
	defer closeGate()
	slow := slowInFlight(t, td, adminURL)
	td.sigs <- syscall.SIGTERM
	eventually(t, 5*time.Second, func() string {
		if conn, err := net.DialTimeout("tcp", td.addr, time.Second); err == nil {
			conn.Close()
			return "the listener still accepts"
		}
		return ""
	})
	code, body, err := get(http.DefaultClient, adminURL+"/readyz")
	closeGate()
	<-slow
	if err == nil && code == 200 {
		t.Fatalf("/readyz while draining (listener closed) = %d %q; want 503", code, body)
	}
}

// metricValue returns the value of the unlabelled series name in the text
// of /metrics, or -1 when it is absent.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			return v
		}
	}
	return -1
}

// TestCountersAcrossReload: the pool counters of /metrics
// (realroot_fastcgi_dials_total, ..._reuses_total) sum the current
// generation's FastCGI clients, and realroot_release_switches_total is the
// current root watcher's. A reload that changes an upstream setting
// (read-timeout) makes new clients, and one that changes poll-interval a
// new watcher: the counters drop back to 0 in a running process. The
// process did not restart (realroot_start_time_seconds is unchanged), so
// rate() and increase() count a reset that did not happen.
func TestCountersAcrossReload(t *testing.T) {
	c, _, dir := gatedPHP(t)
	td := startDaemon(t, c)
	adminURL := "http://" + loggedAdmin(t, td.log.String())
	if code, _, err := get(http.DefaultClient, "http://"+td.addr+"/index.php"); err != nil || code != 200 {
		t.Fatalf("GET /index.php = %d %v", code, err)
	}
	if err := resolve.Switch(filepath.Join(dir, "current"), filepath.Join(dir, "releases", "2")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() string {
		if st := status(t, adminURL); st.Stats.Switches != 1 {
			return "switch not seen"
		}
		return ""
	})
	before := metricsText(t, adminURL)
	next := c
	next.ReadTimeout = c.ReadTimeout + time.Second
	next.PollInterval = c.PollInterval + time.Second
	if td.reload(t, next) {
		t.Fatalf("reload rejected")
	}
	after := metricsText(t, adminURL)
	for _, name := range []string{"realroot_fastcgi_dials_total", "realroot_release_switches_total"} {
		if b, a := metricValue(t, before, name), metricValue(t, after, name); a < b {
			t.Errorf("counter %s went from %v to %v across a reload", name, b, a)
		}
	}
}
