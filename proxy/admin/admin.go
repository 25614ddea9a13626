// Package admin is realroot's admin API, an http.Handler for a separate,
// loopback-only listener:
//
//	/metrics  Prometheus metrics (own registry): requests, latency, upstream
//	          errors, the FastCGI pool, releases, Go runtime and process
//	/status   JSON: the current release, releases in flight or drained,
//	          php-fpm's readiness, version, uptime (see Status)
//	/healthz  200 while the process serves
//	/readyz   200 when Options.Ready says so, else 503; cached for a second
//
// It is built from plain values, so that tests need no server: the
// releases (a *resolve.Releases), a pool stats func, a readiness func.
// Deploy tools read /status: `realroot switch --wait` and `realroot releases`
// use it.
package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"realroot/proxy"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// Releases is what the admin API reads of resolve; *resolve.Releases is one.
type Releases interface {
	Snapshot() resolve.Snapshot
	Stats() resolve.Stats
}

// Options configure New.
type Options struct {
	// Releases are the server's releases. Required.
	Releases Releases
	// Metrics are the request metrics the proxy observes. Nil means
	// /metrics has the release, pool and process metrics only.
	Metrics *Metrics
	// PoolStats returns the FastCGI pool's counters, e.g.
	// (*fcgi.Client).Stats. Nil means no pool metrics.
	PoolStats func() fcgi.PoolStats
	// Version is reported by /status and realroot_build_info.
	Version string
	// Start is when the server started. Zero means when New was called.
	Start time.Time
	// Ready reports whether the server can serve: the root resolves and
	// php-fpm answers. Nil means always ready.
	Ready func(ctx context.Context) error
	// ReadyCache is how long a Ready result is reused, so that probes do
	// not hammer php-fpm. Zero means 1s.
	ReadyCache time.Duration
	// ReadyTimeout bounds one Ready call. Zero means 2s.
	ReadyTimeout time.Duration
	// Stopping reports whether the server is shutting down: /readyz then
	// answers 503 at once, whatever Ready said last, so that a probe stops
	// sending clients to listeners that are closed. Nil means never.
	Stopping func() bool
	// Upstreams returns the state of each php-fpm upstream when there are
	// several (proxy.Balancer.Stats), for /status and /metrics. Nil means
	// one upstream.
	Upstreams func() []proxy.UpstreamStats
	// Pools returns the php-fpm pools realroot runs itself (managed mode),
	// for /status and /metrics. Nil means none: php-fpm is run by others.
	Pools func() []Pool
	// Pprof serves Go's profiler (net/http/pprof) under /debug/pprof/.
	Pprof bool
	// Logger receives errors gathering metrics. Nil means none.
	Logger *zap.Logger
}

// Status is the JSON body of /status.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Uptime  float64   `json:"uptime_seconds"`
	// The current release, those draining (superseded, requests still in
	// flight) and those recently drained, newest first.
	resolve.Snapshot
	// InFlight is the requests in flight on all releases.
	InFlight int64         `json:"in_flight"`
	Stats    resolve.Stats `json:"release_stats"`
	PHPFPM   Readiness     `json:"php_fpm"`
	Pool     *PoolStatus   `json:"pool,omitempty"`
	// PHPFPMPools are the php-fpm pools realroot runs, one per release, in
	// managed mode: those alive, oldest first, then those recently stopped.
	PHPFPMPools []Pool `json:"php_fpm_pools,omitempty"`
	// Upstreams are the php-fpm upstreams when there are several: in
	// flight, down (skipped) until when, failures.
	Upstreams []proxy.UpstreamStats `json:"upstreams,omitempty"`
}

// Pool is one php-fpm master that realroot runs for one release (managed
// mode), with its workers.
type Pool struct {
	Name    string `json:"name"`
	Release string `json:"release"` // the release directory
	Root    string `json:"root"`    // the docroot in it
	Gen     uint64 `json:"gen"`
	PID     int    `json:"pid"` // the master's, also its process group's
	Socket  string `json:"socket"`
	// State is starting, warming (answering, warm-up running), serving
	// (the current release's), draining (a previous release's, with
	// requests in flight), stopping or stopped.
	State      string    `json:"state"`
	StateSince time.Time `json:"state_since"`
	InFlight   int64     `json:"in_flight"` // FastCGI exchanges running on it
	// Processes counts the master and its workers (its process group);
	// RSS sums their VmRSS, so pages they share (OPcache's shared memory,
	// libraries) count once per process that touched them.
	Processes int       `json:"processes"`
	RSS       int64     `json:"rss_bytes"`
	Started   time.Time `json:"started"`
	Stopped   time.Time `json:"stopped,omitzero"`
	// Error says why a pool stopped other than after its release drained:
	// it did not start, it exited, it was stopped by the drain timeout.
	Error string `json:"error,omitempty"`
}

// Readiness is the last result of Options.Ready.
type Readiness struct {
	Ready   bool      `json:"ready"`
	Error   string    `json:"error,omitempty"`
	Checked time.Time `json:"checked"`
}

// PoolStatus is fcgi.PoolStats in JSON.
type PoolStatus struct {
	Open       int    `json:"open"`
	Idle       int    `json:"idle"`
	InUse      int    `json:"in_use"`
	Waiting    int    `json:"waiting"`
	Dials      uint64 `json:"dials"`
	Reuses     uint64 `json:"reuses"`
	Retries    uint64 `json:"retries"`
	Busy       uint64 `json:"busy"`
	IdleClosed uint64 `json:"idle_closed"`
	Yielded    uint64 `json:"yielded"`
}

// Handler serves the admin API. Create it with New.
type Handler struct {
	opts     Options
	mux      *http.ServeMux
	ready    probe
	stopping func() bool
}

// New returns the admin API's handler.
func New(opts Options) *Handler {
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	h := &Handler{opts: opts, mux: http.NewServeMux()}
	h.ready = probe{fn: opts.Ready, ttl: opts.ReadyCache, timeout: opts.ReadyTimeout}
	h.stopping = opts.Stopping
	if h.ready.ttl <= 0 {
		h.ready.ttl = time.Second
	}
	if h.ready.timeout <= 0 {
		h.ready.timeout = 2 * time.Second
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		&stateCollector{releases: opts.Releases, pool: opts.PoolStats, pools: opts.Pools, ups: opts.Upstreams, version: opts.Version, start: opts.Start},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if opts.Metrics != nil {
		reg.MustRegister(opts.Metrics)
	}
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{opts.Logger},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	h.mux.HandleFunc("GET /status", h.status)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "ok\n")
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	if opts.Pprof {
		h.mux.HandleFunc("/debug/pprof/", pprof.Index)
		h.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		h.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		h.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		h.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "realroot admin: /metrics /status /healthz /readyz\n")
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// Status returns what /status serves.
func (h *Handler) Status(ctx context.Context) Status {
	s := Status{
		Version:  h.opts.Version,
		Started:  h.opts.Start,
		Uptime:   time.Since(h.opts.Start).Seconds(),
		Snapshot: h.opts.Releases.Snapshot(),
		Stats:    h.opts.Releases.Stats(),
	}
	s.InFlight = s.Current.InFlight
	for _, r := range s.Draining {
		s.InFlight += r.InFlight
	}
	err, at := h.ready.check(ctx)
	s.PHPFPM = Readiness{Ready: err == nil, Checked: at}
	if err != nil {
		s.PHPFPM.Error = err.Error()
	}
	if h.opts.PoolStats != nil {
		p := h.opts.PoolStats()
		s.Pool = &PoolStatus{
			Open: p.Open, Idle: p.Idle, InUse: p.InUse, Waiting: p.Waiting,
			Dials: p.Dials, Reuses: p.Reuses, Retries: p.Retries, Busy: p.Busy,
			IdleClosed: p.IdleClosed, Yielded: p.Yielded,
		}
	}
	if h.opts.Pools != nil {
		s.PHPFPMPools = h.opts.Pools()
	}
	if h.opts.Upstreams != nil {
		s.Upstreams = h.opts.Upstreams()
	}
	return s
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	b, err := json.MarshalIndent(h.Status(r.Context()), "", "  ")
	if err != nil {
		text(w, http.StatusInternalServerError, err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.stopping != nil && h.stopping() {
		text(w, http.StatusServiceUnavailable, "not ready: shutting down\n")
		return
	}
	if err, _ := h.ready.check(r.Context()); err != nil {
		text(w, http.StatusServiceUnavailable, fmt.Sprintf("not ready: %v\n", err))
		return
	}
	text(w, http.StatusOK, "ready\n")
}

func text(w http.ResponseWriter, status int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(s))
}

// probe caches the result of a readiness func for ttl. Callers arriving
// while it runs wait for that one call rather than starting their own.
type probe struct {
	fn      func(context.Context) error
	ttl     time.Duration
	timeout time.Duration

	mu  sync.Mutex
	at  time.Time // of the cached result; zero: none yet
	err error
}

// check returns the cached result, or a fresh one when it is older than
// ttl, and when it was taken. The call is detached from ctx but for its
// values: a client giving up must not cache "context canceled".
func (p *probe) check(ctx context.Context) (error, time.Time) {
	if p.fn == nil {
		return nil, time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < p.ttl {
		return p.err, p.at
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	p.err = p.fn(cctx)
	p.at = time.Now()
	return p.err, p.at
}

// promLogger sends promhttp's errors to zap.
type promLogger struct{ log *zap.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn("metrics", zap.String("error", fmt.Sprint(v...)))
}
