package resolve

import (
	"context"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// startRun runs rs.Run until the test ends, and fails the test if Run does
// not return nil promptly once cancelled. It returns once Run has resolved
// and watched the root (its first two checks).
func startRun(t *testing.T, rs *Releases) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- rs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run() = %v; want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	testutil.WaitFor(t, "Run to start watching", func() bool { return rs.checks.Load() >= 2 })
	// The second check has begun; wait for it to end, or a switch the test
	// makes next may be found by it (fromStart), not by the watch.
	rs.mu.Lock()
	rs.mu.Unlock()
}

func TestRunSwitch(t *testing.T) {
	tests := []struct {
		name string
		flip func(t *testing.T, d deployment, rs *Releases)
	}{{
		name: "atomic rename",
		flip: func(t *testing.T, d deployment, rs *Releases) {
			flipAtomic(t, "releases/B", d.current)
		},
	}, {
		name: "unlink then symlink",
		flip: func(t *testing.T, d deployment, rs *Releases) {
			if err := os.Remove(d.current); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })
			if got := rs.Current(); got == nil || got.Root != d.a || got.Gen != 1 {
				t.Fatalf("Current() during the gap = %+v; want %q gen 1", got, d.a)
			}
			if got := rs.Pin(); got.Root != d.a {
				t.Fatalf("Pin() during the gap = %q; want %q", got.Root, d.a)
			} else {
				got.Unpin()
			}
			symlink(t, "releases/B", d.current)
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDeployment(t)
			// No poll, and a retry too slow to matter: only events can
			// make the switch within the wait.
			rs, err := New(Options{Root: d.root, RetryInterval: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			startRun(t, rs)
			tt.flip(t, d, rs)
			testutil.WaitFor(t, "the switch to B", func() bool { return rs.Current().Root == d.b })
			if got := rs.Current().Gen; got != 2 {
				t.Errorf("Current().Gen = %d; want 2", got)
			}
			if got := rs.Stats(); got.Switches != 1 || got.WatchDetections != 1 || got.PollDetections != 0 {
				t.Errorf("Stats() = %+v; want 1 switch, 1 watch detection, 0 poll", got)
			}
		})
	}
}

func TestRunWarnsOnce(t *testing.T) {
	d := newDeployment(t)
	log, logs := observed()
	rs, err := New(Options{Root: d.root, RetryInterval: 2 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	if err := os.Remove(d.current); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })
	from := rs.checks.Load()
	testutil.WaitFor(t, "ten retries", func() bool { return rs.checks.Load() >= from+10 })

	warns := logs.FilterMessage("root does not resolve; serving last good release").All()
	if len(warns) != 1 {
		t.Fatalf("%d warnings after 10+ failed checks; want 1", len(warns))
	}
	if f := warns[0].ContextMap(); f["root"] != d.root || f["release"] != d.a || f["error"] == nil {
		t.Errorf("warning fields = %v; want root %q, release %q, error", f, d.root, d.a)
	}

	symlink(t, "releases/B", d.current)
	testutil.WaitFor(t, "the switch to B", func() bool { return rs.Current().Root == d.b })
	again := logs.FilterMessage("root resolves again").All()
	if len(again) != 1 {
		t.Fatalf("%d root resolves again logs; want 1", len(again))
	}
	if dt, _ := again[0].ContextMap()["downtime"].(time.Duration); dt <= 0 {
		t.Errorf("downtime = %v; want > 0", dt)
	}
	if n := logs.FilterMessage("root does not resolve; serving last good release").Len(); n != 1 {
		t.Errorf("%d warnings in all; want 1", n)
	}
	if got := rs.Stats().ResolveFailures; got != 1 {
		t.Errorf("Stats().ResolveFailures = %d; want 1", got)
	}
}

func TestRunPollOnly(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, PollInterval: 5 * time.Millisecond, RetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rs.noWatch = true // as on NFS: no event ever comes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- rs.Run(ctx) }()
	testutil.WaitFor(t, "Run to start", func() bool { return rs.checks.Load() >= 1 })

	flipAtomic(t, "releases/B", d.current)
	testutil.WaitFor(t, "the poll to see the flip to B", func() bool { return rs.Current().Root == d.b })

	// Unlink and symlink: the poll sees the link gone, then keeps
	// re-checking (the retry is a minute away) until it is back.
	if err := os.Remove(d.current); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })
	symlink(t, "releases/A", d.current)
	testutil.WaitFor(t, "the poll to see the flip to A", func() bool { return rs.Current().Root == d.a })
	// A switch and its detection are counted just after the release is
	// made current.
	testutil.WaitFor(t, "the second switch counted", func() bool {
		st := rs.Stats()
		return st.Switches == 2 && st.PollDetections+st.WatchDetections == 2
	})

	if got := rs.Stats(); got.Switches != 2 || got.PollDetections != 2 || got.WatchDetections != 0 {
		t.Errorf("Stats() = %+v; want 2 switches, 2 poll detections, 0 watch", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run() = %v; want nil", err)
	}
}

// TestRunPollDirReplaced: with no events (NFS), the poll sees the link's
// target directory replaced in place, every link unchanged.
func TestRunPollDirReplaced(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, PollInterval: 5 * time.Millisecond, RetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rs.noWatch = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- rs.Run(ctx) }()
	testutil.WaitFor(t, "Run to start", func() bool { return rs.checks.Load() >= 1 })

	gen := rs.Current().Gen
	relA := filepath.Dir(d.a)
	if err := os.Rename(relA, relA+".old"); err != nil {
		t.Fatal(err)
	}
	mkdir(t, d.a)
	testutil.WaitFor(t, "the poll to see releases/A replaced", func() bool { return rs.Current().Gen > gen })
	if got := rs.Current(); got.Root != d.a || rs.Stats().PollDetections != 1 {
		t.Errorf("current = %s, stats %+v; want the new %s, 1 poll detection", got.Root, rs.Stats(), d.a)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run() = %v; want nil", err)
	}
}

func TestRunWatchedDirReplaced(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, RetryInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)

	// The watched directory itself goes: mv app app.old, then a new app.
	if err := os.Rename(d.app, d.app+".old"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })
	c := filepath.Join(d.app, "releases", "C", "public")
	mkdir(t, c, filepath.Join(d.app, "releases", "D", "public"))
	symlink(t, "releases/C", d.current)
	testutil.WaitFor(t, "the retry to find C", func() bool { return rs.Current().Root == c })

	// The root resolves, so no retry runs: only a watch on the new app
	// directory can see this flip.
	flipAtomic(t, "releases/D", d.current)
	d2 := filepath.Join(d.app, "releases", "D", "public")
	testutil.WaitFor(t, "the watch on the new directory to see D", func() bool { return rs.Current().Root == d2 })
}

func TestRunWatchesNewLinks(t *testing.T) {
	d := newDeployment(t)
	web1, web2 := filepath.Join(d.app, "shared", "web1"), filepath.Join(d.app, "shared", "web2")
	mkdir(t, web1, web2, filepath.Join(d.app, "releases", "C"))
	symlink(t, "../../shared/web1", filepath.Join(d.app, "releases", "C", "public"))
	rs, err := New(Options{Root: d.root, RetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)

	// Release C's public is itself a link: a new directory to watch.
	flipAtomic(t, "releases/C", d.current)
	testutil.WaitFor(t, "the switch to C", func() bool { return rs.Current().Root == web1 })
	flipAtomic(t, "../../shared/web2", filepath.Join(d.app, "releases", "C", "public"))
	testutil.WaitFor(t, "the inner link flip to web2", func() bool { return rs.Current().Root == web2 })
	if got := rs.Stats().WatchDetections; got != 2 {
		t.Errorf("Stats().WatchDetections = %d; want 2", got)
	}
}

func TestRunStops(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, PollInterval: time.Millisecond, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- rs.Run(ctx) }()
	testutil.WaitFor(t, "Run to start watching", func() bool { return rs.checks.Load() >= 2 })
	if err := os.Remove(d.current); err != nil { // leave the retry timer armed
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestSyncAfterWatchedDirMoved: a refresh resolves the root, then, before
// its sync, the watched directory is moved away (mv app app.old). sync
// drops the watch, which follows the old inode, and cannot watch the path
// again: no event will ever come. It must ask for another refresh, which
// sees the outage (and arms the retry); before, TestRunWatchedDirReplaced
// timed out waiting for the outage now and then in CI.
func TestSyncAfterWatchedDirMoved(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	l := &watchLoop{rs: rs, w: w, added: map[string]os.FileInfo{}, ctx: context.Background()}
	if !l.sync() {
		t.Fatal("the first sync added no watch")
	}
	if err := os.Rename(d.app, d.app+".old"); err != nil {
		t.Fatal(err)
	}
	// The resolution sync reads is the one from before the move.
	if l.sync() {
		return
	}
	t.Errorf("sync after the watched %s moved away asks for no refresh; watched now: %v", d.app, l.added)
}
