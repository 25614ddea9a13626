package resolve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Errors of the URL-path to file mapping. Callers classify with errors.Is.
var (
	// ErrBadPath: the path has a NUL byte, is not absolute, or is not valid.
	ErrBadPath = errors.New("invalid path")
	// ErrOutside: the file resolves outside the release and the deploy
	// directory (a symlink that escapes).
	ErrOutside = errors.New("path resolves outside the release")
)

// CleanPath returns the cleaned form of an already %-decoded URL path: it
// starts with "/", has no "." or ".." element, no doubled slash, and keeps a
// trailing slash if the input had one. It returns ErrBadPath for a path with
// a NUL byte, one not starting with "/", and one whose ".." would climb above
// "/" (nginx answers those 400 too).
func CleanPath(urlPath string) (string, error) {
	if !strings.HasPrefix(urlPath, "/") {
		return "", fmt.Errorf("%w: %q does not start with /", ErrBadPath, urlPath)
	}
	if strings.IndexByte(urlPath, 0) >= 0 {
		return "", fmt.Errorf("%w: %q has a NUL byte", ErrBadPath, urlPath)
	}
	if strings.Contains(urlPath, "..") && climbs(urlPath) {
		return "", fmt.Errorf("%w: %q climbs above /", ErrBadPath, urlPath)
	}
	p := path.Clean(urlPath) // rooted: ".." stops at "/"
	if urlPath[len(urlPath)-1] == '/' && p != "/" {
		if len(urlPath) == len(p)+1 && strings.HasPrefix(urlPath, p) {
			return urlPath, nil // already clean: no allocation
		}
		p += "/"
	} else if p != "/" && (strings.HasSuffix(urlPath, "/.") || strings.HasSuffix(urlPath, "/..")) {
		p += "/" // a last "." or ".." names a directory (RFC 3986 §5.2.4; nginx)
	}
	return p, nil
}

// climbs reports whether a ".." element of the rooted path p would go above
// "/".
func climbs(p string) bool {
	depth := 0
	for p != "" {
		p = p[1:] // the slash
		i := strings.IndexByte(p, '/')
		if i < 0 {
			i = len(p)
		}
		switch p[:i] {
		case "", ".":
		case "..":
			if depth == 0 {
				return true
			}
			depth--
		default:
			depth++
		}
		p = p[i:]
	}
	return false
}

// Path returns the file name of the cleaned URL path name inside r: r.Root +
// name, lexically. It does not touch the disk.
func (r *Release) Path(name string) string {
	switch {
	case r.Root == "/" && strings.HasPrefix(name, "/"):
		return name
	case strings.HasPrefix(name, "/"):
		return r.Root + name
	default:
		return r.Root + "/" + name
	}
}

// Stat stats the cleaned URL path name inside r, following symlinks. On
// Linux it goes through a descriptor of the directory r resolved to: the
// kernel walks name only, and it looks in that directory even if it was
// renamed or replaced at its path since (Open still opens by path).
func (r *Release) Stat(name string) (fs.FileInfo, error) {
	if r.dir == nil {
		return os.Stat(r.Path(name))
	}
	return r.statAt(name)
}

// SameFile is os.SameFile for the FileInfos of Release.Stat and
// Release.Open, which may come from a directory descriptor (Linux) rather
// than from package os.
func SameFile(a, b fs.FileInfo) bool {
	if os.SameFile(a, b) {
		return true
	}
	da, ia, ok := devIno(a)
	return ok && sameDevIno(b, da, ia)
}

// SameVersion reports whether a and b are the same file in the same state:
// SameFile, the same size and modification time, and (where it is known)
// the same status change time, which chmod, chown and any write move and
// nothing can set back: a file edited in place with its mtime restored, or
// made unreadable, is another version.
func SameVersion(a, b fs.FileInfo) bool {
	if !SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) {
		return false
	}
	ca, oka := changeTime(a)
	cb, okb := changeTime(b)
	return !oka || !okb || ca == cb
}

// Open opens the cleaned URL path name inside r for reading, if it lies
// below r.Root or the deploy directory; if not it returns ErrOutside. The
// returned FileInfo is the opened file's. On Linux the file is the one in the
// directory r resolved to, like Stat's, and it is checked before it is opened
// for reading: a FIFO or a device is refused (fs.ErrPermission), never
// opened.
func (r *Release) Open(name string) (*os.File, fs.FileInfo, error) {
	if f, fi, done, err := r.openPinned(name); done {
		return f, fi, err
	}
	return r.openByPath(name)
}

// openByPath opens r.Path(name), then checks where the file opened lies.
func (r *Release) openByPath(name string) (*os.File, fs.FileInfo, error) {
	f, err := os.Open(r.Path(name))
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	real, err := openedPath(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: locate opened file: %w", f.Name(), err)
	}
	if !r.inside(real) {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %s: %w", f.Name(), real, ErrOutside)
	}
	return f, fi, nil
}

// inside reports whether real, a realpath, is below Root, the deploy
// directory or the release directory: where a symlink in the release may
// lead.
func (r *Release) inside(real string) bool {
	return below(real, r.Root) || r.base != "" && below(real, r.base) || r.release != "" && below(real, r.release)
}

// below reports whether p is dir or inside it; both are clean and absolute.
// /srv/app2 is not below /srv/app.
func below(p, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == dir || strings.HasPrefix(p, dir) && p[len(dir)] == '/'
}

func sameDevIno(fi fs.FileInfo, dev, ino uint64) bool {
	d, i, ok := devIno(fi)
	return ok && d == dev && i == ino
}
