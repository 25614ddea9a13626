package resolve

import (
	"io"
	"path/filepath"
	"testing"
)

// TestDeployDirLayouts: the deploy directory is the directory of the link
// that switches releases (current -> releases/B), whatever other links the
// root goes through: a docroot that is a link inside the release (docroot
// -> web, public -> build/public), releases/ kept on another disk
// (releases -> /data/releases). Links into shared/, and links inside the
// release that leave the docroot (Laravel's public/storage ->
// ../storage/app/public), are followed in each, as in the plain layout; a
// link out of the deploy is not.
func TestDeployDirLayouts(t *testing.T) {
	tmp := realpath(t, t.TempDir())
	outside := filepath.Join(tmp, "etc", "secret")
	writeFile(t, outside, "secret")

	// A docroot that is a link inside the release.
	app := filepath.Join(tmp, "app")
	b := filepath.Join(app, "releases", "B")
	writeFile(t, filepath.Join(app, "shared", "files", "upload.txt"), "shared file")
	writeFile(t, filepath.Join(b, "storage", "app", "public", "avatar.txt"), "release file")
	mkdir(t, filepath.Join(b, "web"))
	symlink(t, "releases/B", filepath.Join(app, "current"))
	symlink(t, "web", filepath.Join(b, "docroot"))
	symlink(t, "../../../shared/files", filepath.Join(b, "web", "files"))
	symlink(t, "../storage/app/public", filepath.Join(b, "web", "storage"))
	symlink(t, outside, filepath.Join(b, "web", "secret"))

	// releases/ on another disk; shared/ beside the link, absolute links.
	site, data := filepath.Join(tmp, "site"), filepath.Join(tmp, "data")
	x := filepath.Join(data, "releases", "X")
	writeFile(t, filepath.Join(site, "shared", "files", "upload.txt"), "shared file")
	writeFile(t, filepath.Join(x, "storage", "app", "public", "avatar.txt"), "release file")
	mkdir(t, filepath.Join(x, "public"))
	symlink(t, filepath.Join(data, "releases"), filepath.Join(site, "releases"))
	symlink(t, "releases/X", filepath.Join(site, "current"))
	symlink(t, filepath.Join(site, "shared", "files"), filepath.Join(x, "public", "files"))
	symlink(t, "../storage/app/public", filepath.Join(x, "public", "storage"))
	symlink(t, outside, filepath.Join(x, "public", "secret"))

	for _, tt := range []struct {
		name, root, wantDir string
	}{
		{"docroot is a link in the release", filepath.Join(app, "current", "docroot"), b},
		{"releases on another disk", filepath.Join(site, "current", "public"), x},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := New(Options{Root: tt.root})
			if err != nil {
				t.Fatal(err)
			}
			r := rs.Current()
			if r.Dir != tt.wantDir {
				t.Errorf("Dir = %q; want the release, %q", r.Dir, tt.wantDir)
			}
			for name, want := range map[string]string{
				"/files/upload.txt":   "shared file",
				"/storage/avatar.txt": "release file",
			} {
				f, _, err := r.Open(name)
				if err != nil {
					t.Errorf("Open(%s) = %v (deploy dir %s); want %q", name, err, r.base, want)
					continue
				}
				got, _ := io.ReadAll(f)
				f.Close()
				if string(got) != want {
					t.Errorf("Open(%s) read %q; want %q", name, got, want)
				}
			}
			if f, _, err := r.Open("/secret"); err == nil {
				f.Close()
				t.Errorf("Open(/secret) served %s (deploy dir %s); want ErrOutside", outside, r.base)
			}
		})
	}
}
