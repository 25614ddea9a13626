package resolve

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Switch points the symlink link at the directory target atomically: it
// makes a new symlink under a temporary name in link's directory, then
// renames it over link (one rename(2), like `ln -s target tmp && mv -T tmp
// link`). At no moment is link missing, and it never moves into its old
// target the way `mv tmp link` without -T does. Link is created when it
// does not exist.
//
// The link stores target relative to link's directory when target is below
// it (like `ln -s releases/B current`), else absolute. A relative target is
// taken from the working directory. Switch refuses a target that is not a
// directory, one reached through link itself, and a link that exists but is
// not a symlink.
func Switch(link, target string) error {
	link, err := filepath.Abs(link)
	if err != nil {
		return err
	}
	if target, err = filepath.Abs(target); err != nil {
		return err
	}
	if below(target, link) || throughLink(target, link) {
		return fmt.Errorf("switch %s: target %s is reached through the link itself", link, target)
	}
	fi, err := os.Stat(target)
	if err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("switch %s: target %s is not a directory", link, target)
	}
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("switch %s: it exists and is not a symlink; move it away first", link)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("switch %s: %w", link, err)
	}

	dir := filepath.Dir(link)
	content := linkContent(dir, target)
	tmp, err := tempSymlink(content, dir, filepath.Base(link))
	if err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	// Again, now that tmp shows a prune (ReleaseList.Remove) that the
	// switch is under way: one that began before has moved target away.
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		os.Remove(tmp)
		if err == nil {
			err = fmt.Errorf("target %s is not a directory", target)
		}
		return fmt.Errorf("switch %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch %s: %w", link, err)
	}
	// The rename is atomic already; syncing the directory makes it durable.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// throughLink reports whether resolving target follows link, as it does
// through another alias of link (/var/www/html -> /srv/app/current): link
// would then point at itself.
func throughLink(target, link string) bool {
	dir, err := filepath.EvalSymlinks(filepath.Dir(link))
	if err != nil {
		return false
	}
	link = filepath.Join(dir, filepath.Base(link)) // as resolveRoot names links
	res, err := resolveRoot(target)
	if err != nil {
		return false // Stat reports it
	}
	for _, l := range res.links {
		if l.path == link {
			return true
		}
	}
	return false
}

// linkContent is what a link in dir stores to name target: the path from
// dir when target is below it, else target itself. Both are absolute and
// clean; dir is also tried by its realpath, so that /srv/app/releases/B
// given as /data/app/releases/B (srv -> data) still gets releases/B.
func linkContent(dir, target string) string {
	if rel, ok := relBelow(dir, target); ok {
		return rel
	}
	rdir, err1 := filepath.EvalSymlinks(dir)
	rtarget, err2 := filepath.EvalSymlinks(target)
	if err1 == nil && err2 == nil {
		if rel, ok := relBelow(rdir, rtarget); ok {
			// Only when the name found leads to the same directory.
			if fi1, err := os.Stat(filepath.Join(dir, rel)); err == nil {
				if fi2, err := os.Stat(target); err == nil && os.SameFile(fi1, fi2) {
					return rel
				}
			}
		}
	}
	return target
}

// relBelow returns target relative to dir when it is strictly below it.
func relBelow(dir, target string) (string, bool) {
	if target == dir || !below(target, dir) {
		return "", false
	}
	if dir == "/" {
		return target[1:], true
	}
	return target[len(dir)+1:], true
}

// tempSymlink makes a symlink to content in dir under a fresh temporary
// name beginning with .name.tmp- and returns its path.
func tempSymlink(content, dir, name string) (string, error) {
	for range 10 {
		var b [6]byte
		rand.Read(b[:])
		tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(b[:]))
		err := os.Symlink(content, tmp)
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", errors.New("no free temporary name")
}
