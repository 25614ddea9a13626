// Regression tests of a review of the package (2026-11-22): each failed
// before its fix.

package resolve

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunWatchDirReplacedAbove: the watched directory (the one holding the
// current link) is replaced at its path with no event on its watch, as when
// an ancestor is swapped (mv srv srv.old && mv srv.new srv) or a volume is
// mounted over it. The poll sees the change; the watch must then follow the
// new directory, so that the next flip is an event. Before the fix, sync
// trusted its record by path and the watch stayed on the old inode.
func TestRunWatchDirReplacedAbove(t *testing.T) {
	tmp := realpath(t, t.TempDir())
	build := func(top string) {
		app := filepath.Join(top, "app")
		mkdir(t, filepath.Join(app, "releases", "A", "public"), filepath.Join(app, "releases", "B", "public"))
		symlink(t, "releases/A", filepath.Join(app, "current"))
	}
	srv := filepath.Join(tmp, "srv")
	build(srv)
	rs, err := New(Options{
		Root:          filepath.Join(srv, "app", "current", "public"),
		PollInterval:  300 * time.Millisecond,
		RetryInterval: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)

	build(srv + ".new")
	// Swap the trees. Holding rs.mu keeps the poll (changed takes it via
	// resolution) and Refresh out for the two renames: no gap is seen.
	rs.mu.Lock()
	err1 := os.Rename(srv, srv+".old")
	err2 := os.Rename(srv+".new", srv)
	rs.mu.Unlock()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the poll to see the new tree", func() bool { return rs.Current().Gen == 2 })
	before := rs.Stats()

	// The watch moves to the new directory just after the switch to gen 2
	// (the flip may land in between, and then goes to the poll); the
	// second flip is long after, and a watch on the old inode would never
	// see either.
	app := filepath.Join(srv, "app")
	for _, rel := range []string{"B", "A"} {
		flipAtomic(t, "releases/"+rel, filepath.Join(app, "current"))
		want := filepath.Join(app, "releases", rel, "public")
		testutil.WaitFor(t, "the switch to "+rel, func() bool { return rs.Current().Root == want })
	}
	after := rs.Stats()
	if got := after.WatchDetections - before.WatchDetections; got < 1 {
		t.Errorf("two flips in the replaced watched directory: %d watch detections, %d poll detections; want a watch detection (the watch still follows the old inode in srv.old)",
			got, after.PollDetections-before.PollDetections)
	}
}

// mutexWaiter reports whether a goroutine whose stack names fn is parked in
// sync.Mutex.Lock.
func mutexWaiter(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}

// TestSnapshotDuringSwitch: a Snapshot taken while refresh switches
// (forced: it queues on listMu first) shows the old release, which has a
// request in flight, either current or draining. Before the fix, refresh
// stored the new release before it listed the old one, outside listMu, and
// such a Snapshot listed it nowhere: a prune tool reading /status would
// delete it.
func TestSnapshotDuringSwitch(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	a := rs.Pin() // a request in flight on A
	flipAtomic(t, "releases/B", d.current)

	rs.listMu.Lock()
	snap := make(chan Snapshot, 1)
	go func() { snap <- rs.Snapshot() }()
	testutil.WaitFor(t, "Snapshot to queue on listMu", func() bool { return mutexWaiter("(*Releases).Snapshot(") })
	refreshed := make(chan error, 1)
	go func() { _, err := rs.Refresh(); refreshed <- err }()
	// refresh stores B, then queues on listMu behind Snapshot.
	testutil.WaitFor(t, "refresh to queue on listMu", func() bool { return mutexWaiter("(*Releases).refresh(") })
	rs.listMu.Unlock()

	s := <-snap
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	defer a.Unpin()
	if s.Current.Gen == 1 {
		return // consistent: the switch is not visible yet
	}
	var seen bool
	for _, in := range append(s.Draining, s.Drained...) {
		if in.Gen == 1 {
			seen = true
		}
	}
	if !seen {
		t.Errorf("Snapshot() = current gen 2, draining %+v, drained %+v; gen 1 (%s) has %d request in flight but is in no list",
			s.Draining, s.Drained, a.Root, a.InFlight())
	}
}

// TestOpenFIFONotOpened: a link in a release to a FIFO outside it is
// refused with ErrOutside without being opened. Before the fix, Open opened
// the file first and checked where it lay afterwards: open(2) blocked until
// a writer came.
func TestOpenFIFONotOpened(t *testing.T) {
	d := newDeployment(t)
	fifo := filepath.Join(filepath.Dir(d.app), "outside.fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	symlink(t, fifo, filepath.Join(d.a, "pipe"))
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Current()
	done := make(chan error, 1)
	go func() {
		f, _, err := r.Open("/pipe")
		if f != nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrOutside) {
			t.Errorf("Open(/pipe) error = %v; want ErrOutside", err)
		}
	case <-time.After(2 * time.Second):
		// Unblock it: a writer lets the reader's open(2) return.
		w, werr := os.OpenFile(fifo, os.O_WRONLY, 0)
		err := <-done
		if werr == nil {
			w.Close()
		}
		t.Errorf("Open(/pipe), a link to a FIFO outside the release, blocked in open(2) for 2s (until a writer came; then it returned %v); want ErrOutside without opening it", err)
	}
}

// TestDeployDirOfAlias: when the last symlink of the root is an alias above
// the site (/var/www -> /data/www, /lib -> usr/lib) rather than a deploy
// link, its directory is not the deploy directory: a link in the docroot to
// /var/backups/..., or with the alias in /, to anything, is ErrOutside, as
// with the root given by its realpath.
func TestDeployDirOfAlias(t *testing.T) {
	tmp := realpath(t, t.TempDir())
	site := filepath.Join(tmp, "data", "www", "site")
	mkdir(t, site, filepath.Join(tmp, "var"))
	symlink(t, "../data/www", filepath.Join(tmp, "var", "www")) // /var/www -> /data/www
	secret := filepath.Join(tmp, "var", "backups", "db.sql")
	writeFile(t, secret, "DROP TABLE users;")
	symlink(t, secret, filepath.Join(site, "dump.sql"))

	for _, root := range []string{site, filepath.Join(tmp, "var", "www", "site")} {
		t.Run(strings.TrimPrefix(root, tmp), func(t *testing.T) {
			rs, err := New(Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			f, _, err := rs.Current().Open("/dump.sql")
			if f != nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Errorf("New(%q).Open(/dump.sql) served %q from %s (deploy dir %s); want ErrOutside: it is outside the site", root, b, secret, rs.Current().base)
				return
			}
			if !errors.Is(err, ErrOutside) {
				t.Errorf("Open(/dump.sql) error = %v; want ErrOutside", err)
			}
		})
	}

	// With the alias in / (merged-usr /lib -> usr/lib here), the deploy
	// directory is / and nothing is outside.
	t.Run("/lib/ssl", func(t *testing.T) {
		if fi, err := os.Lstat("/lib"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Skip("/lib is not a symlink here")
		}
		if target, err := os.Readlink("/usr/lib/ssl/openssl.cnf"); err != nil || !strings.HasPrefix(target, "/etc/") {
			t.Skip("no /usr/lib/ssl/openssl.cnf -> /etc/... here")
		}
		rs, err := New(Options{Root: "/lib/ssl"})
		if err != nil {
			t.Fatal(err)
		}
		f, _, err := rs.Current().Open("/openssl.cnf")
		if f != nil {
			f.Close()
			t.Errorf("New(/lib/ssl).Open(/openssl.cnf) opened /etc/ssl/openssl.cnf (deploy dir %q); want ErrOutside", rs.Current().base)
			return
		}
		if !errors.Is(err, ErrOutside) {
			t.Errorf("Open(/openssl.cnf) error = %v; want ErrOutside", err)
		}
	})
}

// TestSwitchThroughAlias: a target reached through another alias of the
// link (html -> app/current) is refused. Before the fix the check was
// lexical, the alias was stored, and the link pointed at itself (ELOOP).
func TestSwitchThroughAlias(t *testing.T) {
	d := newDeployment(t)
	tmp := filepath.Dir(d.app)
	ext := filepath.Join(tmp, "ext", "releases", "A")
	mkdir(t, filepath.Join(ext, "public"))
	flipAtomic(t, ext, d.current) // current -> /abs/ext/releases/A
	alias := filepath.Join(tmp, "html")
	symlink(t, d.current, alias) // html -> app/current

	err := Switch(d.current, alias)
	if err != nil {
		return // refused: fine
	}
	if _, err := os.Stat(d.current); err != nil {
		target, _ := os.Readlink(d.current)
		t.Errorf("Switch(%s, %s) = nil, but the link now holds %q and does not resolve: %v; want the target refused (it is reached through the link)", d.current, alias, target, err)
	}
}

// TestOpenPinnedToDirectory: a request pinned to a release whose directory
// is then replaced at its path (a copy deploy: mv site site.old && cp -a new
// site) opens the pinned directory's file, as its Stat sees it. Before the
// fix Open went by path, and one request mixed two releases.
func TestOpenPinnedToDirectory(t *testing.T) {
	root := filepath.Join(realpath(t, t.TempDir()), "site")
	writeFile(t, filepath.Join(root, "app.js"), "old")
	rs, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Pin()
	defer r.Unpin()

	if err := os.Rename(root, root+".old"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "app.js"), "new release")
	if switched, err := rs.Refresh(); !switched || err != nil {
		t.Fatalf("Refresh() = %v, %v; want true, nil", switched, err)
	}

	sfi, err := r.Stat("/app.js")
	if err != nil {
		t.Fatal(err)
	}
	f, fi, err := r.Open("/app.js")
	if err != nil {
		t.Fatalf("Open(/app.js) of the pinned release = %v; want its file", err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if string(b) != "old" || !SameFile(sfi, fi) {
		t.Errorf("gen %d (pinned) Stat(/app.js) size %d, but Open read %q (size %d, same file %v) from gen %d's directory; want the pinned release's file",
			r.Gen, sfi.Size(), b, fi.Size(), SameFile(sfi, fi), rs.Current().Gen)
	}
}

// TestRunOutageEndNotPollDetection: with events, the end of an unlink +
// symlink outage found by a poll tick (forced: the tick's refresh waits on
// rs.mu while the link comes back) is not a poll detection, which Stats
// documents to mean missed events.
func TestRunOutageEndNotPollDetection(t *testing.T) {
	d := newDeployment(t)
	rs, err := New(Options{Root: d.root, PollInterval: 20 * time.Millisecond, RetryInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, rs)
	if err := os.Remove(d.current); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the outage to be seen", func() bool { return rs.Stats().ResolveFailures == 1 })

	rs.mu.Lock()
	// Down, no event pending, retry a minute away: the next thing the loop
	// handles is a poll tick, whose refresh now waits for rs.mu.
	testutil.WaitFor(t, "a poll refresh to wait on rs.mu", func() bool { return mutexWaiter("(*watchLoop).refresh(") })
	symlink(t, "releases/B", d.current) // the CREATE event is sent
	rs.mu.Unlock()

	testutil.WaitFor(t, "the switch to B", func() bool { return rs.Current().Root == d.b })
	testutil.WaitFor(t, "the switch counted", func() bool { return rs.Stats().Switches == 1 })
	if st := rs.Stats(); st.PollDetections != 0 {
		t.Errorf("Stats() = %+v after an unlink+symlink whose events all arrived; want 0 poll detections (documented to mean missed events)", st)
	}
}

// TestOpenFIFOInside: a FIFO inside the release is refused, not opened (an
// open(2) for reading would block until a writer came).
func TestOpenFIFOInside(t *testing.T) {
	d := newDeployment(t)
	if err := syscall.Mkfifo(filepath.Join(d.a, "pipe"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	rs, err := New(Options{Root: d.root})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, _, err := rs.Current().Open("/pipe")
		if f != nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Open(/pipe) error = %v; want fs.ErrPermission", err)
		}
	case <-time.After(2 * time.Second):
		w, werr := os.OpenFile(filepath.Join(d.a, "pipe"), os.O_WRONLY, 0)
		<-done
		if werr == nil {
			w.Close()
		}
		t.Errorf("Open(/pipe), a FIFO in the release, blocked in open(2); want fs.ErrPermission without opening it")
	}
}
