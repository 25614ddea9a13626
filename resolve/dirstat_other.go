//go:build !linux

package resolve

import (
	"io/fs"
	"os"
)

// openDir returns nil: Stat walks the whole path (dirstat_linux.go).
func openDir(string, fs.FileInfo) *os.File { return nil }

func (r *Release) statAt(name string) (fs.FileInfo, error) { return os.Stat(r.Path(name)) }

func devIno(fs.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }

// openPinned leaves Open to open by path (open_linux.go).
func (r *Release) openPinned(string) (*os.File, fs.FileInfo, bool, error) {
	return nil, nil, false, nil
}

func changeTime(fs.FileInfo) (int64, bool) { return 0, false }
