package resolve

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A ReleaseDir is one release in a releases directory.
type ReleaseDir struct {
	Name    string    `json:"name"`    // e.g. 20261121120000
	Path    string    `json:"path"`    // its realpath
	ModTime time.Time `json:"mtime"`   // the directory's
	Current bool      `json:"current"` // the link points at it
}

// A ReleaseList is the releases directory of a link: the directory that
// holds the link's target (/srv/app/releases for current -> releases/B).
type ReleaseList struct {
	Link     string       // the link, absolute
	Dir      string       // the releases directory, a realpath
	Releases []ReleaseDir // oldest first
}

// ErrCurrent: the link points at the release.
var ErrCurrent = errors.New("release is current")

// projectNames are names found at the top of a PHP project, never the name
// of a release (a timestamp, a number, a commit, a version).
var projectNames = map[string]bool{
	"vendor": true, "composer.json": true, "composer.lock": true, "src": true,
	"app": true, "config": true, "public": true, "bootstrap": true, "storage": true,
	"node_modules": true, "package.json": true, "artisan": true, "index.php": true,
	"web": true, "var": true, ".env": true,
}

// ListReleases lists the directories beside link's target, oldest first:
// by number when every name is one (timestamps like 20261121120000,
// Deployer's 1, 2, 3), else by mtime. Names starting with "." and entries
// that are not directories are left out.
//
// It refuses a link whose target lies in the link's own directory or above
// it (current -> ../v2): that directory holds more than releases; and one
// whose target's directory holds a project's files (vendor, composer.json):
// the link points into a release (current -> releases/B/public).
func ListReleases(link string) (*ReleaseList, error) {
	link, err := filepath.Abs(link)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(link)
	if err != nil {
		return nil, fmt.Errorf("releases of %s: %w", link, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return nil, fmt.Errorf("releases of %s: it is not a symlink", link)
	}
	target, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, fmt.Errorf("releases of %s: %w", link, err)
	}
	dir := filepath.Dir(target)
	linkDir, err := filepath.EvalSymlinks(filepath.Dir(link))
	if err != nil {
		return nil, fmt.Errorf("releases of %s: %w", link, err)
	}
	if below(linkDir, dir) {
		return nil, fmt.Errorf("releases of %s: its target %s is in %s, which also holds the link: keep releases in a directory of their own (releases/)", link, target, dir)
	}
	if err := symlinkedRelease(link, linkDir, dir); err != nil {
		return nil, fmt.Errorf("releases of %s: %w", link, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("releases of %s: %w", link, err)
	}
	l := &ReleaseList{Link: link, Dir: dir}
	for _, e := range ents {
		if projectNames[e.Name()] {
			// A release's own content: the link points into a release
			// (current -> releases/B/public), and its other directories
			// (vendor, src) would pass for releases, and be pruned.
			return nil, fmt.Errorf("releases of %s: its target %s is in %s, which holds %s: that is a release, not a directory of releases; point the link at the release (releases/B) and the root at its public/", link, target, dir, e.Name())
		}
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		p := filepath.Join(dir, e.Name())
		l.Releases = append(l.Releases, ReleaseDir{Name: e.Name(), Path: p, ModTime: fi.ModTime(), Current: p == target})
	}
	sortReleases(l.Releases)
	return l, nil
}

// sortReleases sorts oldest first: by number when every name is a number,
// else by mtime, then name.
func sortReleases(rs []ReleaseDir) {
	if slices.IndexFunc(rs, func(r ReleaseDir) bool { return !isNumber(r.Name) }) < 0 {
		slices.SortFunc(rs, func(a, b ReleaseDir) int {
			x, y := strings.TrimLeft(a.Name, "0"), strings.TrimLeft(b.Name, "0")
			return cmp.Or(cmp.Compare(len(x), len(y)), strings.Compare(x, y), strings.Compare(a.Name, b.Name))
		})
		return
	}
	slices.SortFunc(rs, func(a, b ReleaseDir) int {
		return cmp.Or(a.ModTime.Compare(b.ModTime), strings.Compare(a.Name, b.Name))
	})
}

func isNumber(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// Prunable returns the releases to delete to keep the keep newest, oldest
// first. The current release and every one for which busy reports true are
// never among them, whatever their age.
func (l *ReleaseList) Prunable(keep int, busy func(ReleaseDir) bool) []ReleaseDir {
	var out []ReleaseDir
	for _, r := range l.Releases[:max(len(l.Releases)-keep, 0)] {
		if !r.Current && !busy(r) {
			out = append(out, r)
		}
	}
	return out
}

// Remove deletes the release r of l, after checking again that the link
// does not point at it (ErrCurrent): a switch to it may have happened since
// the list was made. A switch under way (its temporary link made, not yet
// renamed over the link) counts as pointing at it. r is first renamed to a
// hidden name and the checks made again, so that a switch that Stat'ed r
// before it went either is seen (and r put back whole) or finds r missing.
func (l *ReleaseList) Remove(r ReleaseDir) error {
	if filepath.Dir(r.Path) != l.Dir || r.Name != filepath.Base(r.Path) {
		return fmt.Errorf("remove %s: not a release in %s", r.Path, l.Dir)
	}
	target, err := filepath.EvalSymlinks(l.Link)
	if err != nil {
		return fmt.Errorf("remove %s: cannot tell what %s points at: %w", r.Path, l.Link, err)
	}
	if below(target, r.Path) || l.switchingTo(r) {
		return fmt.Errorf("remove %s: %w", r.Path, ErrCurrent)
	}
	var b [6]byte
	rand.Read(b[:])
	trash := filepath.Join(l.Dir, "."+r.Name+".removing-"+hex.EncodeToString(b[:]))
	if err := os.Rename(r.Path, trash); err != nil {
		return fmt.Errorf("remove %s: %w", r.Path, err)
	}
	if target, err := filepath.EvalSymlinks(l.Link); err != nil || below(target, r.Path) || l.switchingTo(r) {
		// The link, or a switch under way, went to r meanwhile (the link
		// resolved before r moved: failing now, it points at r).
		if rerr := os.Rename(trash, r.Path); rerr != nil {
			return fmt.Errorf("remove %s: a switch went to it meanwhile, and putting it back failed: %w", r.Path, rerr)
		}
		return fmt.Errorf("remove %s: %w", r.Path, ErrCurrent)
	}
	return os.RemoveAll(trash)
}

// switchingTo reports whether a temporary link of Switch for l.Link
// (.current.tmp-*, beside it) names r: a switch to r is under way.
func (l *ReleaseList) switchingTo(r ReleaseDir) bool {
	dir := filepath.Dir(l.Link)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return true // cannot tell: keep r
	}
	prefix := "." + filepath.Base(l.Link) + ".tmp-"
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // renamed over the link meanwhile: the link says
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(dir, t)
		}
		if real, err := filepath.EvalSymlinks(t); err == nil && below(real, r.Path) {
			return true
		}
		if pdir, err := filepath.EvalSymlinks(filepath.Dir(t)); err == nil && below(filepath.Join(pdir, filepath.Base(t)), r.Path) {
			return true // r itself renamed away by Remove
		}
	}
	return false
}

// symlinkedRelease follows link one hop at a time and refuses a hop that is
// a symlink in a directory other than the link's own (an alias beside it,
// current -> latest) or dir, the realpath's directory: a release that is
// itself a symlink (releases/B -> /data/builds/B) would make the directory
// beside its realpath (/data/builds, which may hold anything) pass for the
// releases directory.
func symlinkedRelease(link, linkDir, dir string) error {
	p, pDir := link, linkDir
	for range maxLinks {
		t, err := os.Readlink(p)
		if err != nil {
			return nil // EvalSymlinks went through: it changed meanwhile
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(pDir, t)
		}
		fi, err := os.Lstat(t)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return nil
		}
		if pDir, err = filepath.EvalSymlinks(filepath.Dir(t)); err != nil {
			return nil
		}
		if pDir == dir {
			return nil // a link among the releases (releases/latest -> B)
		}
		if pDir != linkDir {
			real, _ := filepath.EvalSymlinks(t)
			return fmt.Errorf("its target %s is a symlink to %s, whose directory is not %s: make the release a directory in %s", t, real, pDir, pDir)
		}
		p = t
	}
	return nil
}
