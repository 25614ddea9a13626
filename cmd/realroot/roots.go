package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy"
	"realroot/resolve"
)

// Root watchers: building one for a configuration (a reload warms up a
// release it would publish), and running on-drain once no watcher in use
// holds a release.

// errWarmKept fails a new root watcher whose release, one no user got yet,
// failed its warm-up with warm-failure keep.
var errWarmKept = errors.New("warm-up failed (warm-failure keep)")

// newRootWatch makes a root watcher for c, and the function that runs it;
// in managed mode its release's pool serves. On a reload (prev), a release
// other than the one prev's watcher serves is warmed up first: no user got
// it yet, and it may be one that failed its warm-up a moment ago. s.mu is
// held (or s is new).
func (s *server) newRootWatch(c conf.Config, prev, g *generation) (*rootWatch, func(), error) {
	opts := resolve.Options{
		Root:         c.Root,
		PollInterval: c.PollInterval,
		Logger:       s.log.Named("resolve"),
		Checks: resolve.CheckOptions{
			Off:             !c.ReleaseChecks,
			FrontController: c.FrontControllerScript(),
			Index:           c.Index,
			PHPExtensions:   c.PHPExtensions,
			PHPUser:         c.PHPUser,
		},
		// The current generation's handler warms a new release up:
		// it has the running configuration's routing and upstream.
		// Before the first generation is stored, g's.
		Prepare: warmer(func() *proxy.Handler {
			if cur := s.cur.Load(); cur != nil {
				return cur.handler
			}
			return g.handler
		}, c.Warm, c.WarmTimeout),
		KeepOnPrepareError: c.WarmFailure != "switch",
	}
	if prev != nil {
		// Go on from the watcher this one replaces: switch --wait
		// compares generations across the reload.
		opts.FirstGen = prev.root.rs.Current().Gen + 1
	}
	if s.drain != nil {
		opts.OnDrain = s.releaseDrained
	}
	warm, keep := opts.Prepare, opts.KeepOnPrepareError
	var pools *poolRoot
	if s.pools != nil {
		pools = s.pools.attach(&opts)
	}
	rs, err := resolve.New(opts)
	if err != nil {
		return nil, nil, err
	}
	fresh := prev != nil && !sameRelease(rs.Current(), prev.root.rs.Current())
	switch {
	case pools != nil:
		err = pools.start(rs, fresh)
	case fresh && warm != nil:
		if err = warm(context.Background(), rs.Current()); err != nil && keep {
			err = fmt.Errorf("release %s: %w: %w", rs.Current().Dir, errWarmKept, err)
		} else if err != nil {
			s.log.Warn("warm-up failed; switching anyway", zap.String("release", rs.Current().Dir), zap.Error(err))
			err = nil
		}
	}
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := func() {
		if err := rs.Run(ctx); err != nil {
			s.log.Error("watching the root stopped", zap.String("root", c.Root), zap.Error(err))
		}
	}
	return &rootWatch{rs: rs, cancel: cancel, pools: pools}, run, nil
}

// sameRelease reports whether a and b, of two root watchers, are the same
// release: the same paths, and the same directory there.
func sameRelease(a, b *resolve.Release) bool {
	if a.Root != b.Root || a.Dir != b.Dir {
		return false
	}
	fa, err1 := a.Stat("/")
	fb, err2 := b.Stat("/")
	return err1 == nil && err2 == nil && resolve.SameFile(fa, fb)
}

// releaseDrained is resolve.Options.OnDrain with on-drain: it runs the
// command for a release directory once no root watcher in use has it
// current or draining. After a reload that built a new root watcher, each
// watcher has its own Release of a directory both served: one drains while
// requests of the other still run there, and the older watcher, which
// never switches again, never reports its current release drained. The
// command then waits (drainPending) until a drain of the last holder, or
// unref dropping it, runs it: once per directory drained. With no watcher
// left (shutdown) it does not run, as for a current release.
func (s *server) releaseDrained(info resolve.Info) {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	if ran, ok := s.drainRan[info.Dir]; ok && !info.DrainedAt.After(ran) {
		// Drained before the command ran for its directory: that run
		// covered it (two Releases of it drained at once).
		return
	}
	if s.dirHeld(info.Dir) {
		if _, ok := s.drainPending[info.Dir]; !ok {
			s.drain.log.Info("on-drain command deferred: another root watcher still holds the release",
				zap.String("release", info.Dir), zap.Uint64("gen", info.Gen))
		}
		s.drainPending[info.Dir] = info
		return
	}
	s.runDrain(info)
}

// drainWaiting runs the on-drain commands deferred by releaseDrained whose
// directory no root watcher holds any more; unref calls it when a watcher
// goes.
func (s *server) drainWaiting() {
	if s.drain == nil {
		return
	}
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	for dir, info := range s.drainPending {
		if !s.dirHeld(dir) {
			s.runDrain(info)
		}
	}
}

// runDrain starts the on-drain command for info. s.drainMu is held.
func (s *server) runDrain(info resolve.Info) {
	delete(s.drainPending, info.Dir)
	now := time.Now()
	for dir, at := range s.drainRan {
		if now.Sub(at) > time.Minute {
			delete(s.drainRan, dir)
		}
	}
	s.drainRan[info.Dir] = now
	s.drain.OnDrain(info)
}

// dirHeld reports whether a root watcher in use has a release of dir
// current or draining, or none is in use.
func (s *server) dirHeld(dir string) bool {
	roots := s.roots.Load()
	if roots == nil || len(*roots) == 0 {
		return true
	}
	for _, w := range *roots {
		snap := w.rs.Snapshot()
		if snap.Current.Dir == dir || slices.ContainsFunc(snap.Draining, func(in resolve.Info) bool { return in.Dir == dir }) {
			return true
		}
	}
	return false
}
