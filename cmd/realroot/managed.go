package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// Managed mode (--managed-pool, docs/managed-pools.md): realroot runs
// php-fpm itself, one master per release, so that nothing cached in PHP
// (OPcache, the realpath cache, static variables of a long-lived worker)
// outlives its release. A new release gets its pool in resolve's Prepare
// hook, before it is published; the previous release's pool is stopped once
// its last request is done. managed_pool.go runs one pool.

// managedPools are the php-fpm pools of one server, and the upstream of its
// handlers: a FastCGI request goes to the pool of its DOCUMENT_ROOT, which
// is the realpath of the release it is pinned to.
type managedPools struct {
	bin    string // php-fpm, resolved
	dir    string // private runtime directory: sockets, configurations, pid files
	reaper *reaper
	log    *zap.Logger

	ctx    context.Context // done once close begins
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // drain and exit watchers, stops, retries, restarts

	routes atomic.Pointer[[]route] // pools that take requests, newest first

	mu      sync.Mutex
	cfg     conf.Config // the running configuration
	seq     uint64
	roots   []*poolRoot   // of the root watchers in use
	alive   []*fpmPool    // every pool with a process, oldest first
	gone    []*fpmPool    // recently stopped, newest first
	changed chan struct{} // closed, then replaced, whenever a pool stops
	closed  bool
	stopped fcgi.PoolStats // the counters of the stopped pools' clients
}

// keepGone is how many stopped pools /status lists.
const keepGone = 8

// Why a pool stopped before its release drained, besides a failure.
var (
	errShuttingDown = errors.New("shutting down")
	errRootGone     = errors.New("a reload changed the root")
	errRetired      = errors.New("a reload replaced this root watcher; the new one switches releases")
)

// newManaged checks the template and php-fpm and makes the runtime
// directory. Its pools start with the first root (poolRoot.start).
func newManaged(c conf.Config, r *reaper, log *zap.Logger) (*managedPools, error) {
	bin, _, err := checkManaged(c)
	if err != nil {
		return nil, err
	}
	base := os.TempDir()
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		base = d // systemd's RuntimeDirectory=
	}
	dir, err := os.MkdirTemp(base, "realroot-fpm-")
	if err != nil {
		return nil, fmt.Errorf("managed-pool: runtime directory: %w", err)
	}
	// A unix socket's path has room for 107 bytes.
	if longest := filepath.Join(dir, "p"+strconv.FormatUint(1<<40, 10)+".sock"); len(longest) > 107 {
		os.Remove(dir)
		return nil, fmt.Errorf("managed-pool: runtime directory %s is too long for unix socket paths; set TMPDIR to a shorter one", dir)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	m := &managedPools{bin: bin, dir: dir, reaper: r, log: log, ctx: ctx, cancel: cancel, cfg: c, changed: make(chan struct{})}
	m.routes.Store(&[]route{})
	return m, nil
}

// checkManaged finds c's php-fpm and checks its pool template; it returns
// the php-fpm binary and the template.
func checkManaged(c conf.Config) (bin, tmpl string, err error) {
	if bin, err = lookupPHPFPM(c.PHPFPM); err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(c.ManagedPool)
	if err == nil {
		err = checkTemplate(string(b))
	}
	if err != nil {
		return "", "", fmt.Errorf("managed-pool %s: %w", c.ManagedPool, err)
	}
	return bin, string(b), nil
}

// configure makes c the configuration of the pools started from now on:
// its template, php-fpm, bounds and FastCGI client settings. It checks them
// as start-up does first, and changes nothing when that fails; restore puts
// the previous configuration back, for a reload rejected later.
func (m *managedPools) configure(c conf.Config) (restore func(), err error) {
	bin, _, err := checkManaged(c)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	oldCfg, oldBin := m.cfg, m.bin
	m.cfg, m.bin = c, bin
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		m.cfg, m.bin = oldCfg, oldBin
		m.mu.Unlock()
	}, nil
}

// poolRoot is what a root watcher (one resolve.Releases) has of the pools.
type poolRoot struct {
	m    *managedPools
	warm func(context.Context, *resolve.Release) error // nil: no warm-up
	keep bool                                          // keep the current release when the warm-up fails
	rs   *resolve.Releases                             // set by start

	// Set by start: done once a newer root serves (retire) or on close. It
	// ends the pool a start, prepare or restart is starting.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// Guarded by m.mu.
	retry   bool // a release was refused for lack of room: Refresh when a pool stops
	retired bool // a newer root serves: this one starts no pool (retire)
	closed  bool
	// The last restart that succeeded: a pool that dies again within
	// restartStable of it restarts after twice its delay (restart).
	restartRel   *resolve.Release
	restartDelay time.Duration
	restartAt    time.Time
}

// attach makes opts' Prepare start a pool for each new release, then run
// the Prepare it had (the warm-up) through it. A release whose pool does
// not answer is never switched to (KeepOnPrepareError); a failed warm-up
// keeps the current release unless the configuration says switch.
func (m *managedPools) attach(opts *resolve.Options) *poolRoot {
	r := &poolRoot{m: m, warm: opts.Prepare, keep: opts.KeepOnPrepareError}
	opts.Prepare = r.prepare
	opts.KeepOnPrepareError = true
	return r
}

// start starts the pool of rs's current release and returns once it
// serves: at start-up and when a reload builds a new root watcher (the
// root or poll-interval changed). Once the reload's generation is current,
// the server retires the roots it replaced (retire).
//
// warm says that no user got rs's current release yet (on a reload, the
// running watcher serves another one): it is warmed up through its pool
// first, as prepare does. A failed warm-up with warm-failure keep fails
// start with errWarmKept, and the running watcher keeps serving.
func (r *poolRoot) start(rs *resolve.Releases, warm bool) error {
	r.m.mu.Lock()
	r.rs = rs
	r.ctx, r.cancel = context.WithCancelCause(r.m.ctx)
	r.m.roots = append(r.m.roots, r)
	r.m.mu.Unlock()
	cur := rs.Current()
	p, err := r.m.launch(r.ctx, r, cur)
	if err == nil && warm {
		if err = r.warmUp(r.ctx, p, cur); err != nil {
			err = fmt.Errorf("%w: %w", errWarmKept, err)
		}
	}
	if err == nil {
		if err = r.m.promote(p, false); err != nil {
			r.m.stopPool(p, err)
		}
	}
	if err != nil {
		r.close()
		return fmt.Errorf("release %s: %w", cur.Dir, err)
	}
	return nil
}

// prepare is resolve.Options.Prepare: a pool for next, answering and warmed
// up, then serving; the current release's pool drains.
//
// A retired root starts no pool and keeps its release: no new request is
// pinned to its releases, and the newer root prepares next. Its watcher
// does not switch, so it reports no release drained that the newer one may
// still serve. A prepare under way when the root is retired ends, and its
// pool stops.
func (r *poolRoot) prepare(ctx context.Context, next *resolve.Release) error {
	if r.isRetired() {
		return errRetired
	}
	err := r.preparePool(ctx, next)
	if err != nil && r.isRetired() {
		return errRetired
	}
	return err
}

// isRetired reports whether a newer root serves (retire).
func (r *poolRoot) isRetired() bool {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	return r.retired
}

// preparePool is prepare's work: next's pool, serving.
func (r *poolRoot) preparePool(ctx context.Context, next *resolve.Release) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Done on retire or close, and with m.ctx.
	defer context.AfterFunc(r.ctx, func() { cancel(context.Cause(r.ctx)) })()
	p, err := r.m.launch(ctx, r, next)
	if err != nil {
		return err
	}
	if err := r.warmUp(ctx, p, next); err != nil {
		return err
	}
	if err := r.m.promote(p, false); err != nil {
		r.m.stopPool(p, err)
		return err
	}
	return nil
}

// warmUp runs the warm-up, if any, of next through p, its pool, which
// answers. A failure that keeps the current release (warm-failure keep)
// stops p and is returned; with warm-failure switch it is logged.
func (r *poolRoot) warmUp(ctx context.Context, p *fpmPool, next *resolve.Release) error {
	if r.warm == nil {
		return nil
	}
	r.m.setState(p, poolWarming)
	if err := r.warm(ctx, next); err != nil {
		if r.keep {
			r.m.stopPool(p, fmt.Errorf("warm-up failed: %w", err))
			return err
		}
		p.log.Warn("warm-up failed; switching anyway", zap.Error(err))
	}
	return nil
}

// close stops the pools of a root no generation uses any more.
func (r *poolRoot) close() {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	r.closed = true
	r.cancel(errRootGone)
	m.roots = slices.DeleteFunc(m.roots, func(q *poolRoot) bool { return q == r })
	if m.closed {
		return // close stops every pool
	}
	for _, p := range m.alive {
		if p.owner == r && p.up {
			m.wg.Go(func() { m.stopPool(p, errRootGone) })
		}
	}
}

// launch starts a pool for rel, once there is room for it, and returns it
// answering, in state starting. A pool starting while it is closed stops.
//
// Every m.wg.Go happens on a goroutine m.wg counts, or under m.mu with
// m.closed false, so that none races with close's Wait: launch counts
// itself.
func (m *managedPools) launch(ctx context.Context, r *poolRoot, rel *resolve.Release) (*fpmPool, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errShuttingDown
	}
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()
	p, c, bin, err := m.reserve(ctx, r, rel)
	if err != nil {
		return nil, err
	}
	tmpl, err := os.ReadFile(c.ManagedPool)
	if err == nil {
		err = checkTemplate(string(tmpl))
	}
	if err != nil {
		err = fmt.Errorf("managed-pool %s: %w", c.ManagedPool, err)
	} else {
		sctx, cancel := context.WithTimeout(ctx, c.PoolStartTimeout)
		err = p.start(sctx, bin, string(tmpl), c, m.reaper)
		cancel()
	}
	if err != nil {
		err = fmt.Errorf("php-fpm pool %s: %w", p.name, err)
		m.finish(p, err)
		return nil, err
	}
	m.mu.Lock()
	p.up = true
	closed := m.closed || r.closed
	m.mu.Unlock()
	m.wg.Go(func() { m.watch(p) })
	if closed {
		m.wg.Go(func() { m.stopPool(p, errShuttingDown) })
		return nil, errShuttingDown
	}
	p.log.Info("php-fpm pool answers", zap.Int("pid", p.ch.cmd.Process.Pid),
		zap.String("socket", p.socket), zap.Duration("duration", time.Since(p.started)))
	return p, nil
}

// reserve waits, at most pool-start-timeout, until fewer than max-pools
// pools are alive, and adds a new one for rel to them.
func (m *managedPools) reserve(ctx context.Context, r *poolRoot, rel *resolve.Release) (*fpmPool, conf.Config, string, error) {
	var timeout <-chan time.Time
	m.mu.Lock()
	for len(m.alive) >= m.cfg.MaxPools && !m.closed && !r.closed {
		if !m.stoppable() {
			// Waiting is waiting for nothing: no pool stops before a
			// switch, which this start holds up (the link moved while
			// the next release's pool started).
			old := m.alive[0]
			r.retry = true
			m.mu.Unlock()
			return nil, conf.Config{}, "", fmt.Errorf("%d php-fpm pools alive (max-pools %d), none of which stops before a switch (the oldest, of release %s (gen %d), is %s); the switch is retried once a pool stops",
				len(m.alive), m.cfg.MaxPools, old.rel.Dir, old.rel.Gen, old.state)
		}
		if timeout == nil {
			t := time.NewTimer(m.cfg.PoolStartTimeout)
			defer t.Stop()
			timeout = t.C
			m.log.Info("waiting for a php-fpm pool to stop", zap.String("release", rel.Dir),
				zap.Uint64("gen", rel.Gen), zap.Int("max_pools", m.cfg.MaxPools))
		}
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, conf.Config{}, "", context.Cause(ctx)
		case <-timeout:
			m.mu.Lock()
			if len(m.alive) < m.cfg.MaxPools {
				continue // one stopped meanwhile
			}
			defer m.mu.Unlock()
			old := m.alive[0]
			r.retry = true
			return nil, conf.Config{}, "", fmt.Errorf("%d php-fpm pools alive (max-pools %d); the oldest, of release %s (gen %d), %s with %d requests in flight, did not stop within pool-start-timeout %v; the switch is retried once a pool stops",
				len(m.alive), m.cfg.MaxPools, old.rel.Dir, old.rel.Gen, old.state, old.rel.InFlight(), m.cfg.PoolStartTimeout)
		}
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	if m.closed || r.closed {
		return nil, conf.Config{}, "", errShuttingDown
	}
	m.seq++
	name := fmt.Sprintf("%s-%d", poolName(filepath.Base(rel.Dir)), m.seq)
	file := filepath.Join(m.dir, "p"+strconv.FormatUint(m.seq, 10))
	p := &fpmPool{
		name: name, rel: rel, owner: r,
		socket: file + ".sock", conf: file + ".conf", pid: file + ".pid",
		log:   m.log.With(zap.String("pool", name), zap.String("release", rel.Dir), zap.Uint64("gen", rel.Gen)),
		state: poolStarting, since: time.Now(), started: time.Now(),
	}
	m.alive = append(m.alive, p)
	return p, m.cfg, m.bin, nil
}

// stoppable reports whether an alive pool may stop without a switch, so
// that a start waiting for room may get it: one that starts, warms up or
// stops (its start or prepare may fail), one of a closed or retired root,
// or one draining a release no longer current (it stops once its requests
// are done). A serving pool, or one draining its root's current release (a
// pool promoted for a release the link moved away from before it was
// published), stops only after a switch. m.mu is held.
func (m *managedPools) stoppable() bool {
	for _, q := range m.alive {
		switch {
		case q.state != poolServing && q.state != poolDraining, q.owner.closed, q.owner.retired:
			return true
		case q.state == poolDraining && (q.owner.rs == nil || q.owner.rs.Current() != q.rel):
			return true
		}
	}
	return false
}

// poolName makes a release directory's name fit a php-fpm pool name.
func poolName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 32 {
		b = b[len(b)-32:]
	}
	return string(b)
}

// close stops every pool, each within pool-stop-timeout, and waits for
// them; the runtime directory goes.
func (m *managedPools) close() {
	m.mu.Lock()
	m.closed = true
	for _, p := range m.alive {
		if p.up {
			m.wg.Go(func() { m.stopPool(p, errShuttingDown) })
		}
	}
	m.mu.Unlock()
	m.cancel(errShuttingDown) // a pool starting stops itself
	m.wg.Wait()
	os.RemoveAll(m.dir)
}
