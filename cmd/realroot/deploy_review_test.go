// From a review of the deploy tools (switch, releases --prune): each test
// failed before its fix.

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"realroot/proxy/admin"
	"realroot/resolve"
)

// mkdirs makes each directory (and its parents).
func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// releasesAdmin serves the admin API of a resolve.Releases for root, as the
// server would; it returns its address for --admin.
func releasesAdmin(t *testing.T, root string) string {
	t.Helper()
	rs, err := resolve.New(resolve.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.New(admin.Options{Releases: rs}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestPruneSymlinkedRelease: the link's target is a release that is
// itself a symlink (releases/103 -> /data/builds/103, a build kept on
// another disk). The releases directory is releases/; --prune must not
// take the directory beside the symlink's realpath (/data/builds, which
// may hold other builds, other apps) for it and delete in there.
func TestPruneSymlinkedRelease(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	app, builds := filepath.Join(dir, "app"), filepath.Join(dir, "builds")
	for _, n := range []string{"100", "101", "102", "103"} {
		mkdirs(t, filepath.Join(builds, n, "public"))
	}
	for _, n := range []string{"1", "2"} {
		mkdirs(t, filepath.Join(app, "releases", n, "public"))
	}
	if err := os.Symlink(filepath.Join(builds, "103"), filepath.Join(app, "releases", "103")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(app, "current")
	if err := os.Symlink("releases/103", link); err != nil {
		t.Fatal(err)
	}
	addr := releasesAdmin(t, filepath.Join(link, "public"))

	out, err := runCmd(listReleases, "--link", link, "--admin", addr, "--prune", "--keep", "1")
	var gone []string
	for _, n := range []string{"100", "101", "102", "103"} {
		if _, serr := os.Stat(filepath.Join(builds, n)); serr != nil {
			gone = append(gone, filepath.Join(builds, n))
		}
	}
	if len(gone) > 0 {
		t.Fatalf("prune of %s -> releases/103 (-> %s) deleted %q, outside %s; prune = %v\n%s",
			link, filepath.Join(builds, "103"), gone, filepath.Join(app, "releases"), err, out)
	}
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("prune = %v\n%s; want a refusal that names the symlinked release", err, out)
	}
}

// TestSwitchWaitServerStopsAnswering: the server answers the
// status asked before the switch, then no more (hung, or the wrong
// address after all). --wait times out, and its error says it could not
// ask the server; before, it claimed the server "still serves  (gen 0)"
// and blamed a failed warm-up.
func TestSwitchWaitServerStopsAnswering(t *testing.T) {
	dir := makeDeploy(t, "A", "B")
	relA := filepath.Join(dir, "releases", "A")
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) > 1 {
			<-r.Context().Done() // hung
			return
		}
		var s admin.Status
		s.Current = resolve.Info{Root: filepath.Join(relA, "public"), Dir: relA, Gen: 1}
		json.NewEncoder(w).Encode(s)
	}))
	defer srv.Close()

	out, err := runCmd(switchRelease, filepath.Join(dir, "releases", "B"), "--link", filepath.Join(dir, "current"),
		"--wait", "--admin", strings.TrimPrefix(srv.URL, "http://"), "--timeout", "300ms")
	if asked.Load() < 2 {
		t.Fatalf("the server was asked %d times; want the status before the switch and at least one after", asked.Load())
	}
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms: cannot ask the server") || strings.Contains(err.Error(), "gen 0") {
		t.Fatalf("switch --wait with a server that stopped answering = %v\n%s; want \"timed out after 300ms: cannot ask the server\"", err, out)
	}
}

// TestPruneDuringSwitch: `realroot switch releases/1` (a rollback)
// has made its temporary link and not yet renamed it over current: prune
// must not delete 1, or the rename leaves current pointing at nothing.
func TestPruneDuringSwitch(t *testing.T) {
	dir := makeDeploy(t, "4", "1", "2", "3")
	link := filepath.Join(dir, "current")
	addr := releasesAdmin(t, filepath.Join(link, "public"))
	// What resolve.Switch leaves between its symlink(2) and rename(2).
	tmp := filepath.Join(dir, ".current.tmp-0123456789ab")
	if err := os.Symlink("releases/1", tmp); err != nil {
		t.Fatal(err)
	}

	out, err := runCmd(listReleases, "--link", link, "--admin", addr, "--prune", "--keep", "1")
	if err := os.Rename(tmp, link); err != nil { // the switch goes on
		t.Fatal(err)
	}
	if _, serr := os.Stat(filepath.Join(link, "public", "index.php")); serr != nil {
		t.Fatalf("after a prune during a switch to 1, current -> releases/1 serves nothing: %v; prune = %v\n%s", serr, err, out)
	}
	if got := strings.Join(existing(t, dir), " "); got != "1 4" {
		t.Errorf("releases after the prune = %s; want 1 4 (2 and 3 removed)\n%s", got, out)
	}
}
