package main

// The clients of TestSoakMixedTraffic (soak_test.go), one per kind of traffic.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"
)

// dial opens a raw connection to the server, bounded by 10s.
func (r *soakRun) dial() (net.Conn, error) {
	c, err := net.DialTimeout("tcp", r.p.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

// readBody reads resp's body and closes it.
func readBody(resp *http.Response) (string, error) {
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b), err
}

// waitClosed reads c until the server closes it: it fails if anything but
// the close arrives, or nothing within the deadline.
func waitClosed(br *bufio.Reader, c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	extra, err := io.ReadAll(br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("connection still open 5s after the response (then read %q)", extra)
	case len(extra) > 0:
		return fmt.Errorf("%d bytes after the response: %q", len(extra), extra[:min(len(extra), 200)])
	}
	return nil // EOF or a reset: closed
}

// keepAliveClient loops over GETs and HEADs of a PHP script and static
// files on kept connections.
func (r *soakRun) keepAliveClient(i int, deadline time.Time) {
	tr := &http.Transport{MaxIdleConnsPerHost: 2}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		if ci.Reused {
			r.reused.Add(1)
		}
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	do := func(kind, method, path string, check func(*http.Response, string) string) {
		req, _ := http.NewRequestWithContext(ctx, method, r.p.url(path), nil)
		resp, err := client.Do(req)
		if err != nil {
			r.fail(kind, "%s %s: %v", method, path, err)
			return
		}
		body, err := readBody(resp)
		if err != nil {
			r.fail(kind, "%s %s: reading the body: %v", method, path, err)
			return
		}
		if msg := check(resp, body); msg != "" {
			r.fail(kind, "%s %s: %s", method, path, msg)
			return
		}
		r.ok(kind)
	}
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		id := fmt.Sprintf("k%d-%d", i, j)
		do("get php", "GET", "/echo.php?i="+id, func(resp *http.Response, body string) string {
			if resp.StatusCode != 200 || body != "echo "+id {
				return fmt.Sprintf("%d %q; want 200 %q", resp.StatusCode, body, "echo "+id)
			}
			return ""
		})
		do("get static", "GET", "/hello.txt", func(resp *http.Response, body string) string {
			if resp.StatusCode != 200 || body != soakHello {
				return fmt.Sprintf("%d %q; want 200 and hello.txt", resp.StatusCode, body)
			}
			return ""
		})
		do("head php", "HEAD", "/echo.php?i="+id, func(resp *http.Response, body string) string {
			if resp.StatusCode != 200 || body != "" {
				return fmt.Sprintf("%d %q; want 200 and no body", resp.StatusCode, body)
			}
			return ""
		})
		do("head static", "HEAD", "/hello.txt", func(resp *http.Response, body string) string {
			if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len(soakHello)) {
				return fmt.Sprintf("%d %q, length %d; want 200, no body, length %d", resp.StatusCode, body,
					resp.ContentLength, len(soakHello))
			}
			return ""
		})
		if j%8 == i%8 {
			path := "/big.bin"
			if j%16 >= 8 {
				path = "/big.php"
			}
			do("get big", "GET", path, func(resp *http.Response, body string) string {
				want := string(soakBig)
				if path == "/big.php" {
					want = strings.Repeat("0123456789abcdef", soakBigPHPLen/16)
				}
				if resp.StatusCode != 200 || body != want {
					return fmt.Sprintf("%d, %d bytes (md5 %s); want 200, %d bytes (md5 %s)", resp.StatusCode,
						len(body), md5hex([]byte(body)), len(want), md5hex([]byte(want)))
				}
				return ""
			})
		}
	}
}

// pipelineClient writes several requests at once on a raw connection,
// then reads every response in order.
func (r *soakRun) pipelineClient(i int, deadline time.Time) {
	const kind = "pipeline batch"
	small := []byte("pipelined body")
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		c, err := r.dial()
		if err != nil {
			r.fail(kind, "dial: %v", err)
			return
		}
		br := bufio.NewReader(c)
		for b := range 3 { // batches on one connection
			id := fmt.Sprintf("p%d-%d-%d", i, j, b)
			type exp struct {
				method, body string
				length       int64 // for HEAD: the Content-Length wanted, -1 any
			}
			var req bytes.Buffer
			var want []exp
			add := func(method, path, extra string, body []byte, e exp) {
				fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, path, extra)
				if body != nil {
					fmt.Fprintf(&req, "Content-Length: %d\r\nContent-Type: application/octet-stream\r\n", len(body))
				}
				req.WriteString("\r\n")
				req.Write(body)
				e.method = method
				want = append(want, e)
			}
			add("GET", "/echo.php?i="+id+"-a", "", nil, exp{body: "echo " + id + "-a"})
			add("GET", "/hello.txt", "", nil, exp{body: soakHello})
			add("HEAD", "/hello.txt", "", nil, exp{length: int64(len(soakHello))})
			add("HEAD", "/echo.php?i="+id, "", nil, exp{length: -1})
			add("POST", "/upload.php", "", small, exp{body: uploadAnswer(small)})
			add("GET", "/echo.php?i="+id+"-b", "", nil, exp{body: "echo " + id + "-b"})
			if _, err := c.Write(req.Bytes()); err != nil {
				r.fail(kind, "%s: write: %v", id, err)
				break
			}
			bad := false
			for k, w := range want {
				resp, err := http.ReadResponse(br, &http.Request{Method: w.method})
				if err != nil {
					r.fail(kind, "%s: response %d (%s): %v", id, k, w.method, err)
					bad = true
					break
				}
				body, err := readBody(resp)
				switch {
				case err != nil:
					r.fail(kind, "%s: response %d (%s): body: %v", id, k, w.method, err)
				case resp.StatusCode != 200:
					r.fail(kind, "%s: response %d (%s): status %d %q", id, k, w.method, resp.StatusCode, body)
				case w.method == "HEAD" && (body != "" || w.length >= 0 && resp.ContentLength != w.length):
					r.fail(kind, "%s: response %d (HEAD): body %q, length %d; want none, %d", id, k, body, resp.ContentLength, w.length)
				case w.method != "HEAD" && body != w.body:
					r.fail(kind, "%s: response %d (%s): body %q; want %q (out of order?)", id, k, w.method, body, w.body)
				default:
					continue
				}
				bad = true
				break
			}
			if bad {
				break
			}
			if br.Buffered() != 0 {
				r.fail(kind, "%s: %d bytes buffered after the last response", id, br.Buffered())
				break
			}
			r.ok(kind)
		}
		c.Close()
	}
}

// uploadClient POSTs about 1 MiB, with a Content-Length or chunked, and
// checks the length and md5 that PHP saw.
func (r *soakRun) uploadClient(i int, deadline time.Time) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		body := soakUpload[:len(soakUpload)-j*37%4096]
		kind := "upload content-length"
		var rd io.Reader = bytes.NewReader(body)
		if j%2 == 1 {
			kind = "upload chunked"
			rd = io.MultiReader(rd) // no length known: sent chunked
		}
		req, _ := http.NewRequest("POST", r.p.url("/upload.php"), rd)
		req.Header.Set("Content-Type", "application/octet-stream")
		if j%2 == 1 {
			req.ContentLength = -1
		}
		resp, err := client.Do(req)
		if err != nil {
			r.fail(kind, "%v", err)
			continue
		}
		got, err := readBody(resp)
		if want := uploadAnswer(body); err != nil || resp.StatusCode != 200 || got != want {
			r.fail(kind, "%d %q %v; want 200 %q", resp.StatusCode, got, err, want)
			continue
		}
		r.ok(kind)
	}
}

// expectContinueClient sends uploads with Expect: 100-continue on a raw
// connection: the body goes only after the 100, and one over the limit
// gets a 413 without a 100 and a closed connection.
func (r *soakRun) expectContinueClient(i int, deadline time.Time) {
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		c, err := r.dial()
		if err != nil {
			r.fail("expect 100-continue", "dial: %v", err)
			return
		}
		br := bufio.NewReader(c)
		func() {
			defer c.Close()
			for k := range 3 { // three on one connection
				kind := "expect 100-continue"
				body := soakUpload[:256<<10+j*7+k]
				head := fmt.Sprintf("POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"+
					"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
				var resp *http.Response
				var err error
				if k == 2 {
					// A client that sends its body at once: the 100 may
					// come or not, the answer must.
					kind = "expect without waiting"
					if _, err := c.Write(append([]byte(head), body...)); err != nil {
						r.fail(kind, "write: %v", err)
						return
					}
					resp, err = http.ReadResponse(br, &http.Request{Method: "POST"})
					if err == nil && resp.StatusCode == 100 {
						resp, err = http.ReadResponse(br, &http.Request{Method: "POST"})
					}
				} else {
					io.WriteString(c, head)
					resp, err = http.ReadResponse(br, &http.Request{Method: "POST"})
					if err != nil || resp.StatusCode != 100 {
						r.fail(kind, "interim response: %v %v; want 100 Continue", resp, err)
						return
					}
					if _, err := c.Write(body); err != nil {
						r.fail(kind, "write body: %v", err)
						return
					}
					resp, err = http.ReadResponse(br, &http.Request{Method: "POST"})
				}
				if err != nil {
					r.fail(kind, "response: %v", err)
					return
				}
				got, err := readBody(resp)
				if want := uploadAnswer(body); err != nil || resp.StatusCode != 200 || got != want {
					r.fail(kind, "%d %q %v; want 200 %q", resp.StatusCode, got, err, want)
					return
				}
				r.ok(kind)
			}
			// Over max-body-size: refused before the body is asked for.
			const kind = "expect refused 413"
			fmt.Fprintf(c, "POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"+
				"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", 3<<20)
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				r.fail(kind, "response: %v", err)
				return
			}
			got, err := readBody(resp)
			if err != nil || resp.StatusCode != 413 {
				r.fail(kind, "%d %q %v; want 413 (and no 100 Continue first)", resp.StatusCode, got, err)
				return
			}
			if err := waitClosed(br, c); err != nil {
				r.fail(kind, "%v", err)
				return
			}
			r.ok(kind)
		}()
	}
}

// disconnectClient goes away mid-request and mid-response, in turn.
func (r *soakRun) disconnectClient(i int, deadline time.Time) {
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		c, err := r.dial()
		if err != nil {
			r.fail("disconnect", "dial: %v", err)
			return
		}
		var kind string
		switch (i + j) % 5 {
		case 0:
			kind = "disconnect half headers"
			_, err = io.WriteString(c, "GET /echo.php?i=half HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag")
		case 1:
			kind = "disconnect half body"
			_, err = fmt.Fprintf(c, "POST /upload.php?soak=halfbody HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"+
				"Content-Length: %d\r\n\r\n", len(soakUpload))
			if err == nil {
				_, err = c.Write(soakUpload[:len(soakUpload)/2])
			}
		case 2, 3:
			kind, path := "disconnect mid-response static", "/big.bin"
			if (i+j)%5 == 3 {
				kind, path = "disconnect mid-response php", "/big.php"
			}
			_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path)
			if err == nil {
				var line string
				line, err = bufio.NewReaderSize(c, 64).ReadString('\n')
				if err == nil && line != "HTTP/1.1 200 OK\r\n" {
					err = fmt.Errorf("status line %q; want 200", line)
				}
			}
			if err != nil {
				r.fail(kind, "%v", err)
				c.Close()
				continue
			}
			r.ok(kind)
			c.Close()
			continue
		case 4:
			kind = "disconnect while php runs"
			_, err = io.WriteString(c, "GET /slow.php?ms=300&soak=gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			r.fail(kind, "%v", err)
		} else {
			r.ok(kind)
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
}

// slowClient sends its request headers a byte at a time, well within the
// header timeout.
func (r *soakRun) slowClient(i int, deadline time.Time) {
	const kind = "slow headers"
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		c, err := r.dial()
		if err != nil {
			r.fail(kind, "dial: %v", err)
			return
		}
		id := fmt.Sprintf("s%d-%d", i, j)
		path, want := "/echo.php?i="+id, "echo "+id
		if j%2 == 1 {
			path, want = "/hello.txt", soakHello
		}
		raw := "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: abcdefghijklmnop\r\n\r\n"
		br := bufio.NewReader(c)
		func() {
			defer c.Close()
			for k := range len(raw) { // ~70 bytes, 4ms apart: ~0.3s of a 3s timeout
				if _, err := c.Write([]byte{raw[k]}); err != nil {
					r.fail(kind, "%s: write byte %d: %v", id, k, err)
					return
				}
				time.Sleep(4 * time.Millisecond)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				r.fail(kind, "%s: %v", id, err)
				return
			}
			body, err := readBody(resp)
			if err != nil || resp.StatusCode != 200 || body != want {
				r.fail(kind, "%s: %d %q %v; want 200 %q", id, resp.StatusCode, body, err, want)
				return
			}
			r.ok(kind)
		}()
	}
}

// badFramingClient sends requests whose body framing is invalid, each
// followed by a valid request that must not be answered: each gets a 400
// and the connection closes.
func (r *soakRun) badFramingClient(i int, deadline time.Time) {
	const next = "GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" // smuggled
	cases := []struct{ kind, raw string }{
		// CL.TE: a front that believes Content-Length sends "hello" as
		// the body; chunked wins here, and "hello" is no chunk size.
		{"bad cl+te", "POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"},
		{"bad chunk size", "POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"},
		{"bad two content-lengths", "POST /upload.php HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
	}
	for j := 0; j < soakMaxOps && time.Now().Before(deadline); j++ {
		tc := cases[j%len(cases)]
		kept := j%4 == 3 // after a good request on the same connection
		kind := tc.kind
		if kept {
			kind = "bad after good on kept conn"
		}
		c, err := r.dial()
		if err != nil {
			r.fail(kind, "dial: %v", err)
			return
		}
		br := bufio.NewReader(c)
		func() {
			defer c.Close()
			if kept {
				id := fmt.Sprintf("b%d-%d", i, j)
				io.WriteString(c, "GET /echo.php?i="+id+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil {
					r.fail(kind, "good request: %v", err)
					return
				}
				if body, err := readBody(resp); err != nil || resp.StatusCode != 200 || body != "echo "+id {
					r.fail(kind, "good request: %d %q %v", resp.StatusCode, body, err)
					return
				}
			}
			if _, err := io.WriteString(c, tc.raw+next); err != nil {
				r.fail(kind, "%s: write: %v", tc.kind, err)
				return
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				r.fail(kind, "%s: %v", tc.kind, err)
				return
			}
			body, err := readBody(resp)
			if err != nil || resp.StatusCode != 400 {
				r.fail(kind, "%s: %d %q %v; want 400", tc.kind, resp.StatusCode, body, err)
				return
			}
			if err := waitClosed(br, c); err != nil {
				r.fail(kind, "%s: after the 400: %v", tc.kind, err)
				return
			}
			r.ok(kind)
		}()
	}
}
