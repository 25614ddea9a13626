package main

// From a review of the tooling: the demo's --dir and a taken port.

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"realroot/internal/phpfpmtest"
)

// TestDemoRelativeDir: `realroot demo --dir site` (a path relative to
// the working directory, as help.go documents --dir DIR) must get past the
// configuration check, not fail with `root: "site/current/public" is not an
// absolute path`. /bin/false stands in for php-fpm: it exits at once, so the
// demo stops right after the configuration was accepted.
func TestDemoRelativeDir(t *testing.T) {
	if _, err := os.Stat("/bin/false"); err != nil {
		t.Skip("no /bin/false")
	}
	t.Chdir(t.TempDir())
	var stdout, stderr syncBuffer
	err := demo([]string{"--dir", "site", "--listen", "127.0.0.1:0", "--php-fpm", "/bin/false"},
		&stdout, &stderr, make(chan os.Signal))
	if err == nil {
		t.Fatalf("demo with /bin/false as php-fpm returned nil; want php-fpm's exit")
	}
	if errors.As(err, new(*usageError)) {
		t.Fatalf("demo --dir site = usage error %q; want the relative dir accepted", err)
	}
	if _, err := os.Lstat(filepath.Join("site", "current")); err != nil {
		t.Errorf("site/current not created in the working directory: %v", err)
	}
}

// TestDemoPortInUse: with the demo's port taken (make demo always
// asks for 127.0.0.1:8080), the error says how to pick another one, and
// php-fpm is stopped.
func TestDemoPortInUse(t *testing.T) {
	bin, err := phpfpmtest.Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", err)
		}
		t.Skip(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir, err := os.MkdirTemp("", "rrdemo")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var stdout, stderr syncBuffer
	err = demo([]string{"--dir", dir, "--listen", ln.Addr().String(), "--php-fpm", bin},
		&stdout, &stderr, make(chan os.Signal))
	if err == nil {
		t.Fatalf("demo on a taken port returned nil")
	}
	for _, want := range []string{"address already in use", "--listen", "DEMO_FLAGS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("demo on a taken port: error %q; want it to contain %q", err, want)
		}
	}
	if !strings.Contains(stderr.String(), "php-fpm stopped") {
		t.Errorf("php-fpm not stopped after the listen error; log:\n%s", stderr.String())
	}
}
