package resolve

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		give    string
		want    string
		wantErr error
	}{
		{give: "/", want: "/"},
		{give: "/index.php", want: "/index.php"},
		{give: "/a/b/", want: "/a/b/"},
		{give: "//a//b", want: "/a/b"},
		{give: "//", want: "/"},
		{give: "/a/./b/.", want: "/a/b/"}, // a last "." or ".." names a directory (RFC 3986 §5.2.4)
		{give: "/a/b/c/..", want: "/a/b/"},
		{give: "/a/b/.x", want: "/a/b/.x"},
		{give: "/a/b..", want: "/a/b.."},
		{give: "/./", want: "/"},
		{give: "/a/b/../c", want: "/a/c"},
		{give: "/a/..", want: "/"},
		{give: "/a/b/../../c/", want: "/c/"},
		{give: "/a/./../b", want: "/b"},
		{give: "/..a/b../x..", want: "/..a/b../x.."},
		{give: "/a/b/..//", want: "/a/"},
		{give: "/.../x", want: "/.../x"},
		{give: "/a\\..\\b", want: "/a\\..\\b"}, // a backslash is a file name byte
		{give: "", wantErr: ErrBadPath},
		{give: "a/b", wantErr: ErrBadPath},
		{give: "../etc", wantErr: ErrBadPath},
		{give: "/a\x00b", wantErr: ErrBadPath},
		{give: "/..", wantErr: ErrBadPath},
		{give: "/../../etc/passwd", wantErr: ErrBadPath},
		{give: "/a/../../b/", wantErr: ErrBadPath},
		{give: "//a/./../../b", wantErr: ErrBadPath},
		{give: "/index.php\x00.jpg", wantErr: ErrBadPath},
	}
	for _, tt := range tests {
		got, err := CleanPath(tt.give)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("CleanPath(%q) = %q, %v; want error %v", tt.give, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q, nil", tt.give, got, err, tt.want)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "", "a", "/a/b/", "//a//b", "/./", "/../..", "/a/../../b/",
		"/a\x00b", "/.../..", "/a/b/..//", "/%2e%2e/", "/a/./b/../../c/./", "/0/.", "/a/b/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := CleanPath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("CleanPath(%q) error %v; want ErrBadPath", in, err)
			}
			if strings.HasPrefix(in, "/") && !strings.Contains(in, "\x00") && !climbsAbove(in) {
				t.Fatalf("CleanPath(%q) = %v; want no error for an absolute path without NUL or climb", in, err)
			}
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("CleanPath(%q) = %q; want a leading /", in, got)
		}
		if strings.Contains(got, "\x00") || strings.Contains(got, "//") {
			t.Fatalf("CleanPath(%q) = %q; has a NUL or //", in, got)
		}
		for _, el := range strings.Split(got, "/") {
			if el == ".." || el == "." {
				t.Fatalf("CleanPath(%q) = %q; has a %q element", in, got, el)
			}
		}
		// A last "/", "." or ".." names a directory: the slash stays.
		dir := strings.HasSuffix(in, "/") || strings.HasSuffix(in, "/.") || strings.HasSuffix(in, "/..")
		if dir != strings.HasSuffix(got, "/") && got != "/" {
			t.Fatalf("CleanPath(%q) = %q; trailing slash not kept", in, got)
		}
		again, err := CleanPath(got)
		if err != nil || again != got {
			t.Fatalf("CleanPath(%q) = %q, %v; want %q, nil (idempotent)", got, again, err, got)
		}
	})
}

// climbsAbove is the fuzz test's own answer to "does a .. of p go above /".
func climbsAbove(p string) bool {
	var stack []string
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "", ".":
		case "..":
			if len(stack) == 0 {
				return true
			}
			stack = stack[:len(stack)-1]
		default:
			stack = append(stack, el)
		}
	}
	return false
}

func TestReleasePath(t *testing.T) {
	tests := []struct {
		root, name, want string
	}{
		{"/srv/app/releases/A/public", "/index.php", "/srv/app/releases/A/public/index.php"},
		{"/srv/app/releases/A/public", "/", "/srv/app/releases/A/public/"},
		{"/srv/app/releases/A/public", "/css/", "/srv/app/releases/A/public/css/"},
		{"/", "/index.php", "/index.php"},
	}
	for _, tt := range tests {
		r := &Release{Root: tt.root}
		if got := r.Path(tt.name); got != tt.want {
			t.Errorf("Release{Root: %q}.Path(%q) = %q; want %q", tt.root, tt.name, got, tt.want)
		}
	}
}

func TestOpen(t *testing.T) {
	d := newDeployment(t)
	tmp := filepath.Dir(d.app)
	writeFile(t, filepath.Join(d.a, "index.php"), "<?php echo 'A';")
	writeFile(t, filepath.Join(d.app, "shared", "storage", "app", "logo.png"), "png")
	writeFile(t, filepath.Join(tmp, "app2", "secret"), "sibling")
	writeFile(t, filepath.Join(tmp, "outside", "secret"), "outside")
	// Deployer/Capistrano: public/storage -> ../../../shared/storage/app
	symlink(t, "../../../shared/storage/app", filepath.Join(d.a, "storage"))
	symlink(t, "../../../shared/storage/app/logo.png", filepath.Join(d.a, "logo.png"))
	symlink(t, "../../B/public", filepath.Join(d.a, "other-release"))
	writeFile(t, filepath.Join(d.b, "b.txt"), "B")
	symlink(t, filepath.Join(tmp, "app2", "secret"), filepath.Join(d.a, "sibling"))
	symlink(t, "../../../../app2", filepath.Join(d.a, "sibling-dir"))
	symlink(t, filepath.Join(tmp, "outside"), filepath.Join(d.a, "outside"))
	symlink(t, "/etc/passwd", filepath.Join(d.a, "passwd"))

	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Current()
	tests := []struct {
		name    string
		give    string
		want    string // content
		wantErr error
	}{
		{name: "file in the release", give: "/index.php", want: "<?php echo 'A';"},
		{name: "shared storage dir link", give: "/storage/logo.png", want: "png"},
		{name: "shared file link", give: "/logo.png", want: "png"},
		{name: "other release (caveat: inside the deploy dir)", give: "/other-release/b.txt", want: "B"},
		{name: "sibling of the deploy dir", give: "/sibling", wantErr: ErrOutside},
		{name: "sibling dir", give: "/sibling-dir/secret", wantErr: ErrOutside},
		{name: "outside dir", give: "/outside/secret", wantErr: ErrOutside},
		{name: "etc passwd", give: "/passwd", wantErr: ErrOutside},
		{name: "missing", give: "/nope.php", wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.give == "/passwd" {
				if _, err := os.Stat("/etc/passwd"); err != nil {
					t.Skip("no /etc/passwd here")
				}
			}
			f, fi, err := r.Open(tt.give)
			if tt.wantErr != nil {
				if f != nil {
					f.Close()
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Open(%q) error = %v; want %v", tt.give, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q) error = %v; want nil", tt.give, err)
			}
			defer f.Close()
			b, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("Open(%q) content = %q; want %q", tt.give, b, tt.want)
			}
			if fi.Size() != int64(len(tt.want)) || fi.IsDir() {
				t.Errorf("Open(%q) FileInfo size %d dir %v; want %d, false", tt.give, fi.Size(), fi.IsDir(), len(tt.want))
			}
		})
	}

	// Stat follows links without the check: it only says what is there.
	if fi, err := r.Stat("/storage/logo.png"); err != nil || fi.Size() != 3 {
		t.Errorf("Stat(/storage/logo.png) = %v, %v; want size 3", fi, err)
	}
}

func TestBelow(t *testing.T) {
	tests := []struct {
		p, dir string
		want   bool
	}{
		{"/srv/app", "/srv/app", true},
		{"/srv/app/x", "/srv/app", true},
		{"/srv/app2", "/srv/app", false},
		{"/srv/app2/x", "/srv/app", false},
		{"/srv", "/srv/app", false},
		{"/etc/passwd", "/", true},
	}
	for _, tt := range tests {
		if got := below(tt.p, tt.dir); got != tt.want {
			t.Errorf("below(%q, %q) = %v; want %v", tt.p, tt.dir, got, tt.want)
		}
	}
}
