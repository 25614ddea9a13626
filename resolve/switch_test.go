package resolve

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSwitchAtomic: a reader stat'ing and reading the link in a tight loop
// never finds it missing while Switch flips it 200 times.
func TestSwitchAtomic(t *testing.T) {
	d := newDeployment(t)
	stop := make(chan struct{})
	var reads, misses atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err1 := os.Stat(d.current)
			_, err2 := os.Readlink(d.current)
			reads.Add(1)
			if err := errors.Join(err1, err2); err != nil {
				misses.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	}()
	for i := range 200 {
		target := filepath.Join(d.app, "releases", []string{"B", "A"}[i%2])
		if err := Switch(d.current, target); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("switch %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if n := misses.Load(); n > 0 {
		t.Fatalf("%d of %d reads failed during 200 switches; first: %v", n, reads.Load(), firstErr.Load())
	}
	if got, err := os.Readlink(d.current); err != nil || got != "releases/A" {
		t.Fatalf("link = %q, %v; want releases/A", got, err)
	}
	ents, _ := os.ReadDir(d.app)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary link %s left behind", e.Name())
		}
	}
}

func TestSwitch(t *testing.T) {
	d := newDeployment(t)
	other := realpath(t, t.TempDir())
	writeFile(t, filepath.Join(d.app, "releases", "file"), "x")
	mkdir(t, filepath.Join(d.app, "dir"))
	tests := []struct {
		name       string
		link, give string
		wantLink   string // what the link holds after; empty when an error is wanted
		wantErr    string
	}{
		{name: "relative below the link's dir", link: d.current, give: filepath.Join(d.app, "releases", "B"), wantLink: "releases/B"},
		{name: "elsewhere: absolute", link: d.current, give: other, wantLink: other},
		{name: "new link", link: filepath.Join(d.app, "next"), give: filepath.Join(d.app, "releases", "A"), wantLink: "releases/A"},
		{name: "not a directory", link: d.current, give: filepath.Join(d.app, "releases", "file"), wantErr: "is not a directory"},
		{name: "missing target", link: d.current, give: filepath.Join(d.app, "releases", "Z"), wantErr: "no such file"},
		{name: "through the link", link: d.current, give: filepath.Join(d.current, "public"), wantErr: "through the link itself"},
		{name: "the link itself", link: d.current, give: d.current, wantErr: "through the link itself"},
		{name: "link is a directory", link: filepath.Join(d.app, "dir"), give: filepath.Join(d.app, "releases", "A"), wantErr: "not a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.Readlink(tt.link)
			err := Switch(tt.link, tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Switch(%s, %s) = %v; want an error with %q", tt.link, tt.give, err, tt.wantErr)
				}
				if after, _ := os.Readlink(tt.link); after != before {
					t.Fatalf("link changed from %q to %q on error", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("Switch(%s, %s) = %v", tt.link, tt.give, err)
			}
			if got, err := os.Readlink(tt.link); err != nil || got != tt.wantLink {
				t.Fatalf("link holds %q, %v; want %q", got, err, tt.wantLink)
			}
		})
	}
	if fi, err := os.Lstat(filepath.Join(d.app, "dir")); err != nil || !fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
		t.Errorf("the directory in the way was touched: %v, %v", fi, err)
	}
}

// TestSwitchSeenByRun: a Switch is one event for the watch, and one switch.
func TestSwitchSeenByRun(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	if err := Switch(d.current, filepath.Join(d.app, "releases", "B")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the switch to B", func() bool { return rs.Current().Root == d.b })
	if s := rs.Stats(); s.Switches != 1 || s.ResolveFailures != 0 {
		t.Errorf("Stats() = %+v; want 1 switch, no resolve failure", s)
	}
}
