package resolve

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// names returns the names of rs.
func names(rs []ReleaseDir) []string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name)
	}
	return n
}

func TestListReleases(t *testing.T) {
	app := filepath.Join(realpath(t, t.TempDir()), "app")
	for _, n := range []string{"9", "10", "100", "2", "010"} {
		mkdir(t, filepath.Join(app, "releases", n))
	}
	mkdir(t, filepath.Join(app, "releases", ".trash"))
	writeFile(t, filepath.Join(app, "releases", "README"), "not a release")
	symlink(t, "10", filepath.Join(app, "releases", "11")) // a link is not a release
	symlink(t, "releases/10", filepath.Join(app, "current"))

	l, err := ListReleases(filepath.Join(app, "current"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"2", "9", "010", "10", "100"}; !slices.Equal(names(l.Releases), want) {
		t.Errorf("releases = %q; want %q (by number)", names(l.Releases), want)
	}
	if l.Dir != filepath.Join(app, "releases") || l.Link != filepath.Join(app, "current") {
		t.Errorf("Dir, Link = %q, %q", l.Dir, l.Link)
	}
	for _, r := range l.Releases {
		if r.Current != (r.Name == "10") || r.Path != filepath.Join(app, "releases", r.Name) {
			t.Errorf("%+v: wrong Current or Path", r)
		}
	}
}

func TestListReleasesByMtime(t *testing.T) {
	app := filepath.Join(realpath(t, t.TempDir()), "app")
	base := time.Now().Add(-time.Hour)
	for i, n := range []string{"v3", "v1", "v2"} {
		p := filepath.Join(app, "releases", n)
		mkdir(t, p)
		mt := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	symlink(t, "releases/v2", filepath.Join(app, "current"))
	l, err := ListReleases(filepath.Join(app, "current"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"v3", "v1", "v2"}; !slices.Equal(names(l.Releases), want) {
		t.Errorf("releases = %q; want %q (by mtime)", names(l.Releases), want)
	}
}

func TestListReleasesRefuses(t *testing.T) {
	app := filepath.Join(realpath(t, t.TempDir()), "app")
	mkdir(t, filepath.Join(app, "v2"), filepath.Join(app, "shared"))
	symlink(t, "v2", filepath.Join(app, "current"))
	mkdir(t, filepath.Join(app, "plain"))
	tests := []struct{ name, link, want string }{
		{"target beside the link", filepath.Join(app, "current"), "also holds the link"},
		{"not a link", filepath.Join(app, "plain"), "not a symlink"},
		{"missing", filepath.Join(app, "nope"), "no such file"},
	}
	for _, tt := range tests {
		if _, err := ListReleases(tt.link); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ListReleases() = %v; want an error with %q", tt.name, err, tt.want)
		}
	}
}

func TestPrunable(t *testing.T) {
	l := &ReleaseList{}
	for _, n := range []string{"1", "2", "3", "4", "5", "6", "7"} {
		l.Releases = append(l.Releases, ReleaseDir{Name: n, Current: n == "2"})
	}
	busy := func(r ReleaseDir) bool { return r.Name == "3" }
	tests := []struct {
		keep int
		want []string
	}{
		{keep: 5, want: []string{"1"}},
		{keep: 3, want: []string{"1", "4"}},
		{keep: 0, want: []string{"1", "4", "5", "6", "7"}},
		{keep: 10, want: nil},
	}
	for _, tt := range tests {
		if got := names(l.Prunable(tt.keep, busy)); !slices.Equal(got, tt.want) {
			t.Errorf("Prunable(%d) = %q; want %q", tt.keep, got, tt.want)
		}
	}
}

func TestRemoveRelease(t *testing.T) {
	d := newDeployment(t)
	writeFile(t, filepath.Join(d.b, "index.php"), "<?php")
	l, err := ListReleases(d.current)
	if err != nil {
		t.Fatal(err)
	}
	b := l.Releases[1]
	if b.Name != "B" || b.Current {
		t.Fatalf("releases = %+v; want A (current), B", l.Releases)
	}
	// The link moved to B after the list was made.
	flipAtomic(t, "releases/B", d.current)
	if err := l.Remove(b); !errors.Is(err, ErrCurrent) {
		t.Fatalf("Remove(B) after a switch to B = %v; want ErrCurrent", err)
	}
	if _, err := os.Stat(filepath.Join(d.b, "index.php")); err != nil {
		t.Fatalf("B was touched: %v", err)
	}
	if err := l.Remove(l.Releases[0]); err != nil {
		t.Fatalf("Remove(A) = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(d.a)); !os.IsNotExist(err) {
		t.Fatalf("A still there: %v", err)
	}
	if err := l.Remove(ReleaseDir{Name: "x", Path: "/etc/x"}); err == nil {
		t.Fatalf("Remove of a path outside the releases directory succeeded")
	}
}
