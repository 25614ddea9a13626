package resolve

import (
	"fmt"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
)

// waitLog waits until logs has an entry with message msg and returns them.
func waitLog(t *testing.T, logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("log %q", msg), func() bool { return logs.FilterMessage(msg).Len() > 0 })
	return logs.FilterMessage(msg).All()
}

func TestCheckFutureMtime(t *testing.T) {
	d := newDeployment(t)
	relB := filepath.Dir(d.b)
	writeFile(t, filepath.Join(d.a, "index.php"), "<?php")
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	var want []string
	for i := range 7 {
		name := filepath.Join("src", fmt.Sprintf("f%d.php", i))
		writeFile(t, filepath.Join(relB, name), "<?php")
		if err := os.Chtimes(filepath.Join(relB, name), future, future); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	writeFile(t, filepath.Join(d.b, "index.php"), "<?php") // now: fine

	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, RetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	testutil.WaitFor(t, "the check of A", func() bool { return logs.FilterMessage("release checked").Len() == 1 })
	flipAtomic(t, "releases/B", d.current)
	testutil.WaitFor(t, "the check of B", func() bool { return logs.FilterMessage("release checked").Len() == 2 })

	warns := logs.FilterMessage("release has files with a future mtime").All()
	if len(warns) != 1 {
		t.Fatalf("%d future mtime warnings; want 1 (for B only): %v", len(warns), warns)
	}
	f := warns[0].ContextMap()
	examples, _ := f["examples"].([]any)
	var got []string
	for _, e := range examples {
		got = append(got, e.(string))
	}
	if f["release"] != relB || f["count"] != int64(7) || len(got) != 5 || f["complete"] != true {
		t.Fatalf("warning fields = %v; want release %q, count 7, 5 examples, complete", f, relB)
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("example %q is not one of the future files %q", g, want)
		}
	}
	if lm, _ := f["latest_mtime"].(time.Time); !lm.Equal(future) {
		t.Errorf("latest_mtime = %v; want %v", f["latest_mtime"], future)
	}
}

func TestCheckLayout(t *testing.T) {
	d := newDeployment(t)
	writeFile(t, filepath.Join(d.a, "index.php"), "<?php")
	writeFile(t, filepath.Join(d.b, "app.php"), "<?php")
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, Checks: CheckOptions{
		FrontController: "/index.php",
		Index:           []string{"index.php", "index.html"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	flipAtomic(t, "releases/B", d.current)
	fc := waitLog(t, logs, "release has no front controller")
	idx := waitLog(t, logs, "release has no index file")
	if len(fc) != 1 || fc[0].ContextMap()["root"] != d.b || fc[0].ContextMap()["front_controller"] != "/index.php" {
		t.Errorf("front controller warnings = %v; want one for %q", fc, d.b)
	}
	if len(idx) != 1 || idx[0].ContextMap()["root"] != d.b {
		t.Errorf("index warnings = %v; want one for %q", idx, d.b)
	}
}

// TestCheckRoutingReload: after SetCheckRouting, a new release is checked
// against the new front controller and index, not those given to New.
func TestCheckRoutingReload(t *testing.T) {
	d := newDeployment(t)
	writeFile(t, filepath.Join(d.a, "index.php"), "<?php")
	writeFile(t, filepath.Join(d.b, "index.php"), "<?php")
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, Checks: CheckOptions{
		FrontController: "/index.php",
		Index:           []string{"index.php"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rs.SetCheckRouting("/app.php", []string{"home.html"}, nil)
	startRun(t, rs)
	flipAtomic(t, "releases/B", d.current)
	fc := waitLog(t, logs, "release has no front controller")
	idx := waitLog(t, logs, "release has no index file")
	if len(fc) == 0 || fc[len(fc)-1].ContextMap()["front_controller"] != "/app.php" {
		t.Errorf("front controller warnings = %v; want one for /app.php", fc)
	}
	if len(idx) == 0 || fmt.Sprint(idx[len(idx)-1].ContextMap()["index"]) != "[home.html]" {
		t.Errorf("index warnings = %v; want one for [home.html]", idx)
	}
}

func TestCheckPHPUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files another user cannot read")
	}
	d := newDeployment(t)
	// t.TempDir's directories are 0700: open them as php-fpm's would be.
	for _, dir := range []string{filepath.Dir(d.app), filepath.Dir(filepath.Dir(d.app))} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	relB := filepath.Dir(d.b)
	writeFile(t, filepath.Join(d.b, "index.php"), "<?php")             // 0644: readable
	writeFile(t, filepath.Join(d.b, "secret.php"), "<?php")            // 0600
	writeFile(t, filepath.Join(relB, "config", "db.php"), "<?php")     // in a 0700 dir
	writeFile(t, filepath.Join(relB, "config", "app.PHP"), "<?php")    // idem
	writeFile(t, filepath.Join(relB, "config", "notes.txt"), "secret") // not PHP
	if err := os.Chmod(filepath.Join(d.b, "secret.php"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(relB, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, Checks: CheckOptions{PHPUser: "65534"}})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	flipAtomic(t, "releases/B", d.current)
	w := waitLog(t, logs, "release has PHP files the php-fpm user cannot read")
	f := w[0].ContextMap()
	var got []string
	for _, e := range f["examples"].([]any) {
		got = append(got, e.(string))
	}
	slices.Sort(got)
	want := []string{"config/app.PHP", "config/db.php", "public/secret.php"}
	if len(w) != 1 || f["count"] != int64(3) || !slices.Equal(got, want) || f["php_user"] != "65534" {
		t.Fatalf("warnings = %v; want one with count 3, examples %q", w, want)
	}
}

func TestCheckUnknownUser(t *testing.T) {
	d := newDeployment(t)
	_, err := New(Options{Root: d.root, Checks: CheckOptions{PHPUser: "no-such-user-realroot"}})
	if err == nil || !strings.Contains(err.Error(), "no-such-user-realroot") {
		t.Fatalf("New() with an unknown php user = %v; want an error naming it", err)
	}
}

func TestCheckBounded(t *testing.T) {
	d := newDeployment(t)
	future := time.Now().Add(time.Hour)
	for i := range 100 {
		p := filepath.Join(d.b, fmt.Sprintf("f%03d.php", i))
		writeFile(t, p, "<?php")
		os.Chtimes(p, future, future)
	}
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, Checks: CheckOptions{MaxFiles: 20}})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	flipAtomic(t, "releases/B", d.current)
	w := waitLog(t, logs, "release has files with a future mtime")
	if f := w[0].ContextMap(); f["complete"] != false || f["count"].(int64) >= 20 {
		t.Errorf("warning fields = %v; want complete false and fewer than 20 files counted", f)
	}
	var done observer.LoggedEntry
	testutil.WaitFor(t, "release checked", func() bool {
		for _, e := range logs.FilterMessage("release checked").All() {
			if e.ContextMap()["release"] == filepath.Dir(d.b) {
				done = e
				return true
			}
		}
		return false
	})
	if done.Level.String() != "info" || done.ContextMap()["files"] != int64(21) {
		t.Errorf("release checked = %s %v; want info with files 21", done.Level, done.ContextMap())
	}
}

func TestChecksOff(t *testing.T) {
	d := newDeployment(t)
	future := time.Now().Add(time.Hour)
	p := filepath.Join(d.b, "f.php")
	writeFile(t, p, "<?php")
	os.Chtimes(p, future, future)
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, Checks: CheckOptions{Off: true, PHPUser: "no-such-user-realroot"}})
	if err != nil {
		t.Fatalf("New() with checks off = %v; want the php user not looked up", err)
	}
	startRun(t, rs)
	flipAtomic(t, "releases/B", d.current)
	testutil.WaitFor(t, "the switch to B", func() bool { return rs.Current().Root == d.b })
	time.Sleep(50 * time.Millisecond)
	if n := logs.FilterMessage("release checked").Len(); n != 0 {
		t.Errorf("%d releases checked with checks off; want 0", n)
	}
}
