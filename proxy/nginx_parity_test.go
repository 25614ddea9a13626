package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"realroot/internal/nginxtest"
	"realroot/internal/phpfpmtest"
	"realroot/proxy/fcgi"
)

// TestNginxParity is a differential test: the same requests go to a real
// nginx and to realroot, both in front of one php-fpm and one deploy
// (releases/r1 behind a current symlink). For each request it compares the
// status, the Location of a redirect, what answered (which PHP script, which
// static file, or an error page) and every $_SERVER key PHP saw. Every
// difference must be listed, exactly, in the case's diffs or in
// parityGlobalDiffs: a new divergence fails the test, and so does a listed
// one that went away. The cases of parityHTTPCases
// (nginx_parity_static_test.go) are compared at the HTTP level too:
// response headers, framing, body and interim responses, for static files,
// request limits and PHP's own headers (parityCompareHTTP).
//
// nginx runs the server block README.md gives as realroot's nginx
// equivalent ("What it does, in nginx terms"), started by internal/nginxtest
// in the shape of scripts/bench.sh's nginx.conf (temp prefix, pid, error_log
// and temp paths inside it, access_log off, mime.types), with gzip_static on
// when the binary has it (startParityNginx).
func TestNginxParity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx and php-fpm")
	}
	nginxtest.Require(t)

	site := maps.Clone(paritySite)
	maps.Copy(site, parityStaticSite)
	dir := newDeploy(t, site, "r1")
	for name, target := range paritySymlinks {
		if err := os.Symlink(target, filepath.Join(dir, "releases", "r1", name)); err != nil {
			t.Fatal(err)
		}
	}
	parityTouch(t, dir)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 4})
	docroot := filepath.Join(dir, "current", "public")

	rrAddr, root := startParityRealroot(t, docroot, fpm.Socket, Options{FrontController: "/index.php"})

	ngAddr, gzipStatic := startParityNginx(t, docroot, fpm.Socket)

	cases := slices.Clone(parityCases)
	for _, c := range parityHTTPCases {
		c.full = true
		if !gzipStatic && c.noGzipStatic != nil {
			c.diffs = c.noGzipStatic
		}
		cases = append(cases, c)
	}
	parityExpectGlobals(t, runParity(t, cases, ngAddr, rrAddr, root, dir))
}

// startParityRealroot serves docroot, watched, through php-fpm at socket
// with opts, and returns its address and the root's realpath.
func startParityRealroot(t *testing.T, docroot, socket string, opts Options) (addr, root string) {
	t.Helper()
	rs := newReleases(t, docroot)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := New(rs, &fcgi.Client{Network: "unix", Address: socket, ReadTimeout: 10 * time.Second}, opts)
	rr := newTestServer(t, h)
	t.Cleanup(rr.Close)
	return rr.Listener.Addr().String(), rs.Current().Root
}

// runParity sends each case to nginx at ngAddr and realroot at rrAddr,
// compares the answers (root and dir written as $ROOT and $DEPLOY), and
// returns the differences seen that the cases expect globally.
func runParity(t *testing.T, cases []parityCase, ngAddr, rrAddr, root, dir string) map[string]bool {
	seenGlobal := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.target = parityVars.Replace(c.target)
			c.header = slices.Clone(c.header)
			for i, h := range c.header {
				c.header[i] = parityVars.Replace(h)
			}
			ng := parityDo(t, ngAddr, c)
			re := parityDo(t, rrAddr, c)
			norm := func(s string) string {
				s = strings.ReplaceAll(s, root, "$ROOT")
				return strings.ReplaceAll(s, dir, "$DEPLOY")
			}
			ng, re = ng.normalize(c, norm), re.normalize(c, norm)
			got := parityCompare(ng, re)
			if c.full {
				got = append(got, parityCompareHTTP(c, ng, re)...)
			}
			parityExpect(t, c, got, ng, re, seenGlobal, norm)
		})
	}
	return seenGlobal
}

// parityExpect checks the differences got between nginx's answer ng and
// realroot's re to c against c.diffs and, when both ran PHP,
// parityGlobalDiffs (those it records in seenGlobal): a difference listed
// in neither fails, and so does one of c.diffs not seen. On failure, or
// with -v, it logs both answers.
func parityExpect(t *testing.T, c parityCase, got []string, ng, re parityAnswer, seenGlobal map[string]bool, norm func(string) string) {
	t.Helper()
	var diffs []string
	for _, d := range got {
		if parityGlobalDiffs[d] && ng.php && re.php {
			seenGlobal[d] = true
			continue
		}
		diffs = append(diffs, d)
	}
	want := slices.Clone(c.diffs)
	slices.Sort(want)
	slices.Sort(diffs)
	for _, d := range diffs {
		if !slices.Contains(want, d) {
			t.Errorf("new divergence from nginx: %s", d)
		}
	}
	for _, d := range want {
		if !slices.Contains(diffs, d) {
			t.Errorf("listed divergence not seen (fixed? update the case): %s", d)
		}
	}
	switch {
	case t.Failed():
		t.Logf("%s %.200s\nnginx:    %s\nrealroot: %s", c.method(), c.target, ng.summary(), re.summary())
	case testing.Verbose():
		t.Logf("%s %.200s: nginx %d %s; realroot %d %s; %d known diffs",
			c.method(), c.target, ng.status, norm(ng.what), re.status, norm(re.what), len(want))
	}
}

// parityExpectGlobals fails for each of parityGlobalDiffs not in seen.
func parityExpectGlobals(t *testing.T, seen map[string]bool) {
	t.Helper()
	for d := range parityGlobalDiffs {
		if !seen[d] {
			t.Errorf("global divergence never seen (fixed? update parityGlobalDiffs): %s", d)
		}
	}
}

// parityAnswer is one front's answer, reduced to what is compared.
type parityAnswer struct {
	status   int
	location string
	what     string            // "php FILE", "static NAME", "php source", "head" or "other"
	ctype    string            // Content-Type, compared unless what is "other"
	php      bool              // PHP answered (params are its $_SERVER and extras)
	params   map[string]string // PHP's dump
	port     string
	raw      string // the body as sent
	header   http.Header
	framing  string // "length", "chunked" or "none" (no length: to the close, or no body)
	interim  []int  // 1xx statuses before the answer
}

func (a parityAnswer) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s (%s)", a.status, a.what, a.ctype)
	if a.location != "" {
		fmt.Fprintf(&b, " Location: %s", a.location)
	}
	fmt.Fprintf(&b, " framing %s, interim %v", a.framing, a.interim)
	for _, k := range slices.Sorted(maps.Keys(a.header)) {
		if k != "X-Dump" {
			fmt.Fprintf(&b, "\n    %s: %.200q", k, a.header[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(a.params)) {
		fmt.Fprintf(&b, "\n    %s=%.200s", k, a.params[k])
	}
	if !a.php && a.what == "other" {
		fmt.Fprintf(&b, "\n    body %.300q", a.raw)
	}
	return b.String()
}

// normalize rewrites what legitimately differs between two servers.
func (a parityAnswer) normalize(c parityCase, norm func(string) string) parityAnswer {
	a.location = strings.ReplaceAll(a.location, ":"+a.port, ":PORT")
	hd := make(http.Header, len(a.header))
	for k, vs := range a.header {
		for _, v := range vs {
			hd[k] = append(hd[k], strings.ReplaceAll(v, ":"+a.port, ":PORT"))
		}
	}
	a.header = hd
	a.what = norm(a.what)
	p := make(map[string]string, len(a.params))
	for k, v := range a.params {
		switch k {
		case "SERVER_SOFTWARE", // nginx/1.22.1 vs realroot: the product's name
			"REMOTE_PORT",                        // the client's ephemeral port
			"REQUEST_TIME", "REQUEST_TIME_FLOAT": // when PHP started the request
			continue
		case "SERVER_PORT": // each front listens on its own port
			v = strings.ReplaceAll(v, a.port, "PORT")
		case "HTTP_HOST": // the Host header names the front's own port
			v = strings.ReplaceAll(v, ":"+a.port, ":PORT")
		case "HTTP_X_REQUEST_ID":
			// realroot makes an id when the client sent none (nginx
			// passes the header only); a client's id must match.
			if !c.sendsHeader("X-Request-Id") {
				continue
			}
		}
		p[k] = norm(v)
	}
	a.params = p
	return a
}

// parityCompare lists the differences between nginx's answer ng and
// realroot's re.
func parityCompare(ng, re parityAnswer) []string {
	var d []string
	diff := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s: nginx %s; realroot %s", field, a, b))
		}
	}
	diff("status", fmt.Sprint(ng.status), fmt.Sprint(re.status))
	diff("location", fmt.Sprintf("%q", ng.location), fmt.Sprintf("%q", re.location))
	diff("answer", ng.what, re.what)
	if ng.what != "other" && re.what != "other" {
		diff("content-type", fmt.Sprintf("%q", ng.ctype), fmt.Sprintf("%q", re.ctype))
	}
	if ng.php && re.php {
		for _, k := range unionKeys(ng.params, re.params) {
			a, aok := ng.params[k]
			b, bok := re.params[k]
			qa, qb := "<unset>", "<unset>"
			if aok {
				qa = fmt.Sprintf("%q", a)
			}
			if bok {
				qb = fmt.Sprintf("%q", b)
			}
			diff(k, qa, qb)
		}
	}
	return d
}

// unionKeys returns the keys of a and b, sorted, each once.
func unionKeys[M ~map[string]V, V any](a, b M) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// parityDo sends c to addr on a new connection, as raw HTTP/1.x.
func parityDo(t *testing.T, addr string, c parityCase) parityAnswer {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	proto := c.proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", c.method(), strings.ReplaceAll(c.target, "{{addr}}", addr), proto)
	if !c.sendsHeader("Host") {
		fmt.Fprintf(&b, "Host: %s\r\n", addr)
	}
	for _, h := range c.header {
		if h == "Host:" { // no Host header at all
			continue
		}
		fmt.Fprintf(&b, "%s\r\n", h)
	}
	if c.body != "" && !c.sendsHeader("Transfer-Encoding") {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(c.body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(c.body)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Written while the answer is read: a front may answer (413) before
	// it read the request, and stop reading; a write error then is no
	// failure, only a missing answer is.
	written := make(chan error, 1)
	go func() { _, err := io.WriteString(conn, b.String()); written <- err }()
	defer func() { conn.Close(); <-written }()
	br := bufio.NewReader(conn)
	var interim []int
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(br, &http.Request{Method: c.method()})
		if err != nil {
			t.Fatalf("%s: reading response: %v", addr, err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode < 100 {
			break
		}
		interim = append(interim, resp.StatusCode)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", addr, err)
	}
	return parityAnswerOf(t, c, port, resp, body, interim)
}

// parityAnswerOf reduces resp to c, with its body read whole and the 1xx
// statuses before it, to what is compared; port is the front's.
func parityAnswerOf(t *testing.T, c parityCase, port string, resp *http.Response, body []byte, interim []int) parityAnswer {
	t.Helper()
	a := parityAnswer{status: resp.StatusCode, location: resp.Header.Get("Location"), port: port, raw: string(body),
		ctype: resp.Header.Get("Content-Type"), header: resp.Header, interim: interim, framing: "none"}
	switch {
	case slices.Contains(resp.TransferEncoding, "chunked"):
		a.framing = "chunked"
	case resp.Header.Get("Content-Length") != "":
		a.framing = "length"
	}
	if x := resp.Header.Get("X-Dump"); x != "" && len(body) == 0 {
		dec, err := base64.StdEncoding.DecodeString(x)
		if err != nil {
			t.Fatalf("X-Dump: %v", err)
		}
		body = dec
	}
	switch {
	case bytes.HasPrefix(body, []byte("PHPDUMP\n")):
		a.php, a.what = true, "php"
		a.params = map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(string(body[len("PHPDUMP\n"):]), "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			a.params[k] = v
		}
		a.what = "php " + a.params["__FILE__"]
	case bytes.HasPrefix(body, []byte("STATIC ")):
		a.what = "static " + strings.TrimSpace(string(body[len("STATIC "):]))
	case bytes.HasPrefix(body, []byte("<?php")):
		a.what = "php source"
	case bytes.HasPrefix(body, []byte("PHPOUT ")):
		a.what = "php output " + strings.TrimSpace(string(body[len("PHPOUT "):]))
	case c.method() == "HEAD" && resp.StatusCode == 200:
		a.what = "head, Content-Length " + resp.Header.Get("Content-Length")
	case len(body) == 0 && resp.StatusCode < 300:
		a.what = "empty"
	default:
		a.what = "other"
	}
	return a
}

// parityNginxConf is README.md's server block ("What it does, in nginx
// terms"), verbatim but for the paths and with Debian's fastcgi_params,
// inside the http block internal/nginxtest writes in scripts/bench.sh's
// nginx.conf shape (one worker, daemon off, everything in the temp prefix;
// user root when run as root; mime.types; access_log off), plus sendfile
// and gzip_static on when the binary has it (startParityNginx).
const parityNginxConf = `
	sendfile on;
	{{gzip_static}}
	{{extra}}
	server {
		listen 127.0.0.1:{{port}};
		root {{root}};
		index index.php index.html;
		location ~ /\.(?!well-known/) { return 404; }
		location / { try_files $uri $uri/ /index.php?$query_string; }
		location ~ [^/]\.php(/|$) {
			fastcgi_split_path_info ^(.+?\.php)(/.*)$;
			try_files $fastcgi_script_name =404;
			set $path_info $fastcgi_path_info;
			include /etc/nginx/fastcgi_params;
			fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
			fastcgi_param DOCUMENT_ROOT   $realpath_root;
			fastcgi_param PATH_INFO       $path_info;
			fastcgi_pass unix:{{sock}};
		}
	}
`

// startParityNginx starts nginx (internal/nginxtest) serving root through
// the php-fpm at sock, on a free port of 127.0.0.1, and returns its address,
// and whether it has gzip_static (then on: docs/migrating.md maps it to
// realroot's built-in precompressed siblings; Debian's nginx-light may lack
// the module). t.Cleanup stops it.
func startParityNginx(t *testing.T, root, sock string) (addr string, gzipStatic bool) {
	t.Helper()
	return startParityNginxExtra(t, root, sock, "")
}

// startParityNginxExtra is startParityNginx with extra directives in the
// http block (e.g. "fastcgi_read_timeout 1s;"), inherited by the server.
func startParityNginxExtra(t *testing.T, root, sock, extra string) (addr string, gzipStatic bool) {
	t.Helper()
	conf, gzipStatic := parityNginxConfig(parityNginxConf, root, sock, extra)
	return nginxtest.Start(t, nginxtest.Options{HTTP: conf}).Addr, gzipStatic
}

// parityNginxConfig fills in tmpl (parityNginxConf or a variant of it) for
// nginxtest.Options.HTTP, as startParityNginxExtra describes.
func parityNginxConfig(tmpl, root, sock, extra string) (conf string, gzipStatic bool) {
	gzipStatic = nginxtest.HasModule("gzip_static")
	gz := "# no gzip_static module"
	if gzipStatic {
		gz = "gzip_static on;"
	}
	conf = strings.NewReplacer("{{root}}", root, "{{sock}}", sock, "{{gzip_static}}", gz,
		"{{extra}}", extra).Replace(tmpl)
	return conf, gzipStatic
}
