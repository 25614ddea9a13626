package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"realroot/proxy"
	"realroot/resolve"
)

// accessFields are the fields proxy's access log line carries.
func accessFields(ua, referer string, upstream time.Duration) []zapcore.Field {
	return []zapcore.Field{
		zap.String("remote_addr", "192.0.2.7:51234"),
		zap.String("method", "GET"),
		zap.String("uri", "/index.php?a=1&b=\"2\""),
		zap.String("proto", "HTTP/1.1"),
		zap.Int("status", 200),
		zap.Int64("bytes", 5120),
		zap.Duration("duration", 12345*time.Microsecond),
		zap.Duration("upstream_duration", upstream),
		zap.String("route", "php"),
		zap.String("release", "/srv/app/releases/3/public"),
		zap.Uint64("gen", 3),
		zap.String("request_id", "6f1c2a-1"),
		zap.String("user_agent", ua),
		zap.String("referer", referer),
	}
}

func TestLineEncoder(t *testing.T) {
	when := time.Date(2026, 11, 21, 12, 0, 7, 0, time.FixedZone("", 3600))
	tests := []struct {
		name   string
		format string
		fields []zapcore.Field
		want   string
	}{
		{
			name:   "combined",
			format: "combined",
			fields: accessFields("curl/8.5.0", "https://example.com/", 10*time.Millisecond),
			want:   `192.0.2.7 - - [21/Nov/2026:12:00:07 +0100] "GET /index.php?a=1&b=\x222\x22 HTTP/1.1" 200 5120 "https://example.com/" "curl/8.5.0"` + "\n",
		},
		{
			name:   "combined, empty and escaped",
			format: "combined",
			fields: accessFields("Mozilla \"x\"\t\\é", "", 0),
			want:   `192.0.2.7 - - [21/Nov/2026:12:00:07 +0100] "GET /index.php?a=1&b=\x222\x22 HTTP/1.1" 200 5120 "-" "Mozilla \x22x\x22\x09\x5C\xC3\xA9"` + "\n",
		},
		{
			name:   "combined, missing fields",
			format: "combined",
			fields: nil,
			want:   `- - - [21/Nov/2026:12:00:07 +0100] "- - -" - - "-" "-"` + "\n",
		},
		{
			name:   "ltsv",
			format: "ltsv",
			fields: accessFields("curl/8.5.0", "https://example.com/", 10*time.Millisecond),
			want: "time:[21/Nov/2026:12:00:07 +0100]\thost:192.0.2.7\tmethod:GET\turi:/index.php?a=1&b=\\x222\\x22\t" +
				"protocol:HTTP/1.1\tstatus:200\tsize:5120\treqtime:0.012\tapptime:0.010\treferer:https://example.com/\t" +
				"ua:curl/8.5.0\trelease:/srv/app/releases/3/public\trequest_id:6f1c2a-1\n",
		},
		{
			name:   "ltsv, static file, tab in a value",
			format: "ltsv",
			fields: accessFields("a\tb\nc", "", 0),
			want: "time:[21/Nov/2026:12:00:07 +0100]\thost:192.0.2.7\tmethod:GET\turi:/index.php?a=1&b=\\x222\\x22\t" +
				"protocol:HTTP/1.1\tstatus:200\tsize:5120\treqtime:0.012\tapptime:-\treferer:-\t" +
				"ua:a\\x09b\\x0Ac\trelease:/srv/app/releases/3/public\trequest_id:6f1c2a-1\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := newLineEncoder(tt.format)
			buf, err := enc.EncodeEntry(zapcore.Entry{Time: when, Message: "request", LoggerName: "access"}, tt.fields)
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Free()
			if got := buf.String(); got != tt.want {
				t.Errorf("EncodeEntry:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestLineEncoderWith checks fields added with Logger.With and that a clone
// does not share them.
func TestLineEncoderWith(t *testing.T) {
	var b bytes.Buffer
	base := zap.New(zapcore.NewCore(newLineEncoder("ltsv"), zapcore.AddSync(&b), zapcore.InfoLevel))
	base.With(zap.String("release", "/r/1")).Info("request", zap.String("method", "GET"))
	base.Info("request", zap.String("method", "HEAD"))
	re := regexp.MustCompile(`(?m)^time:\[[^]]+\]\thost:-\tmethod:(GET|HEAD)\t.*\trelease:(\S+)\trequest_id:-$`)
	m := re.FindAllStringSubmatch(b.String(), -1)
	if len(m) != 2 || m[0][1] != "GET" || m[0][2] != "/r/1" || m[1][1] != "HEAD" || m[1][2] != "-" {
		t.Errorf("lines = %q; want GET with release /r/1, then HEAD without", b.String())
	}
}

// TestAccessLogThroughProxy serves a static file with proxy's handler and
// each access log format: the line carries what proxy logs.
func TestAccessLogThroughProxy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "style.css"), []byte("body{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := resolve.New(resolve.Options{Root: dir})
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	for format, want := range map[string]string{
		"combined": `^192\.0\.2\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [-+]\d{4}\] "GET /style\.css HTTP/1\.1" 200 6 "-" "test/1"` + "\n$",
		"ltsv": `^time:\[[^]]+\]\thost:192\.0\.2\.1\tmethod:GET\turi:/style\.css\tprotocol:HTTP/1\.1\tstatus:200\tsize:6\t` +
			`reqtime:\d+\.\d{3}\tapptime:-\treferer:-\tua:test/1\trelease:` + regexp.QuoteMeta(real) + `\trequest_id:[0-9a-f]+-1` + "\n$",
		"json": `^\{"level":"info","time":"[^"]+","logger":"access","msg":"request","remote_addr":"192\.0\.2\.1:1234",` +
			`"method":"GET","uri":"/style\.css","proto":"HTTP/1\.1","status":200,"bytes":6,"duration":[0-9.e-]+,` +
			`"upstream_duration":0,"route":"static","release":"` + regexp.QuoteMeta(real) + `","gen":1,` +
			`"request_id":"[0-9a-f]+-1","user_agent":"test/1","referer":""\}` + "\n$",
	} {
		t.Run(format, func(t *testing.T) {
			var b syncBuffer
			l := &logs{aout: zapcore.AddSync(&b)}
			l.enc = zap.NewProductionEncoderConfig()
			l.enc.TimeKey = "time"
			l.enc.EncodeTime = zapcore.ISO8601TimeEncoder
			h := proxy.New(rs, nil, proxy.Options{AccessLog: l.access(format)})
			r := httptest.NewRequest(http.MethodGet, "/style.css", nil)
			r.RemoteAddr = "192.0.2.1:1234"
			r.Header.Set("User-Agent", "test/1")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("GET /style.css = %d", w.Code)
			}
			if !regexp.MustCompile(want).MatchString(b.String()) {
				t.Errorf("access log line:\n%q\ndoes not match\n%q", b.String(), want)
			}
		})
	}
}

// TestAccessLogRejected: a request the HTTP/1 server refuses before any
// handler (here a bad version) gets its access log line, as in nginx's.
// net/http's server has no hook for it: under REALROOT_HTTP1_SERVER=net/http
// the line is not there and the test only checks the answer.
func TestAccessLogRejected(t *testing.T) {
	dir := site(t)
	access := filepath.Join(t.TempDir(), "access.log")
	p := startRealroot(t, nil, "--root", filepath.Join(dir, "current", "public"), "--fastcgi", "unix:"+filepath.Join(dir, "none.sock"),
		"--listen", "127.0.0.1:0", "--access-log", "combined", "--access-log-file", access)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.x\r\nHost: a\r\n\r\n")
	raw, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(raw), "HTTP/1.1 400 Bad Request") {
		t.Fatalf("answer %q; want a 400", raw)
	}
	if os.Getenv("REALROOT_HTTP1_SERVER") == "net/http" {
		return
	}
	want := regexp.MustCompile(`^127\.0\.0\.1 - - \[[^]]+\] "- - -" 400 15 "-" "-"` + "\n$")
	eventually(t, 5*time.Second, func() string {
		if b, _ := os.ReadFile(access); !want.Match(b) {
			return fmt.Sprintf("access log %q; want one line matching %s", b, want)
		}
		return ""
	})
}
