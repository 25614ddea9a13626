//go:build unix

package resolve

import (
	"io/fs"
	"syscall"
)

// fileOwner returns the owner and group of the file of fi.
func fileOwner(fi fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
