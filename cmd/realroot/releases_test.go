package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"realroot/internal/testutil"
	"realroot/resolve"
)

// exists reports which of the releases of dir are still there.
func existing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "releases"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// row returns the table row of release name in a releases listing.
func row(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return l
		}
	}
	return ""
}

// TestReleasesPrune: --prune keeps the newest, the current release and the
// one a slow request still runs on, and refuses to run blind.
func TestReleasesPrune(t *testing.T) {
	d := startDeployServer(t, resolve.Options{}, "2", "1", "3", "4", "5", "6", "7")
	gate := filepath.Join(t.TempDir(), "gate")
	slow := d.slow(t, gate) // on release 2
	if err := resolve.Switch(d.link, filepath.Join(d.dir, "releases", "7")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the server to serve 7", func() bool { return d.rs.Current().Gen == 2 })

	out, err := runCmd(listReleases, "--link", d.link, "--admin", d.adminAddr())
	if err != nil {
		t.Fatalf("releases = %v\n%s", err, out)
	}
	for name, want := range map[string]string{
		"2": `^2\s+draining, 1 in flight\s`,
		"7": `^7\s+current\s.*current$`,
		"1": `^1\s+never served\s`,
	} {
		if r := row(out, name); !regexp.MustCompile(want).MatchString(r) {
			t.Errorf("row of %s = %q; want it to match %s\n%s", name, r, want, out)
		}
	}
	if i1, i7 := strings.Index(out, "\n1 "), strings.Index(out, "\n7 "); i1 < 0 || i7 < i1 {
		t.Errorf("releases not oldest first:\n%s", out)
	}

	// The server cannot be asked: nothing is deleted.
	out, err = runCmd(listReleases, "--link", d.link, "--admin", "127.0.0.1:1", "--prune", "--keep", "2")
	if err == nil || !strings.Contains(err.Error(), "not pruning") {
		t.Fatalf("prune with the server unreachable = %v\n%s; want a refusal", err, out)
	}
	if got := existing(t, d.dir); len(got) != 7 {
		t.Fatalf("releases after a refused prune = %q; want all 7", got)
	}
	if _, err := runCmd(listReleases, "--link", d.link, "--prune"); err == nil || !strings.Contains(err.Error(), "needs --admin") {
		t.Fatalf("prune without --admin = %v; want a refusal", err)
	}

	out, err = runCmd(listReleases, "--link", d.link, "--admin", d.adminAddr(), "--prune", "--keep", "2", "--dry-run")
	if err != nil || strings.Count(out, "would remove") != 4 || len(existing(t, d.dir)) != 7 {
		t.Fatalf("prune --dry-run = %v\n%s; want 4 would remove, nothing removed", err, out)
	}
	out, err = runCmd(listReleases, "--link", d.link, "--admin", d.adminAddr(), "--prune", "--keep", "2")
	if err != nil {
		t.Fatalf("prune = %v\n%s", err, out)
	}
	if got, want := strings.Join(existing(t, d.dir), " "), "2 6 7"; got != want {
		t.Fatalf("releases after prune --keep 2 = %s; want %s (2 has a request in flight)\n%s", got, want, out)
	}
	if got := d.page(t, "/"); got != "7" {
		t.Fatalf("GET / after prune = %q; want 7", got)
	}

	// Once its request is done, 2 goes too.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := <-slow; got != "2" {
		t.Fatalf("slow request = %q; want 2", got)
	}
	testutil.WaitFor(t, "2 to drain", func() bool { return len(d.rs.Snapshot().Draining) == 0 })
	out, err = runCmd(listReleases, "--link", d.link, "--admin", d.adminAddr(), "--prune", "--keep", "2")
	if err != nil || !regexp.MustCompile(`(?m)^2\s+drained\s`).MatchString(out) {
		t.Fatalf("prune = %v\n%s; want 2 listed as drained", err, out)
	}
	if got, want := strings.Join(existing(t, d.dir), " "), "6 7"; got != want {
		t.Fatalf("releases after the second prune = %s; want %s\n%s", got, want, out)
	}
}

func TestReleasesWithoutServer(t *testing.T) {
	dir := makeDeploy(t, "20261121120000", "20261120120000")
	out, err := runCmd(listReleases, "--link", filepath.Join(dir, "current"))
	if err != nil {
		t.Fatalf("releases = %v\n%s", err, out)
	}
	want := regexp.MustCompile(`(?s)current -> releases/20261121120000\nRELEASE\s+STATE\s+MODIFIED\s+LINK\n` +
		`20261120120000\s+unknown\s+\S+ \S+\s*\n20261121120000\s+unknown\s+\S+ \S+\s+current\n$`)
	if !want.MatchString(out) {
		t.Fatalf("releases output:\n%s\nwant it to match %s", out, want)
	}
	// States unknown are said so, on stderr, and the listing goes on.
	out, err = runCmd(listReleases, "--link", filepath.Join(dir, "current"), "--admin", "127.0.0.1:1")
	if err != nil || !strings.Contains(out, "states unknown") {
		t.Fatalf("releases with the server unreachable = %v\n%s", err, out)
	}
}
