package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpClient is one HTTP client's tally.
type httpClient struct {
	since    atomic.Int64 // UnixNano of the request in flight; 0 when none
	lat      []time.Duration
	codes    map[int]int
	retry    int // 503s with Retry-After
	noRetry  int // 503s without
	errs     int
	lastErr  error
	answered int
}

// httpLoad runs c.clients clients against c.url for c.duration, each on its
// own keep-alive connection with one request at a time, like wrk's
// connections. At the end it reports the requests still unanswered after
// c.hang, and the clients never answered at all: a front that lets kept
// FastCGI connections hold every php-fpm worker answers some clients and
// leaves the others waiting.
func httpLoad(c *config, stdout io.Writer) error {
	tr := &http.Transport{
		MaxIdleConnsPerHost: c.clients,
		DisableCompression:  true,
		Proxy:               nil, // never an environment's proxy
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequest(http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Running %v test @ %s\n", c.duration, c.url)
	fmt.Fprintf(stdout, "  %d clients, HTTP/1.1 keep-alive, one request at a time each\n", c.clients)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]httpClient, c.clients)
	start := time.Now()
	deadline := start.Add(c.duration)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { clients[i].run(ctx, client, req, deadline) })
	}

	time.Sleep(time.Until(deadline))
	// What is still waiting now, and since when, before anything is cut.
	now := time.Now()
	var hung int
	var oldest time.Duration
	for i := range clients {
		if s := clients[i].since.Load(); s != 0 {
			age := now.Sub(time.Unix(0, s))
			oldest = max(oldest, age)
			if age >= c.hang {
				hung++
			}
		}
	}
	cancel() // abort the requests in flight: not counted
	wg.Wait()
	elapsed := now.Sub(start)

	var all []time.Duration
	codes := map[int]int{}
	var retry, noRetry, errs, never, slow int
	var lastErr error
	for i := range clients {
		cl := &clients[i]
		all = append(all, cl.lat...)
		for code, n := range cl.codes {
			codes[code] += n
		}
		retry += cl.retry
		noRetry += cl.noRetry
		errs += cl.errs
		if cl.lastErr != nil {
			lastErr = cl.lastErr
		}
		if cl.answered == 0 {
			never++
		}
	}
	for _, d := range all {
		if d >= c.hang {
			slow++
		}
	}
	printDistribution(stdout, all)
	fmt.Fprintf(stdout, "  %d requests in %.2fs\n", len(all), elapsed.Seconds())
	var b strings.Builder
	for _, code := range slices.Sorted(maps.Keys(codes)) {
		fmt.Fprintf(&b, " %d=%d", code, codes[code])
	}
	if b.Len() == 0 {
		b.WriteString(" none")
	}
	fmt.Fprintf(stdout, "  codes:%s | 503 with Retry-After=%d without=%d | max=%s\n",
		b.String(), retry, noRetry, wrkDuration(slices.Max(append(all, 0))))
	fmt.Fprintf(stdout, "  hung: %d waiting >= %v at the end (oldest %s), %d answers slower than that, %d of %d clients never answered\n",
		hung, c.hang, wrkDuration(oldest), slow, never, c.clients)
	if errs > 0 {
		fmt.Fprintf(stdout, "  Errors: %d (last: %v)\n", errs, lastErr)
	}
	fmt.Fprintf(stdout, "Requests/sec: %10.2f\n", float64(len(all))/elapsed.Seconds())
	return nil
}

func (cl *httpClient) run(ctx context.Context, client *http.Client, req *http.Request, deadline time.Time) {
	cl.codes = map[int]int{}
	req = req.WithContext(ctx)
	for {
		t0 := time.Now()
		if t0.After(deadline) {
			return
		}
		cl.since.Store(t0.UnixNano())
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cl.since.Store(0)
		if ctx.Err() != nil {
			return // cut at the end: neither answered nor an error
		}
		if err != nil {
			cl.errs++
			cl.lastErr = err
			if !errors.Is(err, context.Canceled) {
				time.Sleep(time.Millisecond) // a dead front must not spin
			}
			continue
		}
		cl.lat = append(cl.lat, time.Since(t0))
		cl.answered++
		cl.codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusServiceUnavailable {
			if resp.Header.Get("Retry-After") != "" {
				cl.retry++
			} else {
				cl.noRetry++
			}
		}
	}
}
