package admin

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"realroot/proxy"
	"realroot/proxy/fcgi"
)

// stateCollector reads the releases, the connection pool and the process at
// scrape time: nothing of it costs anything between scrapes.
type stateCollector struct {
	releases Releases
	pool     func() fcgi.PoolStats        // nil: no pool metrics
	pools    func() []Pool                // nil: no managed php-fpm pools
	ups      func() []proxy.UpstreamStats // nil: one upstream
	version  string
	start    time.Time
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descSwitches = desc("realroot_release_switches_total",
		"Times the current release changed.")
	descResolveFailures = desc("realroot_resolve_failures_total",
		"Times the root stopped resolving to a directory (one per outage); the last good release is served meanwhile.")
	descDetections = desc("realroot_release_detections_total",
		"Switches found by a filesystem event (watch) or by the readlink poll (poll). Poll detections on a filesystem with events mean events were missed.", "source")
	descPrepareFailures = desc("realroot_release_prepare_failures_total",
		"Failed warm-ups of a new release.")
	descInFlight = desc("realroot_release_in_flight",
		"Requests in flight per release: the current one and those draining.", "release", "gen", "state")
	descGeneration = desc("realroot_release_generation",
		"Generation of the current release (1 at start, +1 per switch).")
	descSinceSwitch = desc("realroot_release_seconds_since_switch",
		"Seconds since the current release became current (since start when there was no switch).")
	descRootResolves = desc("realroot_root_resolves",
		"1 while the root resolves to a directory, 0 while it does not and the last good release is served.")
	descBuildInfo = desc("realroot_build_info",
		"Always 1; the version in a label.", "version")
	descStartTime = desc("realroot_start_time_seconds",
		"When the server started, in Unix seconds.")

	descConnsOpen = desc("realroot_fastcgi_conns_open",
		"Connections to php-fpm open or being dialed.")
	descConnsInUse = desc("realroot_fastcgi_conns_in_use",
		"Connections to php-fpm running an exchange or being dialed.")
	descConnsIdle = desc("realroot_fastcgi_conns_idle",
		"Connections to php-fpm kept for reuse.")
	descWaiting = desc("realroot_fastcgi_requests_waiting",
		"Requests queued for a connection to php-fpm.")
	descDials = desc("realroot_fastcgi_dials_total",
		"Connections to php-fpm opened.")
	descReuses = desc("realroot_fastcgi_reuses_total",
		"Exchanges run on a kept connection.")
	descRetries = desc("realroot_fastcgi_retries_total",
		"Requests retried on a fresh connection after a kept one failed before any reply.")
	descBusy = desc("realroot_fastcgi_busy_total",
		"Requests answered 503 by backpressure: every connection stayed busy and the queue was full or timed out.")
	descIdleClosed = desc("realroot_fastcgi_idle_closed_total",
		"Idle connections closed after the idle timeout.")
	descYielded = desc("realroot_fastcgi_yielded_total",
		"Kept connections closed as they came back because a request on a new connection waited for php-fpm (more connections than workers).")

	descUpstreamUp = desc("realroot_upstream_up",
		"1 while a php-fpm upstream is used, 0 while it is skipped after a failed request or health check (several fastcgi addresses).", "addr")
	descUpstreamInFlight = desc("realroot_upstream_in_flight",
		"FastCGI exchanges running on each php-fpm upstream, waiting for a connection included.", "addr")
	descUpstreamFailures = desc("realroot_upstream_failures_total",
		"Connect failures and timeouts of requests, and failed health checks, per php-fpm upstream.", "addr")
	descUpstreamRequests = desc("realroot_upstream_requests_total",
		"FastCGI exchanges started on each php-fpm upstream, retries included.", "addr")

	descPoolInFlight = desc("realroot_php_fpm_pool_in_flight",
		"FastCGI exchanges running on each php-fpm pool realroot runs (managed mode).", "pool", "release", "gen", "state")
	descPoolRSS = desc("realroot_php_fpm_pool_rss_bytes",
		"Sum of the VmRSS of each php-fpm pool's master and workers (shared pages count once per process).", "pool", "release", "gen", "state")
	descPoolProcesses = desc("realroot_php_fpm_pool_processes",
		"Processes of each php-fpm pool: its master and workers.", "pool", "release", "gen", "state")
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descSwitches, descResolveFailures, descDetections, descPrepareFailures,
		descInFlight, descGeneration, descSinceSwitch, descRootResolves,
		descBuildInfo, descStartTime,
	} {
		ch <- d
	}
	if c.ups != nil {
		ch <- descUpstreamUp
		ch <- descUpstreamInFlight
		ch <- descUpstreamFailures
		ch <- descUpstreamRequests
	}
	if c.pools != nil {
		ch <- descPoolInFlight
		ch <- descPoolRSS
		ch <- descPoolProcesses
	}
	if c.pool != nil {
		for _, d := range []*prometheus.Desc{
			descConnsOpen, descConnsInUse, descConnsIdle, descWaiting, descDials,
			descReuses, descRetries, descBusy, descIdleClosed, descYielded,
		} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	// Label values must be UTF-8, or the metric panics and the rest of the
	// scrape is lost; a release path need not be.
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), validLabels(labels)...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, validLabels(labels)...)
	}

	st := c.releases.Stats()
	counter(descSwitches, st.Switches)
	counter(descResolveFailures, st.ResolveFailures)
	counter(descDetections, st.WatchDetections, "watch")
	counter(descDetections, st.PollDetections, "poll")
	counter(descPrepareFailures, st.PrepareFailures)

	s := c.releases.Snapshot()
	gauge(descInFlight, float64(s.Current.InFlight), s.Current.Root, strconv.FormatUint(s.Current.Gen, 10), "current")
	for _, r := range s.Draining {
		gauge(descInFlight, float64(r.InFlight), r.Root, strconv.FormatUint(r.Gen, 10), "draining")
	}
	gauge(descGeneration, float64(s.Current.Gen))
	gauge(descSinceSwitch, time.Since(s.Current.Since).Seconds())
	resolves := 1.0
	if !s.DownSince.IsZero() {
		resolves = 0
	}
	gauge(descRootResolves, resolves)
	gauge(descBuildInfo, 1, c.version)
	gauge(descStartTime, float64(c.start.UnixNano())/1e9)

	if c.ups != nil {
		for _, u := range c.ups() {
			up := 1.0
			if u.Down {
				up = 0
			}
			gauge(descUpstreamUp, up, u.Addr)
			gauge(descUpstreamInFlight, float64(u.InFlight), u.Addr)
			counter(descUpstreamFailures, u.Failures, u.Addr)
			counter(descUpstreamRequests, u.Requests, u.Addr)
		}
	}
	if c.pools != nil {
		for _, p := range c.pools() {
			if p.State == "stopped" {
				continue
			}
			l := []string{p.Name, p.Release, strconv.FormatUint(p.Gen, 10), p.State}
			gauge(descPoolInFlight, float64(p.InFlight), l...)
			gauge(descPoolRSS, float64(p.RSS), l...)
			gauge(descPoolProcesses, float64(p.Processes), l...)
		}
	}
	if c.pool == nil {
		return
	}
	p := c.pool()
	gauge(descConnsOpen, float64(p.Open))
	gauge(descConnsInUse, float64(p.InUse))
	gauge(descConnsIdle, float64(p.Idle))
	gauge(descWaiting, float64(p.Waiting))
	counter(descDials, p.Dials)
	counter(descReuses, p.Reuses)
	counter(descRetries, p.Retries)
	counter(descBusy, p.Busy)
	counter(descIdleClosed, p.IdleClosed)
	counter(descYielded, p.Yielded)
}

// validLabels replaces what is not UTF-8 in label values with U+FFFD.
func validLabels(labels []string) []string {
	for i, l := range labels {
		if !utf8.ValidString(l) {
			labels[i] = strings.ToValidUTF8(l, "\uFFFD")
		}
	}
	return labels
}
