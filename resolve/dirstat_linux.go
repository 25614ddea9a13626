//go:build linux

package resolve

import (
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openDir opens root (a realpath) for stats relative to it, and checks that
// it is the directory want was the Stat of. It returns nil when either
// fails: Stat then walks the whole path, as before.
func openDir(root string, want fs.FileInfo) *os.File {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || !sameDevIno(want, uint64(st.Dev), uint64(st.Ino)) {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), root)
}

// statAt stats the cleaned URL path name through r's directory descriptor:
// the kernel walks name's elements only, not Root's, and the result is
// the file inside the directory r resolved to, even if that directory was
// renamed or replaced at its path since. Symlinks are followed, as by
// os.Stat.
func (r *Release) statAt(name string) (fs.FileInfo, error) {
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		rel = "."
	}
	var st unix.Stat_t
	var err error
	for {
		err = unix.Fstatat(int(r.dirFD), rel, &st, 0)
		if err != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(r.dir) // its cleanup closes dirFD
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: r.Path(name), Err: err}
	}
	base := path.Base(name)
	if base == "/" {
		base = path.Base(r.Root)
	}
	return newFileInfo(base, &st), nil
}

// fileInfo is a FileInfo made from a unix.Stat_t. Sys returns nil; SameFile
// compares it with os's.
type fileInfo struct {
	name     string
	size     int64
	mode     fs.FileMode
	modTime  time.Time
	ctime    int64 // the status change time, ns: chmod, chown and writes move it
	dev, ino uint64
}

func newFileInfo(name string, st *unix.Stat_t) *fileInfo {
	fi := &fileInfo{
		name:    name,
		size:    st.Size,
		mode:    fs.FileMode(st.Mode & 0o777),
		modTime: time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)),
		ctime:   int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec),
		dev:     uint64(st.Dev),
		ino:     uint64(st.Ino),
	}
	// As os's fillFileStatFromSys.
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		fi.mode |= fs.ModeDevice
	case unix.S_IFCHR:
		fi.mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		fi.mode |= fs.ModeDir
	case unix.S_IFIFO:
		fi.mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		fi.mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		fi.mode |= fs.ModeSocket
	}
	if st.Mode&unix.S_ISGID != 0 {
		fi.mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISUID != 0 {
		fi.mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		fi.mode |= fs.ModeSticky
	}
	return fi
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.modTime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

// changeTime returns fi's status change time in ns, from a fileInfo or
// os's.
func changeTime(fi fs.FileInfo) (int64, bool) {
	switch v := fi.(type) {
	case *fileInfo:
		return v.ctime, true
	case nil:
		return 0, false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec), true
	}
	return 0, false
}

// devIno returns fi's device and inode numbers, from a fileInfo or os's.
func devIno(fi fs.FileInfo) (dev, ino uint64, ok bool) {
	switch v := fi.(type) {
	case *fileInfo:
		return v.dev, v.ino, true
	case nil:
		return 0, 0, false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino), true
	}
	return 0, 0, false
}
