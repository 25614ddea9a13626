package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy"
	"realroot/proxy/admin"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// The serving side of the deploy features: the admin listener, the
// readiness probe, warm-up and the on-drain command. daemon.run starts the
// admin listener, server.build wires the rest; switch.go and releases.go are
// their clients.

// checkAdminAddr refuses an admin address other than loopback unless
// allowRemote: the admin API has no authentication.
func checkAdminAddr(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin: %q is not host:port", addr)
	}
	if allowRemote {
		return nil
	}
	ip := net.ParseIP(host)
	if host == "localhost" || ip != nil && ip.IsLoopback() {
		return nil
	}
	if host == "" {
		host = "every interface"
	}
	return fmt.Errorf("admin: %q listens on %s, not loopback; the admin API has no authentication: use 127.0.0.1:PORT, or --admin-allow-remote behind a firewall", addr, host)
}

// listenAdmin opens the admin listener, refusing a non-loopback address
// unless allowRemote.
func listenAdmin(addr string, allowRemote bool) (net.Listener, error) {
	if err := checkAdminAddr(addr, allowRemote); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}

// newAdminServer is the http.Server of the admin listener: short timeouts,
// its errors through zap.
func newAdminServer(h http.Handler, log *zap.Logger) *http.Server {
	errLog, _ := zap.NewStdLogAt(log, zap.WarnLevel)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          errLog,
	}
}

// adminListener is the admin API being served, and the goroutine serving
// it.
type adminListener struct {
	hs   *http.Server
	addr net.Addr
	log  *zap.Logger
	done chan struct{} // closed when Serve has returned
}

// startAdmin serves the admin API of srv on c.Admin. Its handler reads the
// current generation at each request, so that it follows reloads.
func startAdmin(c conf.Config, srv *server, log *zap.Logger) (*adminListener, error) {
	ln, err := listenAdmin(c.Admin, c.AdminAllowRemote)
	if err != nil {
		return nil, err
	}
	opts := admin.Options{
		Releases:  serverReleases{srv},
		Metrics:   srv.metrics,
		PoolStats: srv.poolStats,
		Upstreams: func() []proxy.UpstreamStats {
			if b := srv.cur.Load().up.bal; b != nil {
				return b.Stats()
			}
			return nil
		},
		Version: version,
		Ready: readyCheck(func() (conf.Config, *resolve.Releases) {
			g := srv.cur.Load()
			return g.cfg, g.root.rs
		}),
		Stopping: srv.stopping.Load,
		Pprof:    c.AdminPprof,
		Logger:   log,
	}
	if m := srv.pools; m != nil { // managed mode: the pools realroot runs
		opts.PoolStats, opts.Pools = m.poolStats, m.info
		opts.Ready = func(ctx context.Context) error { return m.ready(ctx, srv.cur.Load().root.rs) }
	}
	h := admin.New(opts)
	a := &adminListener{hs: newAdminServer(h, log), addr: ln.Addr(), log: log, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if err := a.hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	return a, nil
}

// adminShutdownTimeout bounds the wait for admin requests in flight at
// shutdown (a /readyz asking php-fpm takes at most 2s).
const adminShutdownTimeout = 5 * time.Second

// stop stops the admin listener, lets its requests finish, and waits for
// its goroutine.
func (a *adminListener) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
	defer cancel()
	if err := a.hs.Shutdown(ctx); err != nil {
		a.log.Warn("admin requests cut short", zap.Error(err))
		a.hs.Close()
	}
	<-a.done
}

// readyDownGrace is how long the root may fail to resolve before the server
// reports not ready. A copy deploy or an unlink + symlink leaves it missing
// for a moment, while the last good release is served well: every server
// of a shared volume turning unready at once would be an outage.
const readyDownGrace = 10 * time.Second

// readyCheck returns admin.Options.Ready: the root resolves (or stopped
// resolving less than readyDownGrace ago) and php-fpm answers one FastCGI
// request, on at least one of the addresses (the upstream fails over).
// cur returns the configuration and releases being served.
func readyCheck(cur func() (conf.Config, *resolve.Releases)) func(context.Context) error {
	return func(ctx context.Context) error {
		c, rs := cur()
		if since := rs.DownSince(); !since.IsZero() && time.Since(since) > readyDownGrace {
			return fmt.Errorf("root %s does not resolve since %s", c.Root, since.Format(time.RFC3339))
		}
		docroot := rs.Current().Root
		var errs []error
		for _, a := range c.FastCGI {
			network, address, err := conf.ParseFastCGI(a)
			if err == nil {
				if _, err = askFastCGI(ctx, network, address, c, docroot); err == nil {
					return nil
				}
			}
			errs = append(errs, fmt.Errorf("fastcgi %s: %w", a, err))
		}
		return errors.Join(errs...)
	}
}

// serverReleases is admin.Releases for srv: its merged Snapshot and
// Stats.
type serverReleases struct{ srv *server }

func (r serverReleases) Snapshot() resolve.Snapshot { return r.srv.snapshot() }
func (r serverReleases) Stats() resolve.Stats       { return r.srv.releaseStats() }

// sumPoolStats adds up the pool counters of clients, for
// admin.Options.PoolStats.
func sumPoolStats(clients []*fcgi.Client) fcgi.PoolStats {
	var s fcgi.PoolStats
	for _, c := range clients {
		p := c.Stats()
		s.Open += p.Open
		s.Idle += p.Idle
		s.InUse += p.InUse
		s.Waiting += p.Waiting
		s = addPoolCounters(s, p)
	}
	return s
}

// warmer returns resolve.Options.Prepare: it warms a new release up with
// paths through the handler h returns, within timeout. It is nil when paths
// is empty (warm-up off).
func warmer(h func() *proxy.Handler, paths []string, timeout time.Duration) func(context.Context, *resolve.Release) error {
	if len(paths) == 0 {
		return nil
	}
	return func(ctx context.Context, next *resolve.Release) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return h().Warm(ctx, next, paths)
	}
}

// drainHook runs a shell command once per drained release (--on-drain),
// with REALROOT_RELEASE (the release directory), REALROOT_RELEASE_ROOT (the
// docroot in it) and REALROOT_GEN in its environment. Each run is
// asynchronous and bounded by a timeout; a failure is logged.
type drainHook struct {
	command string
	timeout time.Duration
	reaper  *reaper // nil unless realroot is PID 1
	log     *zap.Logger

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// newDrainHook runs command on drain; with r, the reaper (realroot is
// PID 1), through it.
func newDrainHook(command string, timeout time.Duration, r *reaper, log *zap.Logger) *drainHook {
	return &drainHook{command: command, timeout: timeout, reaper: r, log: log}
}

// OnDrain is resolve.Options.OnDrain: it starts the command and returns at
// once. After Close it does nothing.
func (h *drainHook) OnDrain(info resolve.Info) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		h.log.Warn("on-drain command not run: shutting down", zap.String("release", info.Dir), zap.Uint64("gen", info.Gen))
		return
	}
	h.wg.Go(func() { h.run(info) })
}

// Close waits for the commands running; each is bounded by its timeout.
func (h *drainHook) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *drainHook) run(info resolve.Info) {
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", h.command)
	cmd.Env = append(os.Environ(),
		"REALROOT_RELEASE="+info.Dir,
		"REALROOT_RELEASE_ROOT="+info.Root,
		"REALROOT_GEN="+strconv.FormatUint(info.Gen, 10))
	out := &cappedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second // a background child holding the pipe
	start := time.Now()
	var err error
	if h.reaper != nil {
		err = h.reaper.run(cmd)
	} else {
		err = cmd.Run()
	}
	fields := []zap.Field{
		zap.String("release", info.Dir),
		zap.Uint64("gen", info.Gen),
		zap.Duration("duration", time.Since(start)),
		zap.ByteString("output", out.b),
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("killed after %v: %w", h.timeout, err)
		}
		h.log.Warn("on-drain command failed", append(fields, zap.Error(err))...)
		return
	}
	h.log.Info("on-drain command done", fields...)
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.max - len(c.b); n > 0 {
		c.b = append(c.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}
