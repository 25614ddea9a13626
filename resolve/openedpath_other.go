//go:build !linux

package resolve

import (
	"os"
	"path/filepath"
)

// openedPath returns where the open file f really is. Without /proc this
// resolves f's name again, so a symlink swapped between the open and this
// call can mislead it.
func openedPath(f *os.File) (string, error) {
	return filepath.EvalSymlinks(f.Name())
}
