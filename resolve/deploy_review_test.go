// From a review of the deploy tools (ListReleases, Remove, Switch): each
// test failed before its fix.

package resolve

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListReleasesSymlinks: which symlinks on the way from the link
// to its release ListReleases follows, and the one it refuses: a release
// that is itself a symlink out of releases/ (the directory beside its
// realpath is not the releases directory).
func TestListReleasesSymlinks(t *testing.T) {
	tests := []struct {
		name    string
		links   map[string]string // link path (in tmp) -> its content
		wantDir string            // in tmp; "" with wantErr
		wantErr string
	}{
		{name: "plain", links: map[string]string{"app/current": "releases/B"}, wantDir: "app/releases"},
		{name: "alias beside the link", links: map[string]string{"app/current": "latest", "app/latest": "releases/B"}, wantDir: "app/releases"},
		{name: "link among the releases", links: map[string]string{"app/current": "releases/latest", "app/releases/latest": "B"}, wantDir: "app/releases"},
		{name: "releases directory elsewhere", links: map[string]string{"app/current": "rel/B", "app/rel": "../data/releases"}, wantDir: "data/releases"},
		{name: "release symlinked out", links: map[string]string{"app/current": "releases/X", "app/releases/X": "../../builds/X"}, wantErr: "is a symlink to"},
		{name: "alias to a symlinked release", links: map[string]string{"app/current": "latest", "app/latest": "releases/X", "app/releases/X": "../../builds/X"}, wantErr: "is a symlink to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := realpath(t, t.TempDir())
			mkdir(t,
				filepath.Join(tmp, "app/releases/A"), filepath.Join(tmp, "app/releases/B"),
				filepath.Join(tmp, "data/releases/A"), filepath.Join(tmp, "data/releases/B"),
				filepath.Join(tmp, "builds/W"), filepath.Join(tmp, "builds/X"))
			for l, c := range tt.links {
				symlink(t, c, filepath.Join(tmp, l))
			}
			l, err := ListReleases(filepath.Join(tmp, "app/current"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ListReleases() = %+v, %v; want an error with %q", l, err, tt.wantErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(tmp, tt.wantDir); l.Dir != want {
				t.Fatalf("Dir = %s; want %s", l.Dir, want)
			}
		})
	}
}

// TestRemoveSwitchUnderWay: Remove keeps a release that a switch
// under way names (its temporary link), or that the link now points
// into; a stale temporary link to a release long gone blocks nothing, and
// Remove leaves no hidden copy behind.
func TestRemoveSwitchUnderWay(t *testing.T) {
	d := newDeployment(t)
	mkdir(t, filepath.Join(d.app, "releases", "C", "public"))
	l, err := ListReleases(d.current)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ReleaseDir{}
	for _, r := range l.Releases {
		byName[r.Name] = r
	}
	symlink(t, "releases/B", filepath.Join(d.app, ".current.tmp-0123456789ab"))
	symlink(t, "releases/gone", filepath.Join(d.app, ".current.tmp-ba9876543210"))
	if err := l.Remove(byName["B"]); !errors.Is(err, ErrCurrent) {
		t.Fatalf("Remove(B) during a switch to B = %v; want ErrCurrent", err)
	}
	flipAtomic(t, "releases/C/public", d.current)
	if err := l.Remove(byName["C"]); !errors.Is(err, ErrCurrent) {
		t.Fatalf("Remove(C) with current -> releases/C/public = %v; want ErrCurrent", err)
	}
	if err := l.Remove(byName["A"]); err != nil {
		t.Fatalf("Remove(A) = %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(d.app, "releases"))
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if got := strings.Join(left, " "); got != "B C" {
		t.Fatalf("releases/ holds %q; want B C", got)
	}
}
