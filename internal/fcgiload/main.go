// Command fcgiload drives a FastCGI application (php-fpm) directly, with no
// HTTP in between, through realroot's own client (realroot/proxy/fcgi): the
// ceiling for any HTTP front in front of the same pool. It prints wrk-like
// output (Latency Distribution, Requests/sec) so that scripts/bench.sh
// parses both the same way.
//
// Load mode: -c clients send requests back to back for -d, each waiting for
// the whole response before sending the next, like wrk's connections.
//
//	fcgiload -fastcgi unix:/tmp/b/fpm.sock -c 16 -d 10s -max-conns 8 -root /srv/app/public -script /hello.php
//
// Like realroot, it keeps at most -max-conns connections open
// (FCGI_KEEP_CONN) and queues the clients beyond them; -keepalive=false
// opens one per request, like nginx without fastcgi_keep_conn.
//
// Get mode: one request, its status and body on stdout, e.g. php-fpm's
// status page (pm.status_path), which needs no script file.
//
//	fcgiload -fastcgi unix:/tmp/b/fpm.sock -get /fpm-status -timeout 3s
//
// HTTP mode (http.go): the same clients against an HTTP front, counting
// status codes, 503s with Retry-After, and requests left unanswered — what
// wrk 4.1 cannot show, since it never counts a request that never completes.
//
//	fcgiload -http http://127.0.0.1:18090/sleep.php -c 64 -d 10s -hang 5s
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/yookoala/gofast"

	"realroot/proxy/fcgi"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fcgiload:", err)
		os.Exit(1)
	}
}

type config struct {
	network, address string
	clients          int
	duration         time.Duration
	timeout          time.Duration
	root             string // DOCUMENT_ROOT
	script           string // SCRIPT_NAME; SCRIPT_FILENAME is root+script
	uri              string // REQUEST_URI; empty means script
	get              string // get mode: the path requested
	url              string // HTTP mode: the URL requested
	hang             time.Duration
	maxConns         int  // the client's pool bound; 0: its default
	keepAlive        bool // FCGI_KEEP_CONN, connections reused
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fcgiload", flag.ContinueOnError)
	var c config
	addr := fs.String("fastcgi", "", "php-fpm address, unix:/path or host:port (required)")
	fs.IntVar(&c.clients, "c", 16, "concurrent clients (each one request at a time)")
	fs.DurationVar(&c.duration, "d", 10*time.Second, "how long to send requests")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "longest wait between two reads from php-fpm")
	fs.StringVar(&c.root, "root", "", "DOCUMENT_ROOT: the release's real path (load mode)")
	fs.StringVar(&c.script, "script", "", "SCRIPT_NAME below -root, e.g. /hello.php (load mode)")
	fs.StringVar(&c.uri, "uri", "", "REQUEST_URI with its query (default: -script)")
	fs.IntVar(&c.maxConns, "max-conns", 0, "FastCGI connections open at most, like realroot's --max-conns (0: the client's default, 8)")
	fs.BoolVar(&c.keepAlive, "keepalive", true, "keep FastCGI connections open between requests (FCGI_KEEP_CONN)")
	fs.StringVar(&c.get, "get", "", "send one request for this path (e.g. /fpm-status) and print the response")
	fs.StringVar(&c.url, "http", "", "HTTP mode: load this URL instead of php-fpm")
	fs.DurationVar(&c.hang, "hang", 5*time.Second, "HTTP mode: a request unanswered this long counts as hung")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.url != "" {
		if c.clients < 1 || c.duration <= 0 || c.hang <= 0 {
			return fmt.Errorf("c, d, hang: %d, %v, %v: all must be positive", c.clients, c.duration, c.hang)
		}
		return httpLoad(&c, stdout)
	}
	var err error
	if c.network, c.address, err = splitAddr(*addr); err != nil {
		return err
	}
	client := &fcgi.Client{
		Network:          c.network,
		Address:          c.address,
		ReadTimeout:      c.timeout,
		WriteTimeout:     c.timeout,
		MaxConns:         c.maxConns,
		DisableKeepAlive: !c.keepAlive,
	}
	defer client.Close()
	if c.get != "" {
		return getOne(client, &c, stdout)
	}
	switch {
	case c.clients < 1:
		return fmt.Errorf("c: %d is not at least 1", c.clients)
	case c.duration <= 0:
		return fmt.Errorf("d: %v is not positive", c.duration)
	case !strings.HasPrefix(c.root, "/"):
		return fmt.Errorf("root: %q is not an absolute path", c.root)
	case !strings.HasPrefix(c.script, "/"):
		return fmt.Errorf("script: %q does not start with /", c.script)
	}
	return load(client, &c, stdout)
}

// splitAddr parses unix:/path or host:port.
func splitAddr(a string) (network, address string, err error) {
	switch {
	case a == "":
		return "", "", errors.New("fastcgi: required, unix:/path or host:port")
	case strings.HasPrefix(a, "unix:"):
		return "unix", strings.TrimPrefix(a, "unix:"), nil
	case strings.Contains(a, ":"):
		return "tcp", a, nil
	}
	return "", "", fmt.Errorf("fastcgi: %q is not unix:/path or host:port", a)
}

// params are those realroot sends for wrk's requests (GET, Host only), so
// that php-fpm does the same work behind every front.
func params(c *config) map[string]string {
	uri := c.uri
	if uri == "" {
		uri = c.script
	}
	_, query, _ := strings.Cut(uri, "?")
	return map[string]string{
		"SCRIPT_FILENAME":   c.root + c.script,
		"SCRIPT_NAME":       c.script,
		"DOCUMENT_ROOT":     c.root,
		"DOCUMENT_URI":      c.script,
		"PATH_INFO":         "",
		"CONTENT_LENGTH":    "",
		"CONTENT_TYPE":      "",
		"QUERY_STRING":      query,
		"REQUEST_METHOD":    "GET",
		"REQUEST_URI":       uri,
		"REQUEST_SCHEME":    "http",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE":   "fcgiload",
		"REDIRECT_STATUS":   "200",
		"REMOTE_ADDR":       "127.0.0.1",
		"REMOTE_PORT":       "40000",
		"SERVER_ADDR":       "127.0.0.1",
		"SERVER_PORT":       "8080",
		"SERVER_NAME":       "127.0.0.1",
		"HTTP_HOST":         "127.0.0.1:8080",
	}
}

// getOne sends one request for c.get and prints the status and the body.
func getOne(client *fcgi.Client, c *config, stdout io.Writer) error {
	p := map[string]string{
		"SCRIPT_FILENAME":   c.get,
		"SCRIPT_NAME":       c.get,
		"REQUEST_URI":       c.get,
		"DOCUMENT_URI":      c.get,
		"QUERY_STRING":      "",
		"REQUEST_METHOD":    "GET",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"CONTENT_LENGTH":    "",
	}
	if c.uri != "" {
		p["REQUEST_URI"] = c.uri
		_, p["QUERY_STRING"], _ = strings.Cut(c.uri, "?")
	}
	// Bound the whole exchange: a pool whose every worker is held answers
	// nothing at all.
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := client.Do(ctx, &gofast.Request{Params: p})
	if err != nil {
		return fmt.Errorf("get %s: %w", c.get, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("get %s: %w", c.get, err)
	}
	fmt.Fprintf(stdout, "Status: %d\n\n%s", resp.Status, body)
	return nil
}

// result is one client's tally.
type result struct {
	lat     []time.Duration
	non2xx  int
	errs    int
	lastErr error
	bytes   int64
}

func load(client *fcgi.Client, c *config, stdout io.Writer) error {
	p := params(c)
	// Check once that the script answers, so that a wrong path fails loudly
	// instead of measuring 404s.
	if err := probe(client, p); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Running %v test @ %s:%s %s\n", c.duration, c.network, c.address, p["SCRIPT_FILENAME"])
	conns := "a connection per request"
	if c.keepAlive {
		conns = "kept connections"
	}
	fmt.Fprintf(stdout, "  %d clients, FastCGI without HTTP (realroot/proxy/fcgi.Client, %s, max-conns %d)\n",
		c.clients, conns, cmp.Or(c.maxConns, 8))

	results := make([]result, c.clients)
	start := time.Now()
	deadline := start.Add(c.duration)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = worker(client, p, deadline) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	var total result
	for _, r := range results {
		all = append(all, r.lat...)
		total.non2xx += r.non2xx
		total.errs += r.errs
		total.bytes += r.bytes
		if r.lastErr != nil {
			total.lastErr = r.lastErr
		}
	}
	printDistribution(stdout, all)
	fmt.Fprintf(stdout, "  %d requests in %.2fs, %.2fMB read\n", len(all), elapsed.Seconds(), float64(total.bytes)/(1<<20))
	if total.non2xx > 0 {
		fmt.Fprintf(stdout, "  Non-2xx or 3xx responses: %d\n", total.non2xx)
	}
	if total.errs > 0 {
		fmt.Fprintf(stdout, "  Errors: %d (last: %v)\n", total.errs, total.lastErr)
	}
	fmt.Fprintf(stdout, "Requests/sec: %10.2f\n", float64(len(all))/elapsed.Seconds())
	return nil
}

// worker sends requests one after another until deadline. Latency is from
// sending the request to the end of the response body.
func worker(client *fcgi.Client, p map[string]string, deadline time.Time) result {
	r := result{lat: make([]time.Duration, 0, 1<<14)}
	buf := make([]byte, 32<<10)
	for {
		t0 := time.Now()
		if t0.After(deadline) {
			return r
		}
		status, n, err := exchange(client, p, buf)
		if err != nil {
			r.errs++
			r.lastErr = err
			time.Sleep(time.Millisecond) // a dead php-fpm must not spin
			continue
		}
		r.lat = append(r.lat, time.Since(t0))
		r.bytes += n
		if status < 200 || status >= 400 {
			r.non2xx++
		}
	}
}

// exchange runs one request and reads its whole body.
func exchange(client *fcgi.Client, p map[string]string, buf []byte) (status int, n int64, err error) {
	resp, err := client.Do(context.Background(), &gofast.Request{Params: p})
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return resp.Status, n, nil
		}
		if err != nil {
			return 0, n, err
		}
	}
}

func probe(client *fcgi.Client, p map[string]string) error {
	status, _, err := exchange(client, p, make([]byte, 32<<10))
	if err != nil {
		return fmt.Errorf("probe %s: %w", p["SCRIPT_FILENAME"], err)
	}
	if status != 200 {
		return fmt.Errorf("probe %s: status %d; want 200", p["SCRIPT_FILENAME"], status)
	}
	return nil
}

// printDistribution sorts d and prints wrk's Latency Distribution.
func printDistribution(w io.Writer, d []time.Duration) {
	slices.Sort(d)
	fmt.Fprintf(w, "  Latency Distribution\n")
	for _, q := range []int{50, 75, 90, 99} {
		fmt.Fprintf(w, "  %3d%% %10s\n", q, wrkDuration(percentile(d, q)))
	}
}

// percentile is the nearest-rank q-th percentile of sorted d.
func percentile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*q + 99) / 100 // ceil(n*q/100), 1-based
	return d[max(i, 1)-1]
}

// wrkDuration formats d as wrk does: 812.00us, 1.23ms, 2.05s.
func wrkDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fus", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
