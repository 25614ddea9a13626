package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/yookoala/gofast"

	"realroot/proxy"
	"realroot/proxy/admin"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// The managed pools seen from outside: the upstream of the handlers, and
// what the admin API and signals need.

// Do is proxy.Upstream: req goes to the pool of its release, found by its
// DOCUMENT_ROOT; a warm-up request to the pool warming up. Of several pools
// with the same root (a directory replaced in place, a switch back to a
// release), the newest takes it.
func (m *managedPools) Do(ctx context.Context, req *gofast.Request) (*fcgi.Response, error) {
	root, warm := req.Params["DOCUMENT_ROOT"], req.Params[proxy.WarmupParam] == "1"
	var p *fpmPool
	for _, rt := range *m.routes.Load() {
		if rt.root == root && rt.warm == warm {
			p = rt.p
			break
		}
	}
	if p == nil {
		if req.Stdin != nil {
			req.Stdin.Close()
		}
		return nil, fmt.Errorf("%w: no php-fpm pool runs the release of %s", fcgi.ErrConnect, root)
	}
	p.inFlight.Add(1)
	resp, err := p.client.Do(ctx, req)
	if err != nil {
		p.inFlight.Add(-1)
		return nil, err
	}
	resp.Body = &poolBody{ReadCloser: resp.Body, p: p}
	return resp, nil
}

// poolBody counts an exchange in its pool's in-flight count until closed.
type poolBody struct {
	io.ReadCloser
	p    *fpmPool
	done atomic.Bool
}

func (b *poolBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.p.inFlight.Add(-1)
	}
	return b.ReadCloser.Close()
}

// info lists the pools alive, oldest first, then those recently stopped,
// for the admin API.
func (m *managedPools) info() []admin.Pool {
	type snap struct {
		pid int
		out admin.Pool
	}
	m.mu.Lock()
	var list []snap
	for _, p := range slices.Concat(m.alive, m.gone) {
		s := snap{out: admin.Pool{
			Name: p.name, Release: p.rel.Dir, Root: p.rel.Root, Gen: p.rel.Gen, Socket: p.socket,
			State: p.state.String(), StateSince: p.since, InFlight: p.inFlight.Load(),
			Started: p.started, Stopped: p.stopped,
		}}
		if p.up || p.state == poolStopped && p.ch != nil {
			s.pid = p.ch.cmd.Process.Pid
			s.out.PID = s.pid
		}
		if p.err != nil {
			s.out.Error = p.err.Error()
		}
		list = append(list, s)
	}
	m.mu.Unlock()
	pools := make([]admin.Pool, len(list))
	for i, s := range list {
		if s.out.State != "stopped" && s.pid != 0 {
			s.out.Processes, s.out.RSS = groupUsage(s.pid)
		}
		pools[i] = s.out
	}
	return pools
}

// poolStats adds up the connection pools of the pools' FastCGI clients,
// plus the counters of the pools stopped.
func (m *managedPools) poolStats() fcgi.PoolStats {
	m.mu.Lock()
	var clients []*fcgi.Client
	for _, p := range m.alive {
		if p.up {
			clients = append(clients, p.client)
		}
	}
	stopped := m.stopped
	m.mu.Unlock()
	return addPoolCounters(sumPoolStats(clients), stopped)
}

// ready is the readiness check of managed mode: the root resolves (as for
// readyCheck) and the pool of rs's current release serves and answers a
// FastCGI request.
func (m *managedPools) ready(ctx context.Context, rs *resolve.Releases) error {
	if since := rs.DownSince(); !since.IsZero() && time.Since(since) > readyDownGrace {
		return fmt.Errorf("root does not resolve since %s", since.Format(time.RFC3339))
	}
	cur := rs.Current()
	m.mu.Lock()
	i := slices.IndexFunc(m.alive, func(p *fpmPool) bool { return p.rel == cur && p.state == poolServing })
	c := m.cfg
	var p *fpmPool
	if i >= 0 {
		p = m.alive[i]
	}
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("no php-fpm pool serves release %s (gen %d)", cur.Dir, cur.Gen)
	}
	if _, err := askFastCGI(ctx, "unix", p.socket, c, cur.Root); err != nil {
		return fmt.Errorf("php-fpm pool %s: %w", p.name, err)
	}
	return nil
}

// signal sends sig to every pool's master (SIGUSR1: reopen log files).
func (m *managedPools) signal(sig os.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.alive {
		if p.up && p.state < poolStopping {
			p.ch.signal(sig)
		}
	}
}
