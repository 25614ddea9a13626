package resolve

import (
	"errors"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestNew(t *testing.T) {
	d := newDeployment(t)
	tmp := filepath.Dir(d.app)
	mkdir(t, filepath.Join(tmp, "site"), filepath.Join(tmp, "www"))
	symlink(t, "../app/current", filepath.Join(tmp, "www", "site"))
	symlink(t, "current", filepath.Join(d.app, "previous"))
	symlink(t, filepath.Join(d.app, "releases", "B"), filepath.Join(d.app, "abs"))

	tests := []struct {
		name      string
		give      string
		wantRoot  string
		wantBase  string
		wantLinks []string
		wantWatch map[string][]string
	}{{
		name:      "plain dir",
		give:      filepath.Join(tmp, "site"),
		wantRoot:  filepath.Join(tmp, "site"),
		wantBase:  filepath.Join(tmp, "site"),
		wantWatch: map[string][]string{tmp: {"site"}},
	}, {
		name:      "current link",
		give:      d.current,
		wantRoot:  filepath.Join(d.app, "releases", "A"),
		wantBase:  d.app,
		wantLinks: []string{d.current},
		wantWatch: map[string][]string{d.app: {"current", "releases"}},
	}, {
		name:      "link in the middle",
		give:      d.root,
		wantRoot:  d.a,
		wantBase:  d.app,
		wantLinks: []string{d.current},
		wantWatch: map[string][]string{d.app: {"current", "releases"}},
	}, {
		name:      "dot and trailing slash",
		give:      d.app + "/./current//public/",
		wantRoot:  d.a,
		wantBase:  d.app,
		wantLinks: []string{d.current},
		wantWatch: map[string][]string{d.app: {"current", "releases"}},
	}, {
		name:      "link to a link",
		give:      filepath.Join(d.app, "previous", "public"),
		wantRoot:  d.a,
		wantBase:  d.app,
		wantLinks: []string{filepath.Join(d.app, "previous"), d.current},
		wantWatch: map[string][]string{d.app: {"previous", "current", "releases"}},
	}, {
		name:      "absolute target",
		give:      filepath.Join(d.app, "abs", "public"),
		wantRoot:  d.b,
		wantBase:  d.app,
		wantLinks: []string{filepath.Join(d.app, "abs")},
		wantWatch: map[string][]string{d.app: {"abs", "releases"}},
	}, {
		name:      "nested links in two directories",
		give:      filepath.Join(tmp, "www", "site", "public"),
		wantRoot:  d.a,
		wantBase:  d.app,
		wantLinks: []string{filepath.Join(tmp, "www", "site"), d.current},
		wantWatch: map[string][]string{
			filepath.Join(tmp, "www"): {"site"},
			d.app:                     {"current", "releases"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := New(Options{Root: tt.give})
			if err != nil {
				t.Fatalf("New(%q): %v", tt.give, err)
			}
			r := rs.Current()
			if r.Root != tt.wantRoot {
				t.Errorf("Root = %q; want %q", r.Root, tt.wantRoot)
			}
			if want := realpath(t, tt.give); r.Root != want {
				t.Errorf("Root = %q; EvalSymlinks says %q", r.Root, want)
			}
			if r.base != tt.wantBase {
				t.Errorf("base = %q; want %q", r.base, tt.wantBase)
			}
			if r.Gen != 1 {
				t.Errorf("Gen = %d; want 1", r.Gen)
			}
			var links []string
			for _, l := range rs.res.links {
				links = append(links, l.path)
			}
			if !slices.Equal(links, tt.wantLinks) {
				t.Errorf("links = %q; want %q", links, tt.wantLinks)
			}
			if !maps.EqualFunc(rs.res.watch, tt.wantWatch, slices.Equal) {
				t.Errorf("watch = %q; want %q", rs.res.watch, tt.wantWatch)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	d := newDeployment(t)
	tmp := filepath.Dir(d.app)
	file := filepath.Join(tmp, "file")
	writeFile(t, file, "x")
	symlink(t, "../file", filepath.Join(d.app, "tofile"))
	symlink(t, "releases/X", filepath.Join(d.app, "dangling"))
	symlink(t, "loop2", filepath.Join(d.app, "loop1"))
	symlink(t, "loop1", filepath.Join(d.app, "loop2"))

	tests := []struct {
		name    string
		give    string
		wantErr string
		wantIs  error
	}{{
		name:    "missing root",
		give:    filepath.Join(tmp, "nope"),
		wantErr: "resolve " + tmp + "/nope: no such file or directory",
		wantIs:  fs.ErrNotExist,
	}, {
		name:    "dangling link",
		give:    filepath.Join(d.app, "dangling", "public"),
		wantErr: "resolve " + d.app + "/dangling/public: " + d.app + "/releases/X: no such file or directory",
		wantIs:  fs.ErrNotExist,
	}, {
		name:    "root is a file",
		give:    file,
		wantErr: "root " + file + " is not a directory",
	}, {
		name:    "root links to a file",
		give:    filepath.Join(d.app, "tofile"),
		wantErr: "root " + d.app + "/tofile resolves to " + file + ", which is not a directory",
	}, {
		name:    "file in the middle",
		give:    filepath.Join(file, "public"),
		wantErr: "resolve " + file + "/public: " + file + ": not a directory",
		wantIs:  syscall.ENOTDIR,
	}, {
		name:    "symlink loop",
		give:    filepath.Join(d.app, "loop1"),
		wantErr: "resolve " + d.app + "/loop1: too many levels of symbolic links",
		wantIs:  syscall.ELOOP,
	}, {
		name:    "empty",
		give:    "",
		wantErr: "resolve: root is empty",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := New(Options{Root: tt.give})
			if err == nil {
				t.Fatalf("New(%q) = %v, nil; want error %q", tt.give, rs.Current().Root, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("New(%q) error = %q; want %q", tt.give, err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false; want true", err, tt.wantIs)
			}
		})
	}
}
