package resolve

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Release.Stat answers as os.Stat of the file's path would: the same
// FileInfo, the same errors.
func TestStatLikeOS(t *testing.T) {
	d := newDeployment(t)
	writeFile(t, filepath.Join(d.a, "index.php"), "<?php echo 'A';")
	writeFile(t, filepath.Join(d.app, "shared", "logo.png"), "png")
	symlink(t, "../../../shared/logo.png", filepath.Join(d.a, "logo.png"))
	mkdir(t, filepath.Join(d.a, "dir"))
	if err := os.Chmod(filepath.Join(d.a, "dir"), 0o1755); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2026, 11, 21, 12, 0, 0, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(d.a, "index.php"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Current()
	if runtime.GOOS == "linux" && r.dir == nil {
		t.Fatal("no directory descriptor for the release")
	}
	for _, name := range []string{"/", "/index.php", "/logo.png", "/dir", "/dir/", "/nope", "/index.php/x"} {
		t.Run(name, func(t *testing.T) {
			got, err := r.Stat(name)
			want, wantErr := os.Stat(r.Path(name))
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("Stat(%q) error %v; os.Stat %v", name, err, wantErr)
			}
			if wantErr != nil {
				var pe *fs.PathError
				if !errors.As(err, &pe) || !errors.Is(err, errors.Unwrap(wantErr)) {
					t.Errorf("Stat(%q) error %v; want a PathError like %v", name, err, wantErr)
				}
				return
			}
			if got.Name() != want.Name() || got.Size() != want.Size() || got.Mode() != want.Mode() ||
				!got.ModTime().Equal(want.ModTime()) || got.IsDir() != want.IsDir() {
				t.Errorf("Stat(%q) = %s %d %v %v; os.Stat %s %d %v %v", name,
					got.Name(), got.Size(), got.Mode(), got.ModTime(), want.Name(), want.Size(), want.Mode(), want.ModTime())
			}
			if !SameFile(got, want) || !SameFile(want, got) {
				t.Errorf("SameFile(Stat(%q), os.Stat) = false", name)
			}
		})
	}
	if a, _ := r.Stat("/index.php"); a != nil {
		if b, _ := r.Stat("/dir"); b != nil && SameFile(a, b) {
			t.Error("SameFile of two files = true")
		}
	}
	if a, _ := r.Stat("/index.php"); a != nil && !a.ModTime().Equal(mtime) {
		t.Errorf("ModTime = %v; want %v (nanoseconds kept)", a.ModTime(), mtime)
	}
}

// A request pinned to a release stats that release's files, even once its
// directory is replaced at the same path: the new directory is another
// release.
func TestStatPinnedToDirectory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the directory descriptor is Linux's")
	}
	d := newDeployment(t)
	writeFile(t, filepath.Join(d.a, "old.php"), "old")
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Pin()
	defer r.Unpin()
	releaseA := filepath.Dir(d.a)
	if err := os.Rename(releaseA, releaseA+".moved"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.a, "new.php"), "new")
	if fi, err := r.Stat("/old.php"); err != nil || fi.Size() != 3 {
		t.Errorf("Stat(/old.php) = %v, %v; want the pinned release's file", fi, err)
	}
	if _, err := r.Stat("/new.php"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(/new.php) error %v; want not found: it is not in the pinned directory", err)
	}
	if _, err := r.Stat("/old.php/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Stat(/old.php/x) error %v; want ENOTDIR", err)
	}
}
