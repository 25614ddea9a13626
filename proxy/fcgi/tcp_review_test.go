package fcgi

// Second-round review of the transport: faults over TCP, where php-fpm
// often listens (the php:*-fpm images listen on 9000), with a real php-fpm.

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
)

// freeTCPPort returns a loopback host:port nobody listens on now.
func freeTCPPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startTCPPool starts a one-worker php-fpm listening on loopback TCP with
// pool (plus listen) and scripts, and a one-connection Client for it.
func startTCPPool(t *testing.T, pool map[string]string, scripts map[string]string) (*phpfpmtest.Server, *Client, string) {
	t.Helper()
	if pool == nil {
		pool = map[string]string{}
	}
	pool["listen"] = freeTCPPort(t)
	srv := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1, Pool: pool})
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range scripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := closeAtCleanup(t, &Client{Network: srv.Network, Address: srv.Address, ReadTimeout: 10 * time.Second, MaxConns: 1, IdleTimeout: time.Minute})
	return srv, c, docroot
}

// TestTCPRestartRetried: php-fpm on TCP restarted while a kept
// connection is idle. The next GET goes out on that connection, which
// php-fpm closed before it was sent: it must be retried on a new one (as
// over a unix socket), not fail with a 502.
func TestTCPRestartRetried(t *testing.T) {
	srv, c, docroot := startTCPPool(t, nil, map[string]string{"hello.php": `<?php echo "hello";`})
	hello := &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")}
	if _, body, err := fetch(t, c, hello); err != nil || body != "hello" {
		t.Fatalf("hello.php: %q, %v", body, err)
	}
	srv.Restart(t) // waits until php-fpm is gone, then until it accepts again
	_, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")})
	if s := c.Stats(); err != nil || body != "hello" || s.Retries != 1 {
		t.Errorf("GET after a restart: %q, %v, %+v; want hello and 1 retry: php-fpm had closed the kept connection before the request was sent", body, err, s)
	}
}

// TestTCPIdleKilledRetried: php-fpm on TCP kills a worker waiting on
// a kept connection past request_terminate_timeout, which closes the
// connection. The next GET, sent on it, never reached php-fpm: it must be
// retried on a new connection, as over a unix socket
// (TestPHPPoolTerminateTimeout). It failed with ErrTruncated (a 502): the
// reset its request drew made the FCGI_ABORT_REQUEST probe fail, read as
// "a worker that died running it".
func TestTCPIdleKilledRetried(t *testing.T) {
	srv, c, docroot := startTCPPool(t, map[string]string{"request_terminate_timeout": "1s"}, map[string]string{"hello.php": `<?php echo "hello";`})
	if _, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")}); err != nil || body != "hello" {
		t.Fatalf("hello.php: %q, %v", body, err)
	}
	// The master logs the kill once it has reaped the worker: its socket
	// is closed by then.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(srv.Log(), "exited on signal") {
		if time.Now().After(deadline) {
			t.Fatalf("php-fpm did not kill the idle worker:\n%s", srv.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling php-fpm's log, not a synchronisation
	}
	_, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")})
	if s := c.Stats(); err != nil || body != "hello" || s.Retries != 1 || s.Dials != 2 {
		t.Errorf("GET on the killed worker's connection: %q, %v, %+v; want hello, 1 retry, 2 dials", body, err, s)
	}
}

// TestTCPKilledNotRetried is TestPHPPoolKilledNotRetried over TCP:
// a GET php-fpm started on a kept connection, then killed at
// request_terminate_timeout before any output, must not be sent again.
func TestTCPKilledNotRetried(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	count := filepath.Join(dir, "runs")
	_, c, docroot := startTCPPool(t, map[string]string{"request_terminate_timeout": "1s"}, map[string]string{
		"hello.php": `<?php echo "hello";`,
		"side.php":  `<?php file_get_contents("php://input"); file_put_contents(` + strconv.Quote(count) + `, "x", FILE_APPEND); sleep(5); echo "ok";`,
	})
	if _, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "hello.php", "")}); err != nil || body != "hello" {
		t.Fatalf("hello.php: %q, %v", body, err)
	}
	_, _, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", "side.php", "")})
	runs, _ := os.ReadFile(count)
	if len(runs) != 1 || err == nil {
		t.Errorf("side.php ran %d times (err %v, %+v); want once and an error: php-fpm had started it, yet it was sent again", len(runs), err, c.Stats())
	}
}
