// Tests of a third review of the release checks (checks.go): each fails on
// the code as reviewed, for the reason its comment gives.

package resolve

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckWrittenDuringWalkNotFuture: the walk compares every mtime
// with the time the walk began (plus 1s), not with the time it stats the
// file. A walk may last up to MaxTime (10s); a file written while it runs
// (the warm-up, which runs at the same time, compiling Twig or Blade
// templates into the release's var/cache; a log file) has an mtime in the
// past when it is seen, yet is reported as "modified in the future". Here
// the walk began 3s ago (as a long walk of a large release did) and meets
// a file written 1s ago.
func TestCheckWrittenDuringWalkNotFuture(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "var", "cache", "twig", "ab", "template.php")
	writeFile(t, f, "<?php")
	written := time.Now().Add(-time.Second)
	if err := os.Chtimes(f, written, written); err != nil {
		t.Fatal(err)
	}
	w := walker{opts: CheckOptions{}.withDefaults(), dir: dir, start: time.Now().Add(-3 * time.Second)}
	w.walk(context.Background())
	if w.future.count != 0 {
		t.Errorf("a file modified 1s ago, met 3s into the walk, is reported with a future mtime (%v, latest %v); it is in the past",
			w.future.examples, w.latest)
	}
}

// TestCheckUnreadableDirComplete: when realroot itself cannot read a
// directory of the release (realroot runs as its own user; php-fpm, as
// www-data, can), walk skips it silently ("as php-fpm would fail on it
// too", which is not so: they are different users) and the check logs
// "complete": true, with no warning: a file with a future mtime below it is
// missed and nothing says the check was partial. The walk runs in a child
// process as nobody; the directory is root's, mode 0700 (php-fpm's user
// could be its owner).
func TestCheckUnreadableDirComplete(t *testing.T) {
	if rel := os.Getenv("RR_REVIEW3_RELEASE"); rel != "" {
		log, logs := observed()
		rs, err := New(Options{Root: rel, Logger: log})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(2)
		}
		rs.checkRelease(context.Background(), rs.Current())
		future := logs.FilterMessage("release has files with a future mtime").Len()
		complete := false
		for _, e := range logs.FilterMessage("release checked").All() {
			complete, _ = e.ContextMap()["complete"].(bool)
		}
		fmt.Printf("RESULT future_warnings=%d complete=%v\n", future, complete)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the check as another user")
	}
	base, err := os.MkdirTemp("", "rr-review3-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary, where nobody can run it.
	bin := filepath.Join(base, "resolve.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	src.Close()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join(base, "app")
	writeFile(t, filepath.Join(rel, "index.php"), "<?php")
	future := time.Now().Add(time.Hour)
	cached := filepath.Join(rel, "var", "cache", "container.php")
	writeFile(t, cached, "<?php")
	if err := os.Chtimes(cached, future, future); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(rel, "var"), 0o700); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-test.run=^TestCheckUnreadableDirComplete$", "-test.count=1")
	cmd.Env = append(os.Environ(), "RR_REVIEW3_RELEASE="+rel)
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var warnings int
	var complete bool
	i := strings.Index(string(out), "RESULT ")
	if i < 0 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if _, err := fmt.Sscanf(string(out[i:]), "RESULT future_warnings=%d complete=%t", &warnings, &complete); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if warnings == 0 && complete {
		t.Errorf("check of a release with a directory realroot cannot read (var/, holding a file dated an hour ahead): no future-mtime warning and \"complete\": true; want the file reported, or complete false")
	}
}
