package resolve

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPinUnpinCounts(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Current()
	steps := []struct {
		pin  bool
		want int64
	}{{true, 1}, {true, 2}, {true, 3}, {false, 2}, {true, 3}, {false, 2}, {false, 1}, {false, 0}}
	for i, s := range steps {
		if s.pin {
			if got := rs.Pin(); got != r {
				t.Fatalf("step %d: Pin() = gen %d; want gen %d", i, got.Gen, r.Gen)
			}
		} else {
			r.Unpin()
		}
		if got := r.InFlight(); got != s.want {
			t.Fatalf("step %d: InFlight() = %d; want %d", i, got, s.want)
		}
	}
	if isClosed(r.Drained()) {
		t.Errorf("current release drained; want not drained")
	}
}

func TestUnpinWithoutPinPanics(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Current()
	for _, superseded := range []bool{false, true} {
		if superseded {
			flipAtomic(t, "releases/B", d.current)
			if _, err := rs.Refresh(); err != nil {
				t.Fatal(err)
			}
		}
		func() {
			defer func() {
				msg, _ := recover().(string)
				if !strings.Contains(msg, "without a matching Pin") {
					t.Errorf("superseded=%v: Unpin without Pin: recovered %q; want a panic about a matching Pin", superseded, msg)
				}
			}()
			r.Unpin()
		}()
		if got := r.InFlight(); got != 0 {
			t.Errorf("superseded=%v: InFlight() after the panic = %d; want 0", superseded, got)
		}
	}
}

func TestDrain(t *testing.T) {
	d := newDeployment(t)
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a := rs.Current()
	p1, p2 := rs.Pin(), rs.Pin()

	flipAtomic(t, "releases/B", d.current)
	switched, err := rs.Refresh()
	if !switched || err != nil {
		t.Fatalf("Refresh() = %v, %v; want true, nil", switched, err)
	}
	b := rs.Current()
	if b.Root != d.b || b.Gen != 2 {
		t.Fatalf("Current() = %q gen %d; want %q gen 2", b.Root, b.Gen, d.b)
	}
	if got := rs.Pin(); got != b {
		t.Fatalf("Pin() after the switch = gen %d; want gen 2", got.Gen)
	}
	b.Unpin()
	if n := logs.FilterMessage("release switched").Len(); n != 1 {
		t.Errorf("%d release switched logs; want 1", n)
	}

	s := rs.Snapshot()
	if s.Current.Gen != 2 || len(s.Draining) != 1 || s.Draining[0].Gen != 1 || s.Draining[0].InFlight != 2 {
		t.Fatalf("Snapshot() = %+v; want current gen 2, draining gen 1 with 2 in flight", s)
	}
	if s.Draining[0].Until.IsZero() || !s.Current.Until.IsZero() {
		t.Errorf("Until: draining %v, current %v; want set, zero", s.Draining[0].Until, s.Current.Until)
	}

	p1.Unpin()
	if isClosed(a.Drained()) {
		t.Fatalf("release drained with 1 request in flight")
	}
	p2.Unpin()
	if !isClosed(a.Drained()) {
		t.Fatalf("release not drained after its last Unpin")
	}
	s = rs.Snapshot()
	if len(s.Draining) != 0 || len(s.Drained) != 1 || s.Drained[0].Gen != 1 || s.Drained[0].DrainedAt.IsZero() {
		t.Fatalf("Snapshot() = %+v; want no draining, drained gen 1", s)
	}
	drained := logs.FilterMessage("release drained").All()
	if len(drained) != 1 {
		t.Fatalf("%d release drained logs; want 1", len(drained))
	}
	f := drained[0].ContextMap()
	if f["release"] != d.a || f["gen"] != uint64(1) {
		t.Errorf("release drained fields = %v; want release %q gen 1", f, d.a)
	}
	for _, k := range []string{"served", "drain"} {
		if v, ok := f[k].(time.Duration); !ok || v < 0 {
			t.Errorf("release drained %s = %v; want a duration >= 0", k, f[k])
		}
	}
}

func TestDrainedAtOnce(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, KeepDrained: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seen []*Release
	for i, target := range []string{"releases/B", "releases/A", "releases/B", "releases/A"} {
		seen = append(seen, rs.Current())
		flipAtomic(t, target, d.current)
		if switched, err := rs.Refresh(); !switched || err != nil {
			t.Fatalf("flip %d: Refresh() = %v, %v; want true, nil", i, switched, err)
		}
		if prev := seen[len(seen)-1]; !isClosed(prev.Drained()) {
			t.Fatalf("flip %d: gen %d with nothing in flight not drained at the switch", i, prev.Gen)
		}
	}
	if got := rs.Current().Gen; got != 5 {
		t.Errorf("Current().Gen = %d; want 5", got)
	}
	s := rs.Snapshot()
	var gens []uint64
	for _, in := range s.Drained {
		gens = append(gens, in.Gen)
	}
	if len(gens) != 2 || gens[0] != 4 || gens[1] != 3 {
		t.Errorf("Snapshot().Drained gens = %v; want [4 3] (KeepDrained 2, newest first)", gens)
	}
}

func TestRefreshNoChange(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	// Same realpath through another spelling of the link: no switch.
	flipAtomic(t, filepath.Join(d.app, "releases", "A"), d.current)
	if switched, err := rs.Refresh(); switched || err != nil {
		t.Fatalf("Refresh() = %v, %v; want false, nil", switched, err)
	}
	if got := rs.Current().Gen; got != 1 {
		t.Errorf("Current().Gen = %d; want 1", got)
	}
	if got := rs.resolution().links[0].target; got != filepath.Join(d.app, "releases", "A") {
		t.Errorf("recorded link target = %q; want the new spelling", got)
	}
}

func TestRefreshDirReplacedInPlace(t *testing.T) {
	root := filepath.Join(realpath(t, t.TempDir()), "site")
	mkdir(t, root)
	rs, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	// mv site site.old && cp -a new site
	if err := os.Rename(root, root+".old"); err != nil {
		t.Fatal(err)
	}
	mkdir(t, root)
	switched, err := rs.Refresh()
	if !switched || err != nil {
		t.Fatalf("Refresh() = %v, %v; want true, nil", switched, err)
	}
	if got := rs.Current(); got.Root != root || got.Gen != 2 {
		t.Errorf("Current() = %q gen %d; want %q gen 2", got.Root, got.Gen, root)
	}
}

func TestPinStress(t *testing.T) {
	d := newDeployment(t)
	log, logs := observed()
	rs, err := New(Options{Root: d.root, Logger: log, KeepDrained: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	all := []*Release{rs.Current()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := rs.Pin()
				if n := r.InFlight(); n < 1 {
					t.Errorf("InFlight() of a pinned release = %d; want >= 1", n)
				}
				r.Unpin()
			}
		})
	}
	for range 2 { // Refresh is safe to call concurrently with itself
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := rs.Refresh(); err != nil {
					t.Errorf("concurrent Refresh() = %v; want nil", err)
				}
			}
		})
	}
	targets := []string{"releases/B", "releases/A"}
	for i := 0; time.Since(all[0].Since) < 700*time.Millisecond; i++ {
		flipAtomic(t, targets[i%2], d.current)
		if _, err := rs.Refresh(); err != nil {
			t.Fatal(err)
		}
		all = append(all, rs.Current())
	}
	close(stop)
	wg.Wait()

	cur := rs.Current()
	if uint64(len(all)) != cur.Gen {
		t.Fatalf("%d releases seen, current gen %d; want one generation per flip", len(all), cur.Gen)
	}
	if len(all) < 10 {
		t.Fatalf("only %d releases in the stress; want at least 10", len(all))
	}
	for _, r := range all {
		if n := r.InFlight(); n != 0 {
			t.Errorf("gen %d: InFlight() = %d; want 0", r.Gen, n)
		}
		if r == cur {
			continue
		}
		if !isClosed(r.Drained()) {
			t.Errorf("gen %d: superseded and idle but not drained", r.Gen)
		}
	}
	s := rs.Snapshot()
	if len(s.Draining) != 0 || len(s.Drained) != len(all)-1 {
		t.Errorf("Snapshot(): %d draining, %d drained; want 0, %d", len(s.Draining), len(s.Drained), len(all)-1)
	}
	if n := logs.FilterMessage("release drained").Len(); n != len(all)-1 {
		t.Errorf("%d release drained logs; want %d (once per superseded release)", n, len(all)-1)
	}
}

func BenchmarkPin(b *testing.B) {
	rs, err := New(Options{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		rs.Pin().Unpin()
	}
}

func BenchmarkPinParallel(b *testing.B) {
	rs, err := New(Options{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rs.Pin().Unpin()
		}
	})
}
