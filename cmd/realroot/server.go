package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy"
	"realroot/proxy/admin"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// server is the http.Handler behind every listener. It hands each request
// to the current generation: a handler built from one configuration. A
// reload builds a new generation and swaps it in with one atomic store;
// requests that arrived before keep theirs until they are done, and the
// resources only the old generation used (a root watcher, FastCGI
// connections) are released after its last request.
type server struct {
	logs    *logs
	log     *zap.Logger
	cur     atomic.Pointer[generation]
	metrics *admin.Metrics // every generation's handler observes into it
	drain   *drainHook     // nil without on-drain
	pools   *managedPools  // nil unless managed-pool: realroot runs php-fpm

	stopping    atomic.Bool   // set once shutting down, for /readyz
	sendTimeout time.Duration // HTTP/2 responses' (streamSendTimeout); restart-only
	httpLog     *zap.Logger

	// What root watchers and FastCGI clients that a reload replaced had
	// counted, so that the admin API's counters never go down.
	baseMu      sync.Mutex
	releaseBase resolve.Stats
	poolBase    fcgi.PoolStats

	mu    sync.Mutex                   // serializes reloads and reference counts
	roots atomic.Pointer[[]*rootWatch] // the root watchers in use; replaced (never changed) under mu
	wg    sync.WaitGroup               // watchers and the goroutines retiring generations

	// The on-drain commands of release directories that another root
	// watcher still holds (releaseDrained), by directory, and when the
	// command last ran for a directory.
	drainMu      sync.Mutex
	drainPending map[string]resolve.Info
	drainRan     map[string]time.Time
}

// generation is one configuration's handler and what it uses.
type generation struct {
	cfg     conf.Config
	handler *proxy.Handler
	root    *rootWatch
	up      *upstream

	// state counts the requests in flight, plus retiredBit once a newer
	// generation replaced this one. drained is closed when it is retired
	// and none is left.
	state   atomic.Int64
	once    sync.Once
	drained chan struct{}
}

const retiredBit = 1 << 62

// rootWatch is a resolve.Releases and its watching goroutine, shared by
// the generations whose root and poll interval are the same.
type rootWatch struct {
	rs     *resolve.Releases
	cancel context.CancelFunc
	pools  *poolRoot // its releases' php-fpm pools in managed mode, else nil
	refs   int       // generations using it; guarded by server.mu
}

// newServer builds the first generation from c. In managed mode it starts
// the current release's php-fpm pool (with r, the reaper, when realroot is
// PID 1); ctx done cancels that start.
func newServer(ctx context.Context, c conf.Config, logs *logs, r *reaper) (*server, error) {
	s := &server{logs: logs, log: logs.main, metrics: admin.NewMetrics(), sendTimeout: c.SendTimeout,
		drainPending: map[string]resolve.Info{}, drainRan: map[string]time.Time{}}
	s.httpLog = s.log.Named("http")
	if c.OnDrain != "" {
		s.drain = newDrainHook(c.OnDrain, c.OnDrainTimeout, r, s.log.Named("on-drain"))
	}
	if c.ManagedPool != "" {
		var err error
		if s.pools, err = newManaged(c, r, s.log.Named("pools")); err != nil {
			return nil, err
		}
		m := s.pools
		defer context.AfterFunc(ctx, func() { m.cancel(context.Cause(ctx)) })()
	}
	g, err := s.build(c, nil)
	if err != nil {
		if s.pools != nil {
			s.pools.close()
		}
		return nil, err
	}
	s.cur.Store(g)
	return s, nil
}

// config returns the configuration being served.
func (s *server) config() conf.Config { return s.cur.Load().cfg }

// ServeHTTP serves r with the current generation.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := s.acquire()
	defer g.release()
	if r.ProtoMajor == 2 && s.sendTimeout > 0 {
		sw := newStreamSendTimeout(w, r, s.sendTimeout, s.httpLog)
		g.handler.ServeHTTP(sw, r)
		sw.done()
		return
	}
	g.handler.ServeHTTP(w, r)
}

// rejected logs a request the HTTP/1 server answered itself (h1.Server's
// Rejected) in the current generation's access log.
func (s *server) rejected(remoteAddr string, status int, reason string, bytes int) {
	g := s.acquire()
	defer g.release()
	g.handler.LogRejected(remoteAddr, status, reason, bytes)
}

// acquire returns the current generation with its in-flight count raised.
func (s *server) acquire() *generation {
	for {
		g := s.cur.Load()
		if g.state.Add(1)&retiredBit == 0 {
			return g
		}
		// Retired between the load and the add: undo, and take the one
		// that replaced it (stored before the bit was set). After close,
		// there is none: serve with the last.
		g.release()
		if s.cur.Load() == g {
			g.state.Add(1)
			return g
		}
	}
}

func (g *generation) release() {
	if g.state.Add(-1) == retiredBit {
		g.once.Do(func() { close(g.drained) })
	}
}

// reload builds a generation from c and swaps it in. On error (the new
// root does not resolve) the current one keeps serving.
func (s *server) reload(c conf.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	g, err := s.build(c, old)
	if err != nil {
		return err
	}
	s.baseMu.Lock()
	if g.root != old.root {
		s.releaseBase = addReleaseStats(s.releaseBase, old.root.rs.Stats())
	}
	if g.up != old.up {
		s.poolBase = addPoolCounters(s.poolBase, sumPoolStats(old.up.clients))
	}
	s.cur.Store(g)
	s.baseMu.Unlock()
	if g.root != old.root && g.root.pools != nil {
		// No request arriving from now on pins a release of the roots
		// that g replaced.
		s.pools.retire(g.root.pools)
	}
	s.retire(old)
	return nil
}

// close retires the current generation, stops the managed php-fpm pools,
// and waits, at most until ctx is done, for its requests and every watcher
// to end. Call it after http.Server.Shutdown.
func (s *server) close(ctx context.Context) error {
	s.mu.Lock()
	s.retire(s.cur.Load())
	s.mu.Unlock()
	if s.pools != nil {
		s.pools.close() // each within pool-stop-timeout
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("requests still in flight after the shutdown timeout")
	}
}

// retire marks g replaced and, once its last request is done, releases what
// no newer generation uses. s.mu is held.
func (s *server) retire(g *generation) {
	if g.state.Add(retiredBit) == retiredBit {
		g.once.Do(func() { close(g.drained) })
	}
	s.wg.Go(func() {
		<-g.drained
		s.mu.Lock()
		defer s.mu.Unlock()
		s.unref(g)
	})
}

// build makes a generation from c, reusing prev's root watcher and FastCGI
// clients when their settings are unchanged. s.mu is held (or s is new).
//
// A root watcher's warm-up, on-drain command and whether and for which
// user it checks releases are fixed when it is built; their settings are
// restart-only, so that a watcher built for a new root by a reload gets the
// same. The files its checks look for follow the routing settings.
func (s *server) build(c conf.Config, prev *generation) (*generation, error) {
	if (s.pools != nil) != (c.ManagedPool != "") {
		return nil, errors.New("managed-pool: turning managed mode on or off needs a restart")
	}
	if s.pools == nil {
		return s.buildGen(c, prev)
	}
	// The pools' settings change first (a new root's pool starts with
	// them), and back if the generation cannot be built.
	restore, err := s.pools.configure(c)
	if err != nil {
		return nil, err
	}
	g, err := s.buildGen(c, prev)
	if err != nil {
		restore()
	}
	return g, err
}

// buildGen is build, once the managed pools have c's settings.
func (s *server) buildGen(c conf.Config, prev *generation) (*generation, error) {
	g := &generation{cfg: c, drained: make(chan struct{})}
	var run func()
	reuse := prev != nil && prev.cfg.Root == c.Root && prev.cfg.PollInterval == c.PollInterval
	if !reuse {
		var err error
		g.root, run, err = s.newRootWatch(c, prev, g)
		if errors.Is(err, errWarmKept) {
			// As resolve keeps the current release when a new one fails
			// its warm-up: the running watcher keeps serving it, and the
			// next reload tries again.
			var kept []string
			if c.Root != prev.cfg.Root {
				kept = append(kept, "root")
			}
			if c.PollInterval != prev.cfg.PollInterval {
				kept = append(kept, "poll-interval")
			}
			s.log.Warn("release warm-up failed; keeping the running root watcher",
				zap.String("current_release", prev.root.rs.Current().Dir), zap.Strings("settings", kept), zap.Error(err))
			g.cfg.Root, g.cfg.PollInterval = prev.cfg.Root, prev.cfg.PollInterval
			reuse = true
		} else if err != nil {
			return nil, err
		}
	}
	if reuse {
		g.root = prev.root
		// The checks follow the routing settings, which a reload may change.
		g.root.rs.SetCheckRouting(c.FrontControllerScript(), c.Index, c.PHPExtensions)
	}
	switch {
	case prev != nil && sameUpstream(prev.cfg, c):
		g.up = prev.up
	case s.pools != nil:
		g.up = &upstream{pools: s.pools}
	default:
		g.up = newUpstream(c, s.log.Named("upstream"))
		if bal := g.up.bal; bal != nil && c.UpstreamHealthInterval > 0 {
			ctx, cancel := context.WithCancel(context.Background())
			g.up.cancel = cancel
			s.wg.Go(func() { bal.Run(ctx) })
		}
	}
	if g.root.refs++; g.root.refs == 1 {
		var roots []*rootWatch
		if p := s.roots.Load(); p != nil {
			roots = *p
		}
		roots = append(slices.Clip(roots), g.root)
		s.roots.Store(&roots)
	}
	g.up.refs++
	var cache []proxy.CacheRule
	for _, r := range c.CacheControl {
		cache = append(cache, proxy.CacheRule{Match: r.Match, Value: r.Value})
	}
	var headers []proxy.HeaderRule
	for _, r := range c.Headers {
		headers = append(headers, proxy.HeaderRule{Match: r.Match, Name: r.Name, Value: r.Value})
	}
	g.handler = proxy.New(g.root.rs, g.up, proxy.Options{
		Index:              c.Index,
		FrontController:    c.FrontControllerScript(),
		PHPExtensions:      c.PHPExtensions,
		ServerName:         c.ServerName,
		ServerSoftware:     "realroot/" + version,
		MaxBodySize:        maxBody(c.MaxBodySize),
		BodyTimeout:        c.BodyTimeout,
		MaxURILength:       int(c.MaxURILength),
		BufferResponses:    c.BufferResponses,
		Params:             c.Params,
		Deny:               c.Deny,
		CacheControl:       cache,
		Headers:            headers,
		DisableCompression: !c.Compress,
		CompressMinSize:    int64(c.CompressMinSize),
		InternalLocations:  c.InternalLocations,
		SendfileDirs:       c.SendfileDirs,
		TrustedProxies:     trustedPrefixes(c),
		Logger:             s.log.Named("proxy"),
		AccessLog:          s.logs.access(c.AccessLog),
		Observer:           s.metrics,
	})
	if run != nil {
		s.wg.Go(run) // after g.handler is set: Prepare may read it
	}
	return g, nil
}

// releaseStats is the current root watcher's counters, plus those of the
// watchers reloads replaced.
func (s *server) releaseStats() resolve.Stats {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	return addReleaseStats(s.releaseBase, s.cur.Load().root.rs.Stats())
}

// poolStats is the current FastCGI clients' state, plus the counters of
// the clients reloads replaced.
func (s *server) poolStats() fcgi.PoolStats {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	return addPoolCounters(sumPoolStats(s.cur.Load().up.clients), s.poolBase)
}

func addReleaseStats(a, b resolve.Stats) resolve.Stats {
	a.Switches += b.Switches
	a.ResolveFailures += b.ResolveFailures
	a.WatchDetections += b.WatchDetections
	a.PollDetections += b.PollDetections
	a.PrepareFailures += b.PrepareFailures
	return a
}

// addPoolCounters adds b's counters to a; a's gauges (Open, Idle...) stay.
func addPoolCounters(a, b fcgi.PoolStats) fcgi.PoolStats {
	a.Dials += b.Dials
	a.Reuses += b.Reuses
	a.Retries += b.Retries
	a.Busy += b.Busy
	a.IdleClosed += b.IdleClosed
	a.Yielded += b.Yielded
	return a
}

// snapshot is the releases' state for the admin API: the current root
// watcher's, with what older watchers still in use (a reload changed the
// root or the poll interval) have in flight counted as draining, so that a
// prune never deletes a release that requests of an older configuration
// still run on. A release both watchers know is draining if either has it
// so, with their requests added up.
func (s *server) snapshot() resolve.Snapshot {
	cur := s.cur.Load().root
	snap := cur.rs.Snapshot()
	index := func(list []resolve.Info, dir string) int {
		return slices.IndexFunc(list, func(in resolve.Info) bool { return in.Dir == dir })
	}
	for _, w := range *s.roots.Load() {
		if w == cur {
			continue
		}
		o := w.rs.Snapshot()
		for _, in := range append([]resolve.Info{o.Current}, o.Draining...) {
			if in.Dir == snap.Current.Dir {
				continue
			}
			if i := index(snap.Draining, in.Dir); i >= 0 {
				snap.Draining[i].InFlight += in.InFlight
				continue
			}
			if i := index(snap.Drained, in.Dir); i >= 0 {
				snap.Drained = slices.Delete(snap.Drained, i, i+1)
			}
			snap.Draining = append(snap.Draining, in)
		}
		for _, in := range o.Drained {
			if in.Dir != snap.Current.Dir && index(snap.Draining, in.Dir) < 0 && index(snap.Drained, in.Dir) < 0 {
				snap.Drained = append(snap.Drained, in)
			}
		}
	}
	return snap
}

// unref drops g's references; what is left unused is stopped. s.mu is held.
func (s *server) unref(g *generation) {
	if g.root.refs--; g.root.refs == 0 {
		roots := slices.DeleteFunc(slices.Clone(*s.roots.Load()), func(w *rootWatch) bool { return w == g.root })
		s.roots.Store(&roots)
		g.root.cancel()
		if g.root.pools != nil {
			g.root.pools.close()
		}
		s.drainWaiting()
	}
	if g.up.refs--; g.up.refs == 0 {
		g.up.close()
	}
}

// upstream sends requests to one php-fpm address, to several through a
// proxy.Balancer, or in managed mode to the pool of the request's release.
type upstream struct {
	clients []*fcgi.Client
	bal     *proxy.Balancer    // several addresses, else nil
	cancel  context.CancelFunc // stops bal's health check; nil without one
	pools   *managedPools      // managed mode: clients is empty
	refs    int                // generations using it; guarded by server.mu
}

// newUpstream makes the clients of c's addresses, and a balancer over them
// when there are several. Its health check, if any, is for the caller to
// run.
func newUpstream(c conf.Config, log *zap.Logger) *upstream {
	u := &upstream{}
	var backends []proxy.Backend
	for _, a := range c.FastCGI {
		network, address, _ := conf.ParseFastCGI(a) // validated
		cl := newClient(network, address, c)
		u.clients = append(u.clients, cl)
		backends = append(backends, proxy.Backend{Addr: a, Upstream: cl})
	}
	if len(backends) > 1 {
		u.bal = proxy.NewBalancer(backends, proxy.BalancerOptions{
			FailTimeout:    c.UpstreamFailTimeout,
			HealthInterval: c.UpstreamHealthInterval,
			PingPath:       c.PingPath,
			Logger:         log,
		})
	}
	return u
}

// newClient is the FastCGI client of one address.
func newClient(network, address string, c conf.Config) *fcgi.Client {
	return &fcgi.Client{
		Network:          network,
		Address:          address,
		DialTimeout:      c.DialTimeout,
		ReadTimeout:      c.ReadTimeout,
		WriteTimeout:     c.WriteTimeout,
		MaxConns:         c.MaxConns,
		IdleTimeout:      c.ConnIdleTimeout,
		QueueTimeout:     c.QueueTimeout,
		MaxQueue:         c.MaxQueue,
		DisableKeepAlive: !c.KeepAlive,
	}
}

// sameUpstream reports whether a and b configure the same FastCGI clients,
// and with several addresses the same balancer.
func sameUpstream(a, b conf.Config) bool {
	same := slices.Equal(a.FastCGI, b.FastCGI) &&
		a.DialTimeout == b.DialTimeout && a.ReadTimeout == b.ReadTimeout && a.WriteTimeout == b.WriteTimeout &&
		a.MaxConns == b.MaxConns && a.ConnIdleTimeout == b.ConnIdleTimeout && a.QueueTimeout == b.QueueTimeout &&
		a.MaxQueue == b.MaxQueue && a.KeepAlive == b.KeepAlive
	if same && len(a.FastCGI) > 1 {
		same = a.UpstreamFailTimeout == b.UpstreamFailTimeout &&
			a.UpstreamHealthInterval == b.UpstreamHealthInterval && a.PingPath == b.PingPath
	}
	return same
}

// Do sends req to its php-fpm: the one address, the balancer's pick, or
// the pool of its release.
func (u *upstream) Do(ctx context.Context, req *gofast.Request) (*fcgi.Response, error) {
	switch {
	case u.pools != nil:
		return u.pools.Do(ctx, req)
	case u.bal != nil:
		return u.bal.Do(ctx, req)
	}
	return u.clients[0].Do(ctx, req)
}

// close stops the health check and closes the clients' idle connections;
// exchanges in progress finish.
func (u *upstream) close() {
	if u.cancel != nil {
		u.cancel() // the server's WaitGroup waits for it
	}
	for _, c := range u.clients {
		c.Close()
	}
}

// maxBody maps the configuration's 0 (no limit) to proxy's negative.
func maxBody(s conf.Size) int64 {
	if s == 0 {
		return -1
	}
	return int64(s)
}
