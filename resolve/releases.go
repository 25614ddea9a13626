package resolve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options configure New. The zero value of every field but Root is usable.
type Options struct {
	// Root is the configured docroot; any component may be a symlink.
	Root string
	// PollInterval is how often every watched symlink is re-read with
	// readlink, for filesystems that send no events (NFS, bind and overlay
	// mounts). Default 0 in the struct means off; cmd sets 1s by default.
	PollInterval time.Duration
	// RetryInterval is how soon the root is re-checked while it does not
	// resolve (a non-atomic switch in progress). Zero means 50ms.
	RetryInterval time.Duration
	// KeepDrained is how many drained releases Snapshot remembers. Zero means 16.
	KeepDrained int
	// FirstGen numbers the release New starts with, so that a Releases
	// that replaces another for the same deploy (a reload that changes
	// the root) goes on from its numbers. Zero means 1.
	FirstGen uint64
	// Logger receives release switches, drains and resolve warnings.
	// Nil means zap.NewNop().
	Logger *zap.Logger

	// Checks configure the checks Run makes, in the background, on the
	// release it starts with and on every new one. The zero value checks
	// for files with a future mtime only.
	Checks CheckOptions
	// Prepare, if not nil, is called by Refresh with a new release before
	// it becomes current, e.g. to warm it up: Pin keeps returning the
	// current release until Prepare returns. ctx is Run's (Background for
	// a direct Refresh); Prepare bounds its own time. Nil means none.
	Prepare func(ctx context.Context, next *Release) error
	// KeepOnPrepareError keeps the current release when Prepare fails; the
	// new one is tried again at the next change of the root. False means
	// the switch happens anyway, with a warning.
	KeepOnPrepareError bool
	// OnDrain, if not nil, is called once for each superseded release
	// when its last request is done, after the "release drained" log. It
	// runs on that request's goroutine (or Refresh's): it must not block.
	OnDrain func(Info)
}

// Releases tracks the current release of a root and every release that still
// has requests in flight.
type Releases struct {
	root  string // Options.Root, absolute and clean
	poll  time.Duration
	retry time.Duration
	keep  int
	log   *zap.Logger

	checkOpts   atomic.Pointer[CheckOptions] // SetCheckRouting changes it
	phpUser     *fileUser                    // nil: the readability check is off
	prepare     func(context.Context, *Release) error
	keepOnError bool
	onDrain     func(Info)
	checkq      checkQueue

	cur    atomic.Pointer[Release]
	down   atomic.Bool  // the last Refresh found no directory at root
	downAt atomic.Int64 // unix nanoseconds when it stopped resolving; 0 while it resolves

	// noWatch makes Run poll only, as on a filesystem without events (tests).
	noWatch bool

	mu  sync.Mutex // serializes Refresh; guards res
	res *resolution

	listMu   sync.Mutex // guards draining and drained; taken after mu
	draining []*Release // oldest first
	drained  []*Release // newest first, at most keep

	checks, switches, failures, watchHits, pollHits, prepareFails atomic.Uint64
}

// Stats counts what a Releases has seen since New, for metrics.
type Stats struct {
	// Switches is how many times the current release changed.
	Switches uint64 `json:"switches"`
	// ResolveFailures is how many times the root stopped resolving to a
	// directory: one per outage, however many checks it lasted.
	ResolveFailures uint64 `json:"resolve_failures"`
	// WatchDetections and PollDetections count the switches made by a
	// Refresh that a filesystem event (or an event queue overflow), or the
	// readlink poll, triggered. Switches found by the retry while the root
	// did not resolve (and, with events, by the poll then), or by a direct
	// Refresh, count only in Switches. Poll detections on a filesystem with
	// events mean events were missed.
	WatchDetections uint64 `json:"watch_detections"`
	PollDetections  uint64 `json:"poll_detections"`
	// PrepareFailures is how many times Options.Prepare failed for a new
	// release.
	PrepareFailures uint64 `json:"prepare_failures"`
}

// New resolves opts.Root once. It fails, naming the path and what is wrong,
// when the root does not resolve to a directory, or when Checks.PHPUser is
// not a known user.
func New(opts Options) (*Releases, error) {
	if opts.Root == "" {
		return nil, errors.New("resolve: root is empty")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, err
	}
	rs := &Releases{
		root:  root,
		poll:  opts.PollInterval,
		retry: opts.RetryInterval,
		keep:  opts.KeepDrained,
		log:   opts.Logger,

		prepare:     opts.Prepare,
		keepOnError: opts.KeepOnPrepareError,
		onDrain:     opts.OnDrain,
	}
	co := opts.Checks.withDefaults()
	rs.checkOpts.Store(&co)
	if u := opts.Checks.PHPUser; u != "" && !opts.Checks.Off {
		if rs.phpUser, err = lookupUser(u); err != nil {
			return nil, fmt.Errorf("resolve: php user: %w", err)
		}
	}
	if rs.retry <= 0 {
		rs.retry = 50 * time.Millisecond
	}
	if rs.keep <= 0 {
		rs.keep = 16
	}
	if rs.log == nil {
		rs.log = zap.NewNop()
	}
	res, err := resolveRoot(root)
	if err != nil {
		return nil, err
	}
	rs.res = res
	rs.cur.Store(newRelease(res, max(opts.FirstGen, 1), time.Now(), rs.released))
	return rs, nil
}

// Current returns the current release without pinning it: one atomic load.
func (rs *Releases) Current() *Release { return rs.cur.Load() }

// Pin returns the current release with its in-flight count raised. The caller
// must call Unpin exactly once, when its response is complete.
func (rs *Releases) Pin() *Release {
	for {
		r := rs.cur.Load()
		if r.state.Add(1)&supersededBit == 0 {
			return r
		}
		// r was superseded between the load and the add: undo, and take
		// the release that replaced it (stored before the bit was set).
		r.Unpin()
	}
}

// Refresh re-resolves the root now and switches if it changed. It reports
// whether a switch happened. Run calls it; tests and admin tools may too.
//
// A new release is first handed to Options.Prepare, if set, while requests
// keep going to the current one. When Prepare fails and KeepOnPrepareError
// is set, Refresh returns false and an error wrapping Prepare's.
func (rs *Releases) Refresh() (bool, error) {
	return rs.refresh(context.Background(), nil)
}

// refresh is Refresh; hit, if not nil, is the detection counter a switch
// adds to as well.
func (rs *Releases) refresh(ctx context.Context, hit *atomic.Uint64) (bool, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()

	rs.checks.Add(1)
	res, err := resolveRoot(rs.root)
	now := time.Now()
	cur := rs.cur.Load()
	if err != nil {
		if !rs.down.Load() {
			rs.down.Store(true)
			rs.downAt.Store(now.UnixNano())
			rs.failures.Add(1)
			rs.log.Warn("root does not resolve; serving last good release",
				zap.String("root", rs.root),
				zap.String("release", cur.Root),
				zap.Error(err))
		}
		return false, err
	}
	if rs.down.Load() {
		rs.down.Store(false)
		rs.log.Info("root resolves again",
			zap.String("root", rs.root),
			zap.String("release", res.real),
			zap.Duration("downtime", now.Sub(rs.DownSince())))
		rs.downAt.Store(0)
	}
	rs.res = res // links and watch set may change without a switch
	if res.real == cur.Root && os.SameFile(res.dir, cur.rootInfo) {
		return false, nil
	}

	next := newRelease(res, cur.Gen+1, now, rs.released)
	rs.checkq.push(next, rs.checkOpts.Load().Off)
	if rs.prepare != nil {
		if err := rs.prepareRelease(ctx, next, cur); err != nil {
			return false, err
		}
		// The link may have moved while next was prepared (a rollback, or
		// the release after it): what it names now is prepared in turn and
		// goes live instead, a new generation even when it is cur's
		// directory (Prepare may have moved cur's php-fpm pool on), and
		// next is abandoned. Should that prepare fail, next, prepared,
		// goes live as before; the poll sees the link differ and tries
		// again.
		for range 4 {
			moved, err := resolveRoot(rs.root)
			if err != nil || moved.real == next.Root && os.SameFile(moved.dir, next.rootInfo) {
				break
			}
			after := newRelease(moved, cur.Gen+1, time.Now(), rs.released)
			rs.checkq.push(after, rs.checkOpts.Load().Off)
			if rs.prepareRelease(ctx, after, next) != nil {
				break
			}
			next.abandon(time.Now())
			res, next = moved, after
		}
		rs.res = res
		now = time.Now()
		next.Since = now // Prepare has returned; the checks do not read Since
	}
	// Under listMu, so that a Snapshot sees cur either current or draining,
	// never neither: a deploy tool prunes what it sees in neither.
	// The counts go first, so that whoever sees next as current sees the
	// switch counted.
	rs.switches.Add(1)
	if hit != nil {
		hit.Add(1)
	}
	rs.listMu.Lock()
	rs.draining = append(rs.draining, cur)
	rs.cur.Store(next)
	rs.listMu.Unlock()
	cur.supersede(now) // may drain cur at once: it must be listed first
	rs.log.Info("release switched",
		zap.String("release", next.Root),
		zap.String("prev_release", cur.Root),
		zap.Uint64("gen", next.Gen))
	return true, nil
}

// prepareRelease runs Options.Prepare on next, logs how it went, and returns
// an error when next must not become current. cur is what serves if it
// fails: the current release, or, of the same generation, the release
// prepared before the link moved on to next.
func (rs *Releases) prepareRelease(ctx context.Context, next, cur *Release) error {
	start := time.Now()
	err := rs.prepare(ctx, next)
	if err == nil {
		rs.log.Info("release prepared",
			zap.String("release", next.Root),
			zap.Uint64("gen", next.Gen),
			zap.Duration("duration", time.Since(start)))
		return nil
	}
	rs.prepareFails.Add(1)
	if rs.keepOnError && cur.Gen == next.Gen { // the link moved while cur was prepared
		rs.log.Warn("release prepare failed; switching to the release prepared before it",
			zap.String("release", next.Root),
			zap.String("prepared_release", cur.Root),
			zap.Duration("duration", time.Since(start)),
			zap.Error(err))
		return fmt.Errorf("prepare %s: %w", next.Root, err)
	}
	if rs.keepOnError {
		rs.log.Warn("release prepare failed; keeping current release",
			zap.String("release", next.Root),
			zap.String("current_release", cur.Root),
			zap.Duration("duration", time.Since(start)),
			zap.Error(err))
		return fmt.Errorf("prepare %s: %w", next.Root, err)
	}
	rs.log.Warn("release prepare failed; switching anyway",
		zap.String("release", next.Root),
		zap.String("prev_release", cur.Root),
		zap.Duration("duration", time.Since(start)),
		zap.Error(err))
	return nil
}

// released moves a drained release from the draining list to the recently
// drained ones. Release.markDrained calls it once per release.
func (rs *Releases) released(r *Release) {
	rs.listMu.Lock()
	if i := slices.Index(rs.draining, r); i >= 0 {
		rs.draining = slices.Delete(rs.draining, i, i+1)
	}
	rs.drained = slices.Insert(rs.drained, 0, r)
	if len(rs.drained) > rs.keep {
		clear(rs.drained[rs.keep:])
		rs.drained = rs.drained[:rs.keep]
	}
	rs.listMu.Unlock()

	until, at := unixTime(r.until.Load()), unixTime(r.drainedAt.Load())
	rs.log.Info("release drained",
		zap.String("release", r.Root),
		zap.Uint64("gen", r.Gen),
		zap.Duration("served", until.Sub(r.Since)),
		zap.Duration("drain", at.Sub(until)))
	if rs.onDrain != nil {
		rs.onDrain(r.info())
	}
}

// Snapshot returns the current, draining and recently drained releases.
func (rs *Releases) Snapshot() Snapshot {
	rs.listMu.Lock()
	defer rs.listMu.Unlock()
	s := Snapshot{
		Current:   rs.cur.Load().info(),
		Draining:  make([]Info, 0, len(rs.draining)),
		Drained:   make([]Info, 0, len(rs.drained)),
		DownSince: rs.DownSince(),
	}
	for _, r := range rs.draining {
		s.Draining = append(s.Draining, r.info())
	}
	for _, r := range rs.drained {
		s.Drained = append(s.Drained, r.info())
	}
	return s
}

// DownSince returns when the root stopped resolving to a directory (the
// current release is then the last good one), or the zero time while it
// resolves.
func (rs *Releases) DownSince() time.Time {
	return unixTime(rs.downAt.Load())
}

// Stats returns the counters since New.
func (rs *Releases) Stats() Stats {
	return Stats{
		Switches:        rs.switches.Load(),
		ResolveFailures: rs.failures.Load(),
		WatchDetections: rs.watchHits.Load(),
		PollDetections:  rs.pollHits.Load(),
		PrepareFailures: rs.prepareFails.Load(),
	}
}

// resolution returns the last successful resolution.
func (rs *Releases) resolution() *resolution {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.res
}
