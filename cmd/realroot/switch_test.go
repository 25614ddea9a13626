package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"realroot/internal/testutil"
	"realroot/resolve"
)

// TestSwitchAtomic: a reader stat'ing and reading the link in a tight loop
// never finds it missing while `realroot switch` runs 200 times.
func TestSwitchAtomic(t *testing.T) {
	dir := makeDeploy(t, "A", "B")
	link := filepath.Join(dir, "current")
	var stop atomic.Bool
	var reads, misses atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			_, err1 := os.Stat(link)
			_, err2 := os.Readlink(link)
			reads.Add(1)
			if err := errors.Join(err1, err2); err != nil {
				misses.Add(1)
				first.CompareAndSwap(nil, err)
			}
		}
	}()
	for i := range 200 {
		target := filepath.Join(dir, "releases", []string{"B", "A"}[i%2])
		if out, err := runCmd(switchRelease, target, "--link", link); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("switch %d: %v\n%s", i, err, out)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := misses.Load(); n > 0 {
		t.Fatalf("%d of %d reads of the link failed during 200 switches; first: %v", n, reads.Load(), first.Load())
	}
	if got, _ := os.Readlink(link); got != "releases/A" {
		t.Fatalf("link = %q; want releases/A", got)
	}
}

func TestSwitchErrors(t *testing.T) {
	dir := makeDeploy(t, "A", "B")
	link := filepath.Join(dir, "current")
	if err := os.WriteFile(filepath.Join(dir, "releases", "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{name: "not a directory", args: []string{filepath.Join(dir, "releases", "file")}, want: "is not a directory"},
		{name: "no argument", args: []string{"--link", link}, want: "want one RELEASE_DIR", usage: true},
		{name: "no link beside", args: []string{t.TempDir()}, want: "give the link to switch with --link", usage: true},
		{name: "wait without admin", args: []string{filepath.Join(dir, "releases", "B"), "--wait"}, want: "--wait needs --admin", usage: true},
		{name: "server unreachable", args: []string{filepath.Join(dir, "releases", "B"), "--wait", "--admin", "127.0.0.1:1"}, want: "cannot ask the server; not switching"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCmd(switchRelease, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("switch %q = %v\n%s; want an error with %q", tt.args, err, out, tt.want)
			}
			if got := errors.As(err, new(*usageError)); got != tt.usage {
				t.Errorf("usage error = %v; want %v", got, tt.usage)
			}
			if got, _ := os.Readlink(link); got != "releases/A" {
				t.Errorf("link = %q after a failed switch; want releases/A", got)
			}
		})
	}
	// The default link: "current" beside the release's parent.
	if out, err := runCmd(switchRelease, filepath.Join(dir, "releases", "B")); err != nil || out != link+" -> releases/B\n" {
		t.Fatalf("switch without --link = %v, %q; want %s -> releases/B", err, out, link)
	}
}

// TestSwitchWait: --wait returns once the server serves the new release
// and the slow request still running on the old one is done.
func TestSwitchWait(t *testing.T) {
	d := startDeployServer(t, resolve.Options{}, "A", "B")
	gate := filepath.Join(t.TempDir(), "gate")
	slow := d.slow(t, gate)

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	var out syncBuffer
	go func() {
		err := switchRelease([]string{filepath.Join(d.dir, "releases", "B"), "--wait", "--timeout", "20s"},
			func(k string) string { return map[string]string{"REALROOT_ADMIN": d.adminAddr()}[k] },
			&out, &out, noSignals)
		done <- result{out.String(), err}
	}()
	testutil.WaitFor(t, "switch to see the server serve B", func() bool { return strings.Contains(out.String(), "the server serves") })
	if got := d.page(t, "/"); got != "B" {
		t.Fatalf("GET / = %q; want B", got)
	}
	select {
	case r := <-done:
		t.Fatalf("switch --wait returned while a request was in flight on A: %v\n%s", r.err, r.out)
	case <-time.After(300 * time.Millisecond):
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := <-slow; got != "A" {
		t.Errorf("slow request = %q; want A", got)
	}
	r := <-done
	relA, relB := filepath.Join(d.dir, "releases", "A"), filepath.Join(d.dir, "releases", "B")
	if r.err != nil || !strings.Contains(r.out, "the server serves "+relB+" (gen 2)") ||
		!strings.Contains(r.out, "the previous release "+relA+" (gen 1) drained") {
		t.Fatalf("switch --wait = %v\n%s", r.err, r.out)
	}

	// Already served: nothing to wait for.
	if out, err := runCmd(switchRelease, relB, "--wait", "--admin", d.adminAddr()); err != nil || !strings.Contains(out, "already serves") {
		t.Fatalf("switch --wait to the current release = %v\n%s", err, out)
	}
}

// TestSwitchWaitTimeout: --wait fails, saying why, when the old release
// does not drain in time.
func TestSwitchWaitTimeout(t *testing.T) {
	d := startDeployServer(t, resolve.Options{}, "A", "B")
	gate := filepath.Join(t.TempDir(), "gate")
	slow := d.slow(t, gate)
	defer func() {
		os.WriteFile(gate, nil, 0o644)
		<-slow
	}()
	out, err := runCmd(switchRelease, filepath.Join(d.dir, "releases", "B"), "--wait", "--admin", d.adminAddr(), "--timeout", "500ms")
	if err == nil || !strings.Contains(err.Error(), "timed out after 500ms") || !strings.Contains(err.Error(), "still has 1 in flight") {
		t.Fatalf("switch --wait = %v\n%s; want a timeout with 1 in flight", err, out)
	}
	if !strings.Contains(out, "the server serves") {
		t.Errorf("output lacks the switch:\n%s", out)
	}
}
