//go:build linux

package resolve

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// openPinned opens the cleaned URL path name through r's directory
// descriptor, as statAt stats it: the file is the one inside the directory r
// resolved to, even if that directory was renamed or replaced at its path
// since (a copy deploy). It opens with O_PATH first, which neither reads nor
// blocks, and reopens the file for reading only once it is known to lie below
// Root, the deploy directory or the pinned directory wherever it is now, and
// to be a regular file or a directory: a link to a FIFO or a device is never
// opened. done is false when it cannot tell (no descriptor, no /proc): Open
// then opens by path.
func (r *Release) openPinned(name string) (f *os.File, fi fs.FileInfo, done bool, err error) {
	if r.dir == nil {
		return nil, nil, false, nil
	}
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		rel = "."
	}
	var pfd int
	for {
		pfd, err = unix.Openat(int(r.dirFD), rel, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(r.dir) // its cleanup closes dirFD
	if err != nil {
		return nil, nil, true, &fs.PathError{Op: "open", Path: r.Path(name), Err: err}
	}
	defer unix.Close(pfd)
	proc := "/proc/self/fd/" + strconv.Itoa(pfd)
	real, err := os.Readlink(proc)
	if err != nil {
		return nil, nil, false, nil // no /proc
	}
	real = strings.TrimSuffix(real, " (deleted)")
	if !r.holds(real) {
		return nil, nil, true, fmt.Errorf("open %s: %s: %w", r.Path(name), real, ErrOutside)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, nil, true, &fs.PathError{Op: "stat", Path: r.Path(name), Err: err}
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFREG && m != unix.S_IFDIR {
		return nil, nil, true, fmt.Errorf("open %s: %s is not a regular file: %w", r.Path(name), real, fs.ErrPermission)
	}
	var fd int
	for {
		fd, err = unix.Open(proc, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, nil, true, &fs.PathError{Op: "open", Path: r.Path(name), Err: err}
	}
	base := path.Base(name)
	if base == "/" {
		base = path.Base(r.Root)
	}
	return os.NewFile(uintptr(fd), r.Path(name)), newFileInfo(base, &st), true, nil
}

// holds reports whether real, a realpath, is below Root, the deploy
// directory or the release directory, or below the pinned directory where
// it is now (renamed by a copy deploy, Root names another directory).
func (r *Release) holds(real string) bool {
	if r.inside(real) {
		return true
	}
	now, err := os.Readlink("/proc/self/fd/" + strconv.FormatUint(uint64(r.dirFD), 10))
	runtime.KeepAlive(r.dir)
	return err == nil && below(real, now)
}
