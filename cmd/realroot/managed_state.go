package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"realroot/resolve"
)

// The life of the managed pools after they start: serving, draining,
// stopping, exiting, and the retries they trigger.

// route is one entry of the routing table.
type route struct {
	root string
	warm bool // takes warm-up requests only
	p    *fpmPool
}

// setState moves p to s unless it is stopping already.
func (m *managedPools) setState(p *fpmPool, s poolState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.state < poolStopping {
		p.state, p.since = s, time.Now()
		m.route()
	}
}

// promote makes p its root's serving pool; the pool serving until now
// drains. A restarted pool (restart) is refused once its release has been
// superseded meanwhile, and drains at once while the next release's pool,
// prepared, serves. On error, the caller stops p.
func (m *managedPools) promote(p *fpmPool, restart bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case p.state >= poolStopping:
		if p.err != nil {
			return fmt.Errorf("php-fpm pool %s: %w", p.name, p.err)
		}
		return fmt.Errorf("php-fpm pool %s stopped", p.name)
	case m.closed || p.owner.closed:
		return errShuttingDown
	case p.owner.retired:
		return errRetired
	case restart && (p.owner.rs == nil || p.owner.rs.Current() != p.rel):
		// Checked here, under m.mu: launch may have waited for room
		// while the root switched.
		return errors.New("its release is no longer current")
	case restart && slices.ContainsFunc(m.alive, func(q *fpmPool) bool {
		return q.owner == p.owner && q.state == poolServing && q.rel == p.rel
	}):
		return errors.New("another pool serves its release")
	case restart && slices.ContainsFunc(m.alive, func(q *fpmPool) bool {
		return q.owner == p.owner && q.state == poolServing
	}):
		// The pool of the next release serves: prepared, it is about to
		// be published (resolve publishes it, or a release prepared after
		// it). p takes the requests pinned to its release meanwhile, and
		// stops once that release is superseded and drained.
		m.startDrain(p)
		m.route()
		return nil
	default:
		for _, q := range m.alive {
			if q.owner == p.owner && q.state == poolServing {
				m.startDrain(q)
			}
		}
		p.state, p.since = poolServing, time.Now()
		m.route()
		return nil
	}
}

// retire is the server's, once the generation a reload built with a new
// root, r, is current (so r's pool serves): the other roots, of the
// generations that reload replaced, are retired. They start no pool any
// more (prepare, restart, finish's retry), the pool one is starting stops,
// and their serving pools drain like the pool of any previous release:
// until no request is pinned to their release (drain) or
// pool-drain-timeout passed. Until then they hold a max-pools slot, so a
// deploy waits for them no longer than pool-drain-timeout.
func (m *managedPools) retire(r *poolRoot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return // close stops every pool
	}
	for _, q := range m.roots {
		if q != r && !q.retired {
			q.retired = true
			q.cancel(errRetired)
		}
	}
	for _, q := range m.alive {
		if q.owner.retired && q.state == poolServing {
			m.startDrain(q)
		}
	}
}

// startDrain moves q from serving to draining; drain stops it. m.mu is
// held.
func (m *managedPools) startDrain(q *fpmPool) {
	q.state, q.since = poolDraining, time.Now()
	q.log.Info("php-fpm pool draining", zap.Int64("in_flight", q.rel.InFlight()))
	m.wg.Go(func() { m.drain(q) })
}

// route rebuilds the routing table. m.mu is held.
func (m *managedPools) route() {
	var rt []route
	for _, p := range slices.Backward(m.alive) {
		switch p.state {
		case poolWarming, poolServing, poolDraining:
			rt = append(rt, route{root: p.rel.Root, warm: p.state == poolWarming, p: p})
		}
	}
	m.routes.Store(&rt)
}

// retiredPoll is how often drain looks at the in-flight count of a retired
// root's release, whose drain resolve never reports.
const retiredPoll = 100 * time.Millisecond

// drain stops q once its release has drained, or pool-drain-timeout passed.
//
// The release of a retired root's pool drains when no request is pinned to
// it any more: that root's watcher never switches again, so resolve never
// supersedes its current release and Drained never closes. resolve reports
// no event when a current release's count reaches zero; drain reads it
// every retiredPoll (one atomic load) instead. retire runs once the newer
// generation is current, so that no request arriving later pins it.
func (m *managedPools) drain(q *fpmPool) {
	m.mu.Lock()
	timeout := m.cfg.PoolDrainTimeout
	m.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	poll := time.NewTicker(retiredPoll)
	defer poll.Stop()
	var why error
wait:
	for {
		select {
		case <-q.rel.Drained():
			break wait
		case <-poll.C:
			if m.retiredIdle(q) {
				break wait
			}
		case <-t.C:
			why = fmt.Errorf("stopped by pool-drain-timeout %v with %d requests in flight", timeout, q.rel.InFlight())
			q.log.Warn("php-fpm pool still busy; stopping it", zap.Duration("timeout", timeout),
				zap.Int64("in_flight", q.rel.InFlight()))
			break wait
		case <-q.ch.done: // exited: watch handles it
			return
		case <-m.ctx.Done(): // close stops it
			return
		}
	}
	m.stopPool(q, why)
}

// retiredIdle reports whether q's root is retired and no request is pinned
// to q's release.
func (m *managedPools) retiredIdle(q *fpmPool) bool {
	m.mu.Lock()
	retired := q.owner.retired
	m.mu.Unlock()
	return retired && q.rel.InFlight() == 0
}

// stopPool stops p gracefully, unless it is stopping already. why, if not
// nil, says why it stopped before its release drained.
func (m *managedPools) stopPool(p *fpmPool, why error) {
	m.mu.Lock()
	if p.state >= poolStopping {
		m.mu.Unlock()
		return
	}
	p.state, p.since = poolStopping, time.Now()
	m.route()
	timeout := m.cfg.PoolStopTimeout
	m.mu.Unlock()
	start := time.Now()
	p.stop(timeout)
	if code := p.ch.exitCode(); why == nil && code != 0 {
		// Killed, or crashed, before or while it was asked to stop:
		// SIGQUIT alone ends php-fpm with 0.
		why = fmt.Errorf("php-fpm exited with status %d", code)
	}
	m.finish(p, why)
	reason := "release drained"
	if why != nil {
		reason = why.Error()
	}
	p.log.Info("php-fpm pool stopped", zap.String("reason", reason), zap.Duration("duration", time.Since(start)))
}

// watch waits for p's master to exit. An exit realroot did not ask for is
// logged; a serving pool is then started again.
func (m *managedPools) watch(p *fpmPool) {
	<-p.ch.done
	m.mu.Lock()
	was := p.state
	if was >= poolStopping {
		m.mu.Unlock()
		return // stopPool's
	}
	p.state, p.since = poolStopping, time.Now()
	m.route()
	timeout := m.cfg.PoolStopTimeout
	m.mu.Unlock()
	err := fmt.Errorf("php-fpm exited with status %d while %s", p.ch.exitCode(), was)
	p.log.Error("php-fpm pool exited", zap.Stringer("state", was), zap.Int("status", p.ch.exitCode()),
		zap.Int64("in_flight", p.inFlight.Load()))
	p.stop(timeout) // its workers, its socket
	m.finish(p, err)
	if was == poolServing {
		m.wg.Go(func() { m.restart(p.owner, p.rel) })
	}
}

// restartStable is how long a restarted pool must live for its next
// restart to wait 1s again rather than twice the last delay.
const restartStable = 30 * time.Second

// restart starts a pool again for rel, whose pool exited while serving, with
// a growing delay between attempts (1s, 2s, 4s... 30s), for as long as rel
// is current. A pool that dies again soon after a restart goes on from the
// last delay, so that a crash loop backs off too.
//
// It runs under r.ctx, as prepare does: once r is retired (or closed) a
// start under way is cancelled, in reserve or before php-fpm answers, and
// its processes stopped; one that answered first is refused by promote.
func (m *managedPools) restart(r *poolRoot, rel *resolve.Release) {
	delay := time.Second
	m.mu.Lock()
	if r.restartRel == rel && time.Since(r.restartAt) < restartStable {
		delay = min(2*r.restartDelay, 30*time.Second)
	}
	m.mu.Unlock()
	for ; ; delay = min(2*delay, 30*time.Second) {
		select {
		case <-r.ctx.Done(): // retired or closed, or m closing
			return
		case <-time.After(delay):
		}
		m.mu.Lock()
		stale := r.closed || r.retired || r.rs == nil || r.rs.Current() != rel
		m.mu.Unlock()
		if stale {
			return
		}
		p, err := m.launch(r.ctx, r, rel)
		if err == nil {
			if err = m.promote(p, true); err == nil {
				p.log.Info("php-fpm pool restarted")
				m.mu.Lock()
				r.restartRel, r.restartDelay, r.restartAt = rel, delay, time.Now()
				m.mu.Unlock()
				return
			}
			m.stopPool(p, err)
		}
		if r.ctx.Err() != nil {
			m.log.Info("php-fpm pool restart cancelled", zap.String("release", rel.Dir), zap.Uint64("gen", rel.Gen),
				zap.String("reason", context.Cause(r.ctx).Error()))
			return
		}
		m.log.Error("php-fpm pool restart failed", zap.String("release", rel.Dir), zap.Uint64("gen", rel.Gen),
			zap.Duration("retry_in", min(2*delay, 30*time.Second)), zap.Error(err))
	}
}

// finish moves p, whose processes are gone, to the stopped pools, and
// retries the releases refused for lack of room.
func (m *managedPools) finish(p *fpmPool, why error) {
	m.mu.Lock()
	p.state, p.since, p.stopped, p.err = poolStopped, time.Now(), time.Now(), why
	m.alive = slices.DeleteFunc(m.alive, func(q *fpmPool) bool { return q == p })
	if p.client != nil {
		// Counters never go down: its client's stay in the sum.
		m.stopped = addPoolCounters(m.stopped, p.client.Stats())
	}
	m.gone = slices.Insert(m.gone, 0, p)
	if len(m.gone) > keepGone {
		clear(m.gone[keepGone:])
		m.gone = m.gone[:keepGone]
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.route()
	for _, r := range m.roots {
		if r.retry && !r.retired && !m.closed && r.rs != nil {
			r.retry = false
			m.wg.Go(func() {
				if _, err := r.rs.Refresh(); err != nil {
					m.log.Debug("retried switch failed", zap.Error(err)) // resolve logged why
				}
			})
		}
	}
	m.mu.Unlock()
}
