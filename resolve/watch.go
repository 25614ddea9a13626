package resolve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Run watches the root until ctx is done (fsnotify on the parent directory of
// every symlinked component, plus polling if configured) and switches the
// current release when the root resolves elsewhere. It returns nil when ctx
// is done, or an error if watching cannot start at all.
//
// The symlinks themselves are never watched: inotify follows them. While the
// root does not resolve it is re-checked every RetryInterval. If a watched
// directory disappears, Run carries on with the retry and the poll and
// watches it again once the root resolves. If fsnotify cannot start, Run
// polls only when PollInterval is set, and returns the error otherwise.
func (rs *Releases) Run(ctx context.Context) error {
	var w *fsnotify.Watcher
	if !rs.noWatch {
		var err error
		w, err = fsnotify.NewWatcher()
		if err != nil {
			if rs.poll <= 0 {
				return fmt.Errorf("watch %s: %w", rs.root, err)
			}
			rs.log.Warn("cannot watch root; polling only",
				zap.String("root", rs.root), zap.Error(err))
			w = nil
		}
	}
	l := &watchLoop{rs: rs, w: w, added: map[string]os.FileInfo{}, ctx: ctx}
	defer l.close()

	// The release checks run beside the loop: a walk of a large release
	// never delays a switch, let alone a request.
	rs.checkq.push(rs.Current(), rs.checkOpts.Load().Off)
	var wg sync.WaitGroup
	defer wg.Wait()
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		rs.runChecks(cctx)
	}()

	l.run(ctx)
	return nil
}

// What made the watch loop call Refresh, for Stats.
type source int

const (
	fromStart source = iota
	fromWatch
	fromPoll
	fromRetry
)

// watchLoop is the state of one Run. Only Run's goroutine touches it.
type watchLoop struct {
	ctx   context.Context // Run's: it bounds Options.Prepare
	rs    *Releases
	w     *fsnotify.Watcher      // nil when polling only
	added map[string]os.FileInfo // directories watched now: their Stat when added
	watch map[string][]string
}

func (l *watchLoop) run(ctx context.Context) {
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
		pollC  <-chan time.Time
	)
	if l.w != nil {
		events, errs = l.w.Events, l.w.Errors
	}
	if l.rs.poll > 0 {
		t := time.NewTicker(l.rs.poll)
		defer t.Stop()
		pollC = t.C
	}
	retry := time.NewTimer(l.rs.retry)
	retry.Stop()
	defer retry.Stop()
	armed := false

	l.refresh(fromStart) // catches a switch between New and the first watch
	for {
		if l.rs.down.Load() && !armed {
			retry.Reset(l.rs.retry)
			armed = true
		}
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // the watcher died: the retry and poll carry on
				continue
			}
			if l.relevant(ev) {
				l.refresh(fromWatch)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// inotify drops events past its queue; the switch may
				// be among them.
				l.refresh(fromWatch)
				continue
			}
			l.rs.log.Warn("watch error", zap.String("root", l.rs.root), zap.Error(err))
		case <-retry.C:
			armed = false
			if l.rs.down.Load() {
				l.refresh(fromRetry)
			}
		case <-pollC:
			if l.rs.down.Load() || l.changed() || l.stale() {
				l.refresh(fromPoll)
			}
		}
	}
}

// refresh calls Refresh, then watches the directories of the new resolution.
// A change between the resolution and a new watch sends no event, so every
// new watch is followed by another Refresh (bounded: links may keep moving).
func (l *watchLoop) refresh(src source) {
	rs := l.rs
	for range 4 {
		wasDown := rs.down.Load()
		var hit *atomic.Uint64
		switch {
		case src == fromWatch:
			hit = &rs.watchHits
		case src == fromPoll && !(wasDown && l.w != nil):
			// While the root is down every tick refreshes, a retry: with
			// events, the end of an outage it finds first is no sign of a
			// missed one.
			hit = &rs.pollHits
		}
		rs.refresh(l.ctx, hit) // refresh logs the outage once
		if wasDown && !rs.down.Load() {
			// A watched directory may have been replaced while the root
			// was down; its old watch follows the old inode.
			l.unwatchAll()
		}
		if !l.sync() {
			return
		}
	}
}

// sync watches the directories of the last resolution and stops watching the
// others. It reports whether the caller must refresh again: it added a
// watch, or a directory of the resolution was replaced or is gone, so that
// no event may ever tell (the resolution is older than that change).
func (l *watchLoop) sync() bool {
	res := l.rs.resolution()
	l.watch = res.watch
	if l.w == nil {
		return false
	}
	again := false
	for dir, fi := range l.added {
		_, needed := res.watch[dir]
		replaced := needed && !sameDir(dir, fi)
		if !needed || replaced {
			// Not needed any more, or replaced at its path with no event
			// on the watch (an ancestor renamed, a mount over it): the
			// watch follows the old inode.
			_ = l.w.Remove(dir) // already gone if the directory was
			delete(l.added, dir)
			again = again || replaced
		}
	}
	for dir := range res.watch {
		if _, ok := l.added[dir]; ok {
			continue
		}
		// Stat first: should dir be replaced before the watch is added,
		// the identity kept is the old one, and the next sync re-adds it.
		fi, statErr := os.Stat(dir)
		if statErr != nil {
			fi = nil
		}
		if err := l.w.Add(dir); err != nil {
			again = again || errors.Is(err, fs.ErrNotExist)
			lvl := zap.WarnLevel
			if l.rs.down.Load() {
				lvl = zap.DebugLevel // expected mid-deploy; retried
			}
			l.rs.log.Log(lvl, "cannot watch directory",
				zap.String("dir", dir), zap.Error(err))
			continue
		}
		l.added[dir] = fi
		again = true
	}
	return again
}

// stale reports whether a watched directory is no longer the one watched.
func (l *watchLoop) stale() bool {
	for dir, fi := range l.added {
		if !sameDir(dir, fi) {
			return true
		}
	}
	return false
}

// sameDir reports whether dir is still the directory fi is the Stat of.
func sameDir(dir string, fi os.FileInfo) bool {
	now, err := os.Stat(dir)
	return err == nil && fi != nil && os.SameFile(now, fi)
}

// unwatchAll drops every watch, for sync to add them again.
func (l *watchLoop) unwatchAll() {
	for dir := range l.added {
		_ = l.w.Remove(dir)
		delete(l.added, dir)
	}
}

// relevant reports whether ev may change what the root resolves to.
func (l *watchLoop) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	if _, ok := l.added[ev.Name]; ok && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		// A watched directory itself went away: fsnotify dropped its
		// watch. sync watches the new one once the root resolves.
		delete(l.added, ev.Name)
		return true
	}
	return slices.Contains(l.watch[filepath.Dir(ev.Name)], filepath.Base(ev.Name))
}

// changed polls the last resolution: one readlink per symlink and one stat
// of the root's real path (a directory replaced in place keeps every link),
// compared with what was seen then.
func (l *watchLoop) changed() bool {
	res := l.rs.resolution()
	for _, ln := range res.links {
		if target, err := os.Readlink(ln.path); err != nil || target != ln.target {
			return true
		}
	}
	fi, err := os.Stat(res.real)
	return err != nil || !os.SameFile(fi, res.dir)
}

// close stops the watcher and waits for its goroutine.
func (l *watchLoop) close() {
	if l.w != nil {
		_ = l.w.Close()
	}
}
