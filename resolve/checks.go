package resolve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// CheckOptions configure the checks made on each new release (see
// Options.Checks). Each problem found is one warning with a count and a few
// examples, never one line per file. The checks never delay a switch or a
// request: they run on a goroutine of Run.
type CheckOptions struct {
	// Off disables the checks. False means they run.
	Off bool
	// FrontController, e.g. "/index.php": a release whose root lacks it is
	// reported. Empty means not checked.
	FrontController string
	// Index lists the directory index files, e.g. index.php, index.html: a
	// release whose root holds none of them is reported (its "/" would be
	// a 403). Nil means not checked.
	Index []string
	// PHPExtensions are the extensions, with their dot, of the scripts
	// whose readability is checked. Nil means ".php".
	PHPExtensions []string
	// PHPUser is php-fpm's pool user, a name or a numeric uid: PHP files it
	// cannot read, judged by their mode bits and those of the directories
	// above them (ACLs are not read), are reported. Empty means not
	// checked. New fails when it names no user.
	PHPUser string
	// MaxFiles bounds the directory entries one check walks; the rest of a
	// larger release is not checked. Zero means 100,000.
	MaxFiles int
	// MaxTime bounds one check's walk. Zero means 10s.
	MaxTime time.Duration
}

const (
	// maxExamples is how many file names a warning lists.
	maxExamples = 5
	// futureSlack is how far past the check's start an mtime may be before
	// it counts as in the future: clocks and timestamps are coarse.
	futureSlack = time.Second
)

// SetCheckRouting changes the files the checks look for, as a reload of
// the routing settings does: releases checked from now on are checked
// against frontController, index and phpExtensions (as in CheckOptions).
func (rs *Releases) SetCheckRouting(frontController string, index, phpExtensions []string) {
	o := *rs.checkOpts.Load()
	o.FrontController, o.Index, o.PHPExtensions = frontController, index, phpExtensions
	o = o.withDefaults()
	rs.checkOpts.Store(&o)
}

func (o CheckOptions) withDefaults() CheckOptions {
	if o.PHPExtensions == nil {
		o.PHPExtensions = []string{".php"}
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 100_000
	}
	if o.MaxTime <= 0 {
		o.MaxTime = 10 * time.Second
	}
	return o
}

// checkQueue holds the next release to check: the newest one wins, so a
// burst of switches checks the last release only.
type checkQueue struct {
	mu   sync.Mutex
	next *Release
	c    chan struct{} // one pending wake-up
}

// push queues r for checking, unless the checks are off.
func (q *checkQueue) push(r *Release, off bool) {
	if off {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next = r
	select {
	case q.wake() <- struct{}{}:
	default:
	}
}

// wake returns the wake-up channel; q.mu must be held.
func (q *checkQueue) wake() chan struct{} {
	if q.c == nil {
		q.c = make(chan struct{}, 1)
	}
	return q.c
}

func (q *checkQueue) wait() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wake()
}

func (q *checkQueue) pop() *Release {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.next
	q.next = nil
	return r
}

// runChecks checks every release queued until ctx is done.
func (rs *Releases) runChecks(ctx context.Context) {
	wake := rs.checkq.wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
			if r := rs.checkq.pop(); r != nil {
				rs.checkRelease(ctx, r)
			}
		}
	}
}

// finding counts the files with one problem and keeps a few examples.
type finding struct {
	count    int
	examples []string
}

func (f *finding) add(name string) {
	f.count++
	if len(f.examples) < maxExamples {
		f.examples = append(f.examples, name)
	}
}

// checkRelease checks rel and logs one warning per kind of problem found.
func (rs *Releases) checkRelease(ctx context.Context, rel *Release) {
	o := *rs.checkOpts.Load()
	log := rs.log.With(zap.String("release", rel.Dir), zap.Uint64("gen", rel.Gen))
	if fc := o.FrontController; fc != "" && !isRegular(rel.Path(fc)) {
		log.Warn("release has no front controller",
			zap.String("root", rel.Root), zap.String("front_controller", fc))
	}
	if len(o.Index) > 0 && !slices.ContainsFunc(o.Index, func(n string) bool { return isRegular(rel.Path(n)) }) {
		log.Warn("release has no index file",
			zap.String("root", rel.Root), zap.Strings("index", o.Index))
	}

	wctx, cancel := context.WithTimeout(ctx, o.MaxTime)
	defer cancel()
	w := walker{opts: o, user: rs.phpUser, dir: rel.Dir, start: time.Now()}
	complete := w.walk(wctx)
	if ctx.Err() != nil {
		return // Run stopped: nobody is waiting for the verdict
	}
	if w.future.count > 0 {
		log.Warn("release has files with a future mtime",
			zap.Int("count", w.future.count),
			zap.Strings("examples", w.future.examples),
			zap.Time("latest_mtime", w.latest),
			zap.Bool("complete", complete),
			zap.String("effect", "OPcache does not cache a file modified in the future (opcache.file_update_protection): PHP compiles it on every request until then"))
	}
	if w.unreadable.count > 0 {
		log.Warn("release has PHP files the php-fpm user cannot read",
			zap.String("php_user", o.PHPUser),
			zap.Int("count", w.unreadable.count),
			zap.Strings("examples", w.unreadable.examples),
			zap.Bool("complete", complete))
	}
	level := zap.DebugLevel
	if !complete {
		level = zap.InfoLevel
	}
	log.Log(level, "release checked",
		zap.Int("files", w.files),
		zap.Duration("duration", time.Since(w.start)),
		zap.Bool("complete", complete))
}

// walker is one walk of a release directory.
type walker struct {
	opts  CheckOptions
	user  *fileUser // nil: readability not checked
	dir   string
	start time.Time

	files      int
	future     finding
	latest     time.Time
	unreadable finding
	blocked    map[string]bool // directories the user cannot search, or below one
}

// walk walks w.dir, not following symlinks (a link to shared/ is not part
// of the release). It reports whether it saw every entry.
func (w *walker) walk(ctx context.Context) bool {
	limit := w.start.Add(futureSlack)
	w.blocked = map[string]bool{}
	if w.user != nil && !w.user.canReach(filepath.Dir(w.dir)) {
		w.blocked[filepath.Dir(w.dir)] = true
	}
	complete := true
	filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Unreadable by realroot, which need not be php-fpm's
			// user: what is below was not looked at.
			complete = false
			return nil
		}
		w.files++
		if w.files > w.opts.MaxFiles || w.files%256 == 0 && ctx.Err() != nil {
			complete = false
			return fs.SkipAll
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if w.user != nil && (w.blocked[filepath.Dir(p)] || !w.user.can(fi, 1)) {
				w.blocked[p] = true
			}
			return nil
		}
		name := strings.TrimPrefix(p, w.dir+"/")
		// Against the clock now too: the walk may last seconds (MaxTime),
		// beside a warm-up that writes into the release (compiled
		// templates), and a file written meanwhile is not in the future.
		if mt := fi.ModTime(); mt.After(limit) && mt.After(time.Now().Add(futureSlack)) {
			w.future.add(name)
			if mt.After(w.latest) {
				w.latest = mt
			}
		}
		if w.user != nil && hasExt(p, w.opts.PHPExtensions) && (w.blocked[filepath.Dir(p)] || !w.user.can(fi, 4)) {
			w.unreadable.add(name)
		}
		return nil
	})
	return complete
}

// fileUser is a user as far as file permissions go.
type fileUser struct {
	uid  uint32
	gids []uint32
}

// lookupUser finds a user by name or numeric uid. A uid that is not in the
// user database is used as is, with no group.
func lookupUser(s string) (*fileUser, error) {
	u, err := user.Lookup(s)
	if err != nil {
		if _, ok := errors.AsType[user.UnknownUserError](err); !ok {
			return nil, err
		}
		id, perr := strconv.ParseUint(s, 10, 32)
		if perr != nil {
			return nil, fmt.Errorf("%q: no such user", s)
		}
		u, err = user.LookupId(s)
		if err != nil {
			return &fileUser{uid: uint32(id)}, nil
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%q: uid %q is not a number", s, u.Uid)
	}
	fu := &fileUser{uid: uint32(uid)}
	gids, _ := u.GroupIds() // the primary group is enough without them
	for _, g := range append([]string{u.Gid}, gids...) {
		if id, err := strconv.ParseUint(g, 10, 32); err == nil && !slices.Contains(fu.gids, uint32(id)) {
			fu.gids = append(fu.gids, uint32(id))
		}
	}
	return fu, nil
}

// can reports whether u has the permission bits want (4 read, 1 search) on
// the file of fi. When the owner is unknown (not Linux) it says yes.
func (u *fileUser) can(fi fs.FileInfo, want fs.FileMode) bool {
	if u.uid == 0 {
		return true
	}
	uid, gid, ok := fileOwner(fi)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case uid == u.uid:
		perm >>= 6
	case slices.Contains(u.gids, gid):
		perm >>= 3
	}
	return perm&want == want
}

// canReach reports whether u can search dir and every directory above it.
func (u *fileUser) canReach(dir string) bool {
	for {
		fi, err := os.Stat(dir)
		if err == nil && !u.can(fi, 1) {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func isRegular(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// hasExt reports whether name ends with one of exts, ignoring ASCII case.
func hasExt(name string, exts []string) bool {
	for _, e := range exts {
		if len(name) > len(e) && strings.EqualFold(name[len(name)-len(e):], e) {
			return true
		}
	}
	return false
}
