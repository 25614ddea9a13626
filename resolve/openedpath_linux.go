package resolve

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// openedPath returns where the open file f really is: the kernel's name for
// its descriptor, so a symlink swapped after the open cannot mislead. Without
// /proc it falls back to resolving f's name.
func openedPath(f *os.File) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.FormatUint(uint64(f.Fd()), 10))
	if err != nil {
		return filepath.EvalSymlinks(f.Name())
	}
	// A file unlinked since it was opened reads "/x/y (deleted)".
	return strings.TrimSuffix(p, " (deleted)"), nil
}
