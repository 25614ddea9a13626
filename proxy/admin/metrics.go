package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The label values of request metrics. Every combination is created by
// NewMetrics, so that observing a request is a few atomic adds: no label
// lookup, no allocation.
var (
	routes = [...]string{"static", "php", "index", "front", "redirect", "none"}
	// classes: 1xx to 5xx, then anything else.
	classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"}
	// upstreamKinds: proxy.Observer's kinds, then anything else.
	upstreamKinds = [...]string{"connect", "timeout", "truncated", "overloaded", "busy", "protocol", "other"}
)

// durationBuckets span a static file (sub-millisecond) to a request at
// --read-timeout's default (60 s).
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics counts requests and upstream errors. It is a proxy.Observer (pass
// it in proxy.Options.Observer) and a prometheus.Collector; Options.Metrics
// serves it on /metrics. Create it with NewMetrics.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream prometheus.Histogram
	errors   *prometheus.CounterVec

	// The children, resolved once.
	byRoute  [len(routes)][len(classes)]prometheus.Counter
	durRoute [len(routes)]prometheus.Observer
	byKind   [len(upstreamKinds)]prometheus.Counter
}

// NewMetrics returns Metrics with every series at zero.
func NewMetrics() *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realroot_http_requests_total",
			Help: "HTTP requests served, by route (static, php, index, front, redirect, none: refused before routing) and status class.",
		}, []string{"route", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "realroot_http_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, by route.",
			Buckets: durationBuckets,
		}, []string{"route"}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "realroot_upstream_duration_seconds",
			Help:    "Time spent with php-fpm per request that reached it: from sending the request to the end of its response.",
			Buckets: durationBuckets,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realroot_upstream_errors_total",
			Help: "Failed exchanges with php-fpm, by kind: connect, timeout, truncated, overloaded, busy (refused by the connection pool: 503), protocol.",
		}, []string{"kind"}),
	}
	for i, r := range routes {
		for j, c := range classes {
			m.byRoute[i][j] = m.requests.WithLabelValues(r, c)
		}
		m.durRoute[i] = m.duration.WithLabelValues(r)
	}
	for i, k := range upstreamKinds {
		m.byKind[i] = m.errors.WithLabelValues(k)
	}
	return m
}

// ObserveRequest counts one request; see proxy.Observer.
func (m *Metrics) ObserveRequest(route string, status int, total, upstream time.Duration) {
	r := routeIndex(route)
	m.byRoute[r][classIndex(status)].Inc()
	m.durRoute[r].Observe(total.Seconds())
	if upstream > 0 {
		m.upstream.Observe(upstream.Seconds())
	}
}

// ObserveUpstreamError counts one failed exchange; see proxy.Observer.
func (m *Metrics) ObserveUpstreamError(kind string) {
	m.byKind[kindIndex(kind)].Inc()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
	m.upstream.Describe(ch)
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
	m.upstream.Collect(ch)
	m.errors.Collect(ch)
}

func routeIndex(route string) int {
	switch route {
	case "static":
		return 0
	case "php":
		return 1
	case "index":
		return 2
	case "front":
		return 3
	case "redirect":
		return 4
	}
	return 5 // none
}

func classIndex(status int) int {
	if status >= 100 && status < 600 {
		return status/100 - 1
	}
	return len(classes) - 1
}

func kindIndex(kind string) int {
	switch kind {
	case "connect":
		return 0
	case "timeout":
		return 1
	case "truncated":
		return 2
	case "overloaded":
		return 3
	case "busy":
		return 4
	case "protocol":
		return 5
	}
	return len(upstreamKinds) - 1
}
