package resolve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// maxLinks bounds the symlinks followed in one resolution, like the kernel's
// ELOOP limit.
const maxLinks = 255

// A link is one symlink met while resolving the root.
type link struct {
	path   string // the link itself: its directory is a realpath
	target string // what it pointed to when read
}

// A resolution is the result of walking the configured root once. It is
// never changed after resolveRoot returns.
type resolution struct {
	real string      // realpath of the root, a directory
	dir  os.FileInfo // Stat of real
	base string      // deploy directory (see deployDirs)
	top  string      // release directory (see deployDirs)
	// release is top when a deploy link leads to it (deployDirs), else "":
	// links in the release may lead anywhere below it.
	release string
	links   []link // in the order met
	// watch maps each directory to watch to the names in it whose events
	// matter: the directory of every link, with every component walked in it.
	// With no link it is the root's parent, with the root's name.
	watch map[string][]string
}

// resolveRoot walks root (absolute and clean) component by component,
// following symlinks, and returns its realpath and the symlinks on the way.
// Errors name root and, when it is not root itself, the path that failed.
func resolveRoot(root string) (*resolution, error) {
	res := &resolution{}
	names := map[string][]string{} // directory -> components walked in it
	dir := "/"                     // the realpath walked so far
	rest := strings.TrimPrefix(root, "/")
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			dir = filepath.Dir(dir) // dir has no symlink: lexical is real
			continue
		}
		next := filepath.Join(dir, comp)
		if !slices.Contains(names[dir], comp) {
			names[dir] = append(names[dir], comp)
		}
		fi, err := os.Lstat(next)
		if err != nil {
			return nil, resolveError(root, next, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if !fi.IsDir() && strings.Trim(rest, "/") != "" {
				return nil, resolveError(root, next, syscall.ENOTDIR)
			}
			dir = next
			continue
		}
		if len(res.links) == maxLinks {
			return nil, resolveError(root, root, syscall.ELOOP)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return nil, resolveError(root, next, err)
		}
		res.links = append(res.links, link{path: next, target: target})
		if filepath.IsAbs(target) {
			dir = "/"
		}
		if rest == "" {
			rest = target
		} else {
			rest = target + "/" + rest
		}
		rest = strings.TrimPrefix(rest, "/")
	}

	fi, err := os.Stat(dir)
	if err != nil {
		return nil, resolveError(root, dir, err)
	}
	if !fi.IsDir() {
		if dir == root {
			return nil, fmt.Errorf("root %s is not a directory", root)
		}
		return nil, fmt.Errorf("root %s resolves to %s, which is not a directory", root, dir)
	}
	res.real, res.dir = dir, fi

	res.watch = map[string][]string{}
	if len(res.links) == 0 {
		res.base, res.top = dir, dir
		if dir != "/" {
			res.watch[filepath.Dir(dir)] = []string{filepath.Base(dir)}
		}
		return res, nil
	}
	res.base, res.top, res.release = deployDirs(res.links, dir)
	for _, l := range res.links {
		d := filepath.Dir(l.path)
		res.watch[d] = names[d]
	}
	return res, nil
}

// resolveError names root, and at when the failure is on another path.
func resolveError(root, at string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // at names the path; "lstat" adds nothing for an operator
	}
	if at == root {
		return fmt.Errorf("resolve %s: %w", root, err)
	}
	return fmt.Errorf("resolve %s: %s: %w", root, at, err)
}

// deployDirs returns the deploy directory and the release directory of a
// resolution to real, and the release directory again when a deploy link
// leads to it. The deploy link is the first link met that points below its
// own directory (current -> releases/B) to a directory that holds real: the
// deploy directory is the link's directory, the release directory the
// realpath of its target. Links met before it are aliases of the site
// (/var/www -> /data/www: its directory holds more than the site); links
// after it lead within the release (docroot -> web) or to where releases
// are kept (releases -> /data/releases). With no deploy link, the deploy
// directory is real itself and the release directory releaseDir's.
func deployDirs(links []link, real string) (base, top, release string) {
	for _, l := range links {
		d := filepath.Dir(l.path) // a realpath
		t := l.target
		if !filepath.IsAbs(t) {
			t = filepath.Join(d, t)
		}
		if d == "/" || t == d || !below(t, d) {
			continue
		}
		if rt, err := filepath.EvalSymlinks(t); err == nil && below(real, rt) {
			return d, rt, rt
		}
	}
	return real, releaseDir(links, real), ""
}

// releaseDir returns the release directory of a resolution to real: of the
// realpaths of the links' targets, the deepest one that holds real. Not the
// last link's: that may lead to a parent of the release (releases ->
// /data/releases, which holds them all) or away from it (public -> a
// shared directory). Should the links have changed since, it returns real.
func releaseDir(links []link, real string) string {
	top := ""
	for _, l := range links {
		t := l.target
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(l.path), t)
		}
		d, err := filepath.EvalSymlinks(t)
		if err == nil && below(real, d) && len(d) > len(top) {
			top = d
		}
	}
	if top == "" {
		return real
	}
	return top
}
