package resolve

// From a review of the pinning promises: the link moves while a release is
// prepared. Each test failed before its fix.

import (
	"context"
	"errors"
	"testing"
)

// TestRollbackDuringPrepare: the link is switched to B, and while B is
// being prepared (warmed up) the operator rolls it back to A. Once Prepare
// returns, the root resolves to A again: B must not become current, since
// the link no longer names it (it would serve users a release they rolled
// back from, until A is prepared again, or for good if that fails). A,
// prepared again, is current (a new generation: Prepare may have moved its
// php-fpm pool on in managed mode).
func TestRollbackDuringPrepare(t *testing.T) {
	d := newDeployment(t)
	var (
		calls   []string
		b       *Release
		drained []string
	)
	rs, err := New(Options{Root: d.root, KeepOnPrepareError: true, OnDrain: func(i Info) { drained = append(drained, i.Root) }, Prepare: func(_ context.Context, next *Release) error {
		calls = append(calls, next.Root)
		if len(calls) == 1 {
			b = next
			flipAtomic(t, "releases/A", d.current) // the rollback, mid-warm-up
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := rs.Current()
	flipAtomic(t, "releases/B", d.current)
	if _, err := rs.Refresh(); err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	if got := rs.Current(); got.Root != a.Root {
		t.Fatalf("Current() after a rollback during B's warm-up = %q gen %d; want %q (the link points at A)", got.Root, got.Gen, a.Root)
	}
	if len(calls) != 2 || calls[1] != d.a {
		t.Errorf("Prepare calls = %q; want B then A", calls)
	}
	if snap := rs.Snapshot(); len(snap.Draining)+len(snap.Drained) != 1 || snap.Current.Gen != 2 {
		t.Errorf("Snapshot() = %+v; want A gen 2 current, A gen 1 superseded, B never current", snap)
	}
	// B, abandoned, lets what Prepare started for it go (a managed pool
	// waits on Drained), and is not reported drained: it never served.
	select {
	case <-b.Drained():
	default:
		t.Errorf("B's Drained() is open; want it closed, B abandoned")
	}
	for _, root := range drained {
		if root == b.Root {
			t.Errorf("OnDrain ran for B, which never served")
		}
	}
}

// TestSwitchDuringPrepare: while B is prepared the link moves on to C.
// B must not go live; C does, prepared.
func TestSwitchDuringPrepare(t *testing.T) {
	d := newDeployment(t)
	mkdir(t, d.app+"/releases/C/public")
	var calls []string
	rs, err := New(Options{Root: d.root, Prepare: func(_ context.Context, next *Release) error {
		calls = append(calls, next.Root)
		if len(calls) == 1 {
			flipAtomic(t, "releases/C", d.current)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	flipAtomic(t, "releases/B", d.current)
	if _, err := rs.Refresh(); err != nil {
		t.Fatalf("Refresh() = %v", err)
	}
	if got, want := rs.Current().Root, realpath(t, d.app+"/releases/C/public"); got != want {
		t.Fatalf("Current() = %q; want %q", got, want)
	}
	if len(calls) != 2 {
		t.Errorf("Prepare calls = %q; want B then C", calls)
	}
}

// TestRollbackPrepareFails: the link is rolled back to A while B is
// prepared, and A's prepare then fails (keep): B, prepared, goes live as
// before, and the warning says so rather than "keeping current release".
// The link still names A: the next refresh tries A again.
func TestRollbackPrepareFails(t *testing.T) {
	d := newDeployment(t)
	log, logs := observed()
	calls := 0
	rs, err := New(Options{Root: d.root, Logger: log, KeepOnPrepareError: true, Prepare: func(context.Context, *Release) error {
		calls++
		switch calls {
		case 1:
			flipAtomic(t, "releases/A", d.current)
		case 2:
			return errors.New("warm-up: GET / = 500")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	flipAtomic(t, "releases/B", d.current)
	if switched, err := rs.Refresh(); !switched || err != nil || rs.Current().Root != d.b {
		t.Fatalf("Refresh() = %v, %v, current %q; want B live", switched, err, rs.Current().Root)
	}
	w := logs.FilterMessage("release prepare failed; switching to the release prepared before it").All()
	if len(w) != 1 || w[0].ContextMap()["release"] != d.a || w[0].ContextMap()["prepared_release"] != d.b {
		t.Errorf("warnings = %v; want one naming A, and B as the one that goes live", logs.All())
	}
	if n := logs.FilterMessage("release prepare failed; keeping current release").Len(); n != 0 {
		t.Errorf("%d warnings \"keeping current release\"; want none: B goes live", n)
	}
	if switched, err := rs.Refresh(); !switched || err != nil || rs.Current().Root != d.a {
		t.Fatalf("the next Refresh() = %v, %v, current %q; want A, prepared again", switched, err, rs.Current().Root)
	}
}
