package proxy

// The state of a Balancer's backends (Stats) and its active health check
// (Run), with the probe request it and realroot check send.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/yookoala/gofast"

	"realroot/proxy/fcgi"
)

// UpstreamStats is one backend of a Balancer, for /status and metrics.
type UpstreamStats struct {
	Addr string `json:"addr"`
	// InFlight counts the exchanges running on it, from Do until the
	// response body is closed (waiting for a connection included).
	InFlight int64 `json:"in_flight"`
	// Down: its last request or health check could not connect, timed out
	// (or, for a health check, got a bad answer).
	Down bool `json:"down"`
	// DownUntil is when it stops being skipped; zero when up.
	DownUntil time.Time `json:"down_until,omitzero"`
	// Failures counts the connect failures and timeouts of its requests,
	// and its failed health checks.
	Failures uint64 `json:"failures"`
	// Requests counts the exchanges started on it, retries included.
	Requests uint64 `json:"requests"`
}

// Stats returns a snapshot of every backend, in the order given.
func (b *Balancer) Stats() []UpstreamStats {
	out := make([]UpstreamStats, len(b.backends))
	for i := range b.backends {
		be := &b.backends[i]
		s := UpstreamStats{
			Addr:     be.Addr,
			InFlight: be.inFlight.Load(),
			Down:     be.down.Load(),
			Failures: be.failures.Load(),
			Requests: be.requests.Load(),
		}
		if until := be.downUntil.Load(); until != 0 {
			s.DownUntil = b.epoch.Add(time.Duration(until))
		}
		out[i] = s
	}
	return out
}

// healthMissingScript is what the health check asks for without a ping
// path: php-fpm answers "File not found." with status 404.
const healthMissingScript = "/.realroot-health-missing.php"

// maxHealthBody bounds what is read of a health check's answer.
const maxHealthBody = 64 << 10

// Run runs the active health check until ctx is done, then returns once its
// requests have ended: every HealthInterval, one FastCGI request to each
// backend, each backend on its own goroutine so that a slow one delays no
// other. A request waits like any other: for a free connection up to the
// client's QueueTimeout (fcgi.ErrBusy then tells nothing), for php-fpm up to
// its ReadTimeout. Run returns at once when HealthInterval is zero.
func (b *Balancer) Run(ctx context.Context) error {
	if b.opts.HealthInterval <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	for i := range b.backends {
		be := &b.backends[i]
		wg.Go(func() { b.watch(ctx, be) })
	}
	wg.Wait()
	return nil
}

// watch checks be at once, then every HealthInterval, until ctx is done.
func (b *Balancer) watch(ctx context.Context, be *backend) {
	t := time.NewTicker(b.opts.HealthInterval)
	defer t.Stop()
	for {
		b.check(ctx, be)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one health check request on be and marks it down or up.
func (b *Balancer) check(ctx context.Context, be *backend) {
	sent := b.clock()
	resp, err := be.Upstream.Do(ctx, b.healthRequest())
	if err == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHealthBody))
		resp.Body.Close()
	}
	switch {
	case ctx.Err() != nil, errors.Is(err, fcgi.ErrBusy), errors.Is(err, fcgi.ErrClosed):
		return // stopping, or every connection busy with requests: nothing learnt
	case err != nil:
		b.markDown(be, "health check failed", err)
	case b.opts.PingPath != "" && resp.Status != http.StatusOK:
		b.markDown(be, "health check failed", fmt.Errorf("ping %s answered %d; is ping.path = %s set in php-fpm's pool?",
			b.opts.PingPath, resp.Status, b.opts.PingPath))
	default:
		b.markUp(be, sent, "health check passed")
	}
}

// healthRequest is a GET of the ping path, or of a missing script.
func (b *Balancer) healthRequest() *gofast.Request {
	script := b.opts.PingPath
	if script == "" {
		script = healthMissingScript
	}
	return ProbeRequest(script, script, "/", "realroot-health-check")
}

// ProbeRequest is a bodyless GET that asks php-fpm whether it answers: of
// its ping.path, or of a script that need not exist (php-fpm's 404 is an
// answer too). filename is SCRIPT_FILENAME, docroot DOCUMENT_ROOT, agent
// HTTP_USER_AGENT.
func ProbeRequest(script, filename, docroot, agent string) *gofast.Request {
	return &gofast.Request{Role: gofast.RoleResponder, Params: map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE":   "realroot",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_NAME":       "localhost",
		"SERVER_ADDR":       "127.0.0.1",
		"SERVER_PORT":       "80",
		"REMOTE_ADDR":       "127.0.0.1",
		"REMOTE_PORT":       "0",
		"REQUEST_METHOD":    http.MethodGet,
		"REQUEST_URI":       script,
		"DOCUMENT_URI":      script,
		"SCRIPT_NAME":       script,
		"SCRIPT_FILENAME":   filename,
		"DOCUMENT_ROOT":     docroot,
		"QUERY_STRING":      "",
		"CONTENT_LENGTH":    "",
		"HTTP_USER_AGENT":   agent,
	}}
}
