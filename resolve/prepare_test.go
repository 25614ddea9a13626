package resolve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestReleaseDir(t *testing.T) {
	d := newDeployment(t)
	web := filepath.Join(d.app, "shared", "web")
	mkdir(t, web, filepath.Join(d.app, "releases", "C"))
	symlink(t, "../../shared/web", filepath.Join(d.app, "releases", "C", "public"))
	// releases/ itself a link (to another disk), and an alias of the site.
	data, site := filepath.Join(d.app, "data"), filepath.Join(d.app, "site")
	mkdir(t, filepath.Join(data, "releases", "X", "public"), site)
	symlink(t, "../data/releases", filepath.Join(site, "releases"))
	symlink(t, "releases/X", filepath.Join(site, "current"))
	alias := filepath.Join(d.app, "alias")
	symlink(t, site, alias)
	tests := []struct {
		name, root, flip string
		wantRoot         string
		wantDir          string
	}{
		{name: "link to the release", root: d.root, wantRoot: d.a, wantDir: filepath.Join(d.app, "releases", "A")},
		{name: "root is the link", root: d.current, wantRoot: filepath.Join(d.app, "releases", "A"), wantDir: filepath.Join(d.app, "releases", "A")},
		{name: "no link", root: d.b, wantRoot: d.b, wantDir: d.b},
		{name: "public is a link too", root: d.root, flip: "releases/C", wantRoot: web, wantDir: web},
		// Not the releases directory itself: on-drain is handed Dir.
		{name: "releases is a link", root: filepath.Join(site, "current", "public"),
			wantRoot: filepath.Join(data, "releases", "X", "public"), wantDir: filepath.Join(data, "releases", "X")},
		{name: "through an alias of the site", root: filepath.Join(alias, "current", "public"),
			wantRoot: filepath.Join(data, "releases", "X", "public"), wantDir: filepath.Join(data, "releases", "X")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.flip != "" {
				flipAtomic(t, tt.flip, d.current)
				defer flipAtomic(t, "releases/A", d.current)
			}
			rs, err := New(Options{Root: tt.root})
			if err != nil {
				t.Fatal(err)
			}
			r := rs.Current()
			if r.Root != tt.wantRoot || r.Dir != tt.wantDir {
				t.Errorf("Root, Dir = %q, %q; want %q, %q", r.Root, r.Dir, tt.wantRoot, tt.wantDir)
			}
			if got := rs.Snapshot().Current.Dir; got != tt.wantDir {
				t.Errorf("Snapshot().Current.Dir = %q; want %q", got, tt.wantDir)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	d := newDeployment(t)
	var rs *Releases
	var calls []string
	rs, err := New(Options{Root: d.root, Prepare: func(ctx context.Context, next *Release) error {
		cur := rs.Pin()
		defer cur.Unpin()
		if cur.Root != d.a || cur.Gen != 1 {
			t.Errorf("Pin() during Prepare = %q gen %d; want %q gen 1", cur.Root, cur.Gen, d.a)
		}
		calls = append(calls, next.Root)
		time.Sleep(20 * time.Millisecond)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	flipAtomic(t, "releases/B", d.current)
	before := time.Now()
	if switched, err := rs.Refresh(); !switched || err != nil {
		t.Fatalf("Refresh() = %v, %v; want true, nil", switched, err)
	}
	b := rs.Current()
	if len(calls) != 1 || calls[0] != d.b {
		t.Fatalf("Prepare calls = %q; want [%q]", calls, d.b)
	}
	if b.Root != d.b || b.Gen != 2 {
		t.Fatalf("Current() = %q gen %d; want %q gen 2", b.Root, b.Gen, d.b)
	}
	if b.Since.Sub(before) < 20*time.Millisecond {
		t.Errorf("Since = %v after Refresh began; want after Prepare returned (>= 20ms)", b.Since.Sub(before))
	}
	if switched, _ := rs.Refresh(); switched || len(calls) != 1 {
		t.Errorf("Refresh() without a change: switched %v, %d Prepare calls; want false, 1", switched, len(calls))
	}
}

func TestPrepareFails(t *testing.T) {
	errWarm := errors.New("warm-up: GET / = 500")
	for _, keep := range []bool{true, false} {
		t.Run(map[bool]string{true: "keep", false: "switch anyway"}[keep], func(t *testing.T) {
			d := newDeployment(t)
			log, logs := observed()
			fail := true
			rs, err := New(Options{
				Root:               d.root,
				Logger:             log,
				KeepOnPrepareError: keep,
				Prepare: func(context.Context, *Release) error {
					if fail {
						return errWarm
					}
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			a := rs.Current()
			flipAtomic(t, "releases/B", d.current)
			switched, err := rs.Refresh()
			if got := rs.Stats().PrepareFailures; got != 1 {
				t.Errorf("Stats().PrepareFailures = %d; want 1", got)
			}
			if !keep {
				if !switched || err != nil || rs.Current().Root != d.b {
					t.Fatalf("Refresh() = %v, %v, current %q; want true, nil, %q", switched, err, rs.Current().Root, d.b)
				}
				if n := logs.FilterMessage("release prepare failed; switching anyway").Len(); n != 1 {
					t.Errorf("%d warnings; want 1", n)
				}
				return
			}
			if switched || !errors.Is(err, errWarm) {
				t.Fatalf("Refresh() = %v, %v; want false and an error wrapping %v", switched, err, errWarm)
			}
			if got := rs.Pin(); got != a {
				t.Fatalf("Pin() after a failed prepare = %q gen %d; want %q gen 1", got.Root, got.Gen, d.a)
			} else {
				got.Unpin()
			}
			if isClosed(a.Drained()) || rs.Stats().Switches != 0 {
				t.Fatalf("the kept release drained, or a switch was counted")
			}
			w := logs.FilterMessage("release prepare failed; keeping current release").All()
			if len(w) != 1 || w[0].ContextMap()["release"] != d.b || w[0].ContextMap()["current_release"] != d.a {
				t.Fatalf("warnings = %v; want one naming %q and %q", w, d.b, d.a)
			}
			// The next change is tried again.
			fail = false
			flipAtomic(t, "releases/B", d.current)
			if switched, err := rs.Refresh(); !switched || err != nil {
				t.Fatalf("Refresh() after the next change = %v, %v; want true, nil", switched, err)
			}
			if got := rs.Current(); got.Root != d.b || got.Gen != 2 {
				t.Fatalf("Current() = %q gen %d; want %q gen 2", got.Root, got.Gen, d.b)
			}
		})
	}
}

func TestOnDrain(t *testing.T) {
	d := newDeployment(t)
	var mu sync.Mutex
	var got []Info
	rs, err := New(Options{Root: d.root, OnDrain: func(i Info) {
		mu.Lock()
		got = append(got, i)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	drained := func() []Info {
		mu.Lock()
		defer mu.Unlock()
		return append([]Info(nil), got...)
	}
	p := rs.Pin() // a request on A across two switches
	flipAtomic(t, "releases/B", d.current)
	rs.Refresh()
	flipAtomic(t, "releases/A", d.current)
	rs.Refresh() // B had nothing in flight: drained at once
	if g := drained(); len(g) != 1 || g[0].Gen != 2 || g[0].Root != d.b || g[0].DrainedAt.IsZero() {
		t.Fatalf("OnDrain calls = %+v; want one for gen 2 (%s) with DrainedAt", g, d.b)
	}
	p.Unpin()
	g := drained()
	if len(g) != 2 || g[1].Gen != 1 || g[1].Root != d.a || g[1].Dir != filepath.Dir(d.a) || g[1].InFlight != 0 {
		t.Fatalf("OnDrain calls = %+v; want gen 2, then gen 1 (%s) with nothing in flight", g, d.a)
	}
	rs.Refresh()
	if n := len(drained()); n != 2 {
		t.Errorf("%d OnDrain calls after a Refresh with no change; want 2", n)
	}
}

func TestDownSince(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.DownSince(); !got.IsZero() {
		t.Fatalf("DownSince() = %v while the root resolves; want zero", got)
	}
	before := time.Now()
	if err := os.Remove(d.current); err != nil {
		t.Fatal(err)
	}
	rs.Refresh()
	if got := rs.DownSince(); got.Before(before) || !rs.Snapshot().DownSince.Equal(got) {
		t.Fatalf("DownSince() = %v, Snapshot().DownSince = %v; want both at or after %v", got, rs.Snapshot().DownSince, before)
	}
	symlink(t, "releases/B", d.current)
	rs.Refresh()
	if got := rs.DownSince(); !got.IsZero() {
		t.Fatalf("DownSince() = %v after it resolves again; want zero", got)
	}
}
