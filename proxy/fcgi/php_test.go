package fcgi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/yookoala/gofast"

	"realroot/internal/phpfpmtest"
)

// phpScripts are written to the php-fpm server's directory.
var phpScripts = map[string]string{
	"hello.php": `<?php echo "hello";`,
	"empty.php": ``,
	"cookies.php": `<?php
header("Set-Cookie: big=" . str_repeat("x", 16384));
setcookie("a", "1");
setcookie("b", "2");
http_response_code(404);
echo "ok";`,
	"redirect.php": `<?php header("Location: /elsewhere");`,
	// Streams one event, then waits (bounded) for the test to create the
	// file named by the query string before sending the second.
	"sse.php": `<?php
header("Content-Type: text/event-stream");
while (ob_get_level() > 0) ob_end_flush();
echo "data: one\n\n";
flush();
for ($i = 0; $i < 500 && !file_exists($_GET["f"]); $i++) usleep(10000);
echo "data: two\n\n";`,
	"echo.php": `<?php
$in = file_get_contents("php://input");
header("X-Sha256: " . hash("sha256", $in));
echo strlen($in);`,
	"ignore.php": `<?php echo "ignored";`,
	"log.php": `<?php
error_log("boom from php");
echo "logged";`,
	"exit.php": `<?php echo "bye"; exit(3);`,
	// Sends its header block and some body, then outlives
	// request_terminate_timeout and gets killed.
	"killed.php": `<?php
while (ob_get_level() > 0) ob_end_flush();
echo "partial";
flush();
sleep(30);`,
}

func startPHP(t *testing.T) (*Client, string) {
	t.Helper()
	srv := phpfpmtest.Start(t, phpfpmtest.Options{
		Workers: 4,
		Pool:    map[string]string{"request_terminate_timeout": "1s"},
	})
	docroot := filepath.Join(srv.Dir, "www")
	if err := os.Mkdir(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range phpScripts {
		if err := os.WriteFile(filepath.Join(docroot, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return closeAtCleanup(t, &Client{Network: "unix", Address: srv.Socket, ReadTimeout: 10 * time.Second}), docroot
}

func phpParams(docroot, method, script, query string) map[string]string {
	return map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "realroot",
		"REQUEST_METHOD":    method,
		"SCRIPT_FILENAME":   filepath.Join(docroot, script),
		"SCRIPT_NAME":       "/" + script,
		"REQUEST_URI":       "/" + script + "?" + query,
		"QUERY_STRING":      query,
		"DOCUMENT_ROOT":     docroot,
		"CONTENT_TYPE":      "",
		"CONTENT_LENGTH":    "",
	}
}

func TestPHP(t *testing.T) {
	c, docroot := startPHP(t)
	get := func(t *testing.T, script, query string) (*Response, string) {
		t.Helper()
		resp, body, err := fetch(t, c, &gofast.Request{Params: phpParams(docroot, "GET", script, query)})
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	t.Run("hello", func(t *testing.T) {
		resp, body := get(t, "hello.php", "")
		if resp.Status != 200 || body != "hello" || resp.Header.Get("Content-Type") != "text/html; charset=UTF-8" {
			t.Errorf("got %d %q %v; want 200 %q with a text/html Content-Type", resp.Status, body, resp.Header, "hello")
		}
	})
	t.Run("empty script", func(t *testing.T) {
		// An empty script still sends a header block.
		resp, body := get(t, "empty.php", "")
		if resp.Status != 200 || body != "" || resp.Header.Get("Content-Type") == "" {
			t.Errorf("got %d %q %v; want 200, empty, a Content-Type", resp.Status, body, resp.Header)
		}
	})
	t.Run("16 KiB Set-Cookie", func(t *testing.T) {
		resp, body := get(t, "cookies.php", "")
		cookies := resp.Header["Set-Cookie"]
		want := []string{"big=" + strings.Repeat("x", 16384), "a=1", "b=2"}
		if resp.Status != 404 || body != "ok" || len(cookies) != len(want) {
			t.Fatalf("got %d %q, %d cookies; want 404 %q, %d cookies", resp.Status, body, len(cookies), "ok", len(want))
		}
		for i := range want {
			if cookies[i] != want[i] {
				t.Errorf("cookie %d = %.40q; want %.40q", i, cookies[i], want[i])
			}
		}
		if _, ok := resp.Header["Status"]; ok {
			t.Errorf("Status left in Header")
		}
	})
	t.Run("redirect", func(t *testing.T) {
		resp, _ := get(t, "redirect.php", "")
		if resp.Status != 302 || resp.Header.Get("Location") != "/elsewhere" {
			t.Errorf("got %d %v; want 302 to /elsewhere", resp.Status, resp.Header)
		}
	})
	t.Run("sse", func(t *testing.T) {
		flag := filepath.Join(docroot, "sse-flag")
		resp, err := c.Do(context.Background(), &gofast.Request{Params: phpParams(docroot, "GET", "sse.php", "f="+flag)})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		first := make([]byte, len("data: one\n\n"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: one\n\n" {
			t.Fatalf("first event = %q, %v; want %q", first, err, "data: one\n\n")
		}
		// PHP is now polling for the flag: the first event came alone.
		if err := os.WriteFile(flag, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "data: two\n\n" {
			t.Errorf("rest = %q, %v; want %q", rest, err, "data: two\n\n")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("second event took %v: PHP did not see the flag?", d)
		}
	})
	t.Run("post echo", func(t *testing.T) {
		data := make([]byte, 3<<20+17)
		rand.NewChaCha8([32]byte{2}).Read(data)
		sum := sha256.Sum256(data)
		params := phpParams(docroot, "POST", "echo.php", "")
		params["CONTENT_TYPE"] = "application/octet-stream"
		params["CONTENT_LENGTH"] = strconv.Itoa(len(data))
		resp, body, err := fetch(t, c, &gofast.Request{Params: params, Stdin: io.NopCloser(bytes.NewReader(data))})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("X-Sha256"); body != strconv.Itoa(len(data)) || got != hex.EncodeToString(sum[:]) {
			t.Errorf("got %s bytes, sha256 %s; want %d, %x", body, got, len(data), sum)
		}
	})
	t.Run("post without content length", func(t *testing.T) {
		// php-fpm reads CONTENT_LENGTH bytes of stdin: without it PHP
		// sees an empty body, which is why a proxy must send it.
		params := phpParams(docroot, "POST", "echo.php", "")
		params["CONTENT_TYPE"] = "application/octet-stream"
		resp, body, err := fetch(t, c, &gofast.Request{Params: params, Stdin: io.NopCloser(strings.NewReader("abc"))})
		if err != nil {
			t.Fatal(err)
		}
		if body != "0" || resp.Status != 200 {
			t.Errorf("got %d %q; want 200 %q", resp.Status, body, "0")
		}
	})
	t.Run("unread body", func(t *testing.T) {
		// A script that ignores a large body: the exchange still ends
		// cleanly.
		params := phpParams(docroot, "POST", "ignore.php", "")
		params["CONTENT_TYPE"] = "application/octet-stream"
		params["CONTENT_LENGTH"] = strconv.Itoa(4 << 20)
		body := io.NopCloser(bytes.NewReader(make([]byte, 4<<20)))
		resp, got, err := fetch(t, c, &gofast.Request{Params: params, Stdin: body})
		if err != nil || resp.Status != 200 || got != "ignored" {
			t.Errorf("got %v %q, %v; want 200 %q", resp, got, err, "ignored")
		}
	})
	t.Run("error_log", func(t *testing.T) {
		resp, body := get(t, "log.php", "")
		stderr, dropped := resp.Stderr()
		if body != "logged" || !bytes.Contains(stderr, []byte("boom from php")) || dropped != 0 {
			t.Errorf("got %q, stderr %q (%d dropped); want %q, stderr with %q", body, stderr, dropped, "logged", "boom from php")
		}
	})
	t.Run("exit status", func(t *testing.T) {
		resp, body := get(t, "exit.php", "")
		if body != "bye" {
			t.Errorf("body = %q; want %q", body, "bye")
		}
		t.Logf("exit(3): AppStatus() = %d", resp.AppStatus())
	})
	t.Run("worker killed", func(t *testing.T) {
		resp, err := c.Do(context.Background(), &gofast.Request{Params: phpParams(docroot, "GET", "killed.php", "")})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if string(body) != "partial" || !errors.Is(err, ErrTruncated) {
			t.Errorf("got %q, %v; want %q, ErrTruncated", body, err, "partial")
		}
	})
}
