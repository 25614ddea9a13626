package fcgi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/yookoala/gofast"
)

var benchPage = strings.Repeat("<p>hello</p>\n", 1000) // 13 KB

// conns are the two ways a Client connects: kept connections (the default)
// and one connection per request. Compare with benchstat -col /conn.
var conns = []struct {
	name             string
	disableKeepAlive bool
}{
	{"conn=pooled", false},
	{"conn=dial", true},
}

// newClient returns a Client for srv's address.
func newClient(b *testing.B, srv *Client, disableKeepAlive bool) *Client {
	return closeAtCleanup(b, &Client{Network: srv.Network, Address: srv.Address, DisableKeepAlive: disableKeepAlive})
}

// BenchmarkDo measures whole exchanges (params, header block, body, and the
// dial when there is one) on a unix socket: against net/http/fcgi, and
// against a lean fake that answers with pre-encoded records, whose figures
// are mostly the client's. A POST always gets a new connection (see
// Client.Do), so its two figures differ little.
func BenchmarkDo(b *testing.B) {
	std := startStdlib(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		if r.Method == "POST" {
			io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, benchPage)
	}))
	lean := startLean(b, "Content-type: text/html; charset=UTF-8\r\n\r\n"+benchPage)
	form := bytes.Repeat([]byte("k=v&"), 1024)
	post := func() io.ReadCloser { return io.NopCloser(bytes.NewReader(form)) }
	for _, srv := range []struct {
		name string
		c    *Client
	}{{"stdlib", std}, {"lean", lean}} {
		for _, conn := range conns {
			c := newClient(b, srv.c, conn.disableKeepAlive)
			b.Run(srv.name+"/GET/"+conn.name, func(b *testing.B) { benchDo(b, c, nil) })
			b.Run(srv.name+"/POST4K/"+conn.name, func(b *testing.B) { benchDo(b, c, post) })
		}
	}
}

// BenchmarkDoParallel runs GETs from 4 goroutines per CPU against the lean
// fake, with the default 8 connections at most.
func BenchmarkDoParallel(b *testing.B) {
	lean := startLean(b, "Content-type: text/html; charset=UTF-8\r\n\r\n"+benchPage)
	for _, conn := range conns {
		c := newClient(b, lean, conn.disableKeepAlive)
		b.Run("lean/GET/"+conn.name, func(b *testing.B) {
			params := typicalParams()
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				for pb.Next() {
					if err := doRead(context.Background(), c, &gofast.Request{Params: params}, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkDoQueued runs GETs from 8 goroutines per CPU on the default 8
// kept connections, so that requests wait for one, as under wrk -c16.
func BenchmarkDoQueued(b *testing.B) {
	lean := startLean(b, "Content-type: text/html; charset=UTF-8\r\n\r\n"+benchPage)
	c := newClient(b, lean, false)
	params := typicalParams()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		ctx, cancel := context.WithCancel(context.Background()) // a server request's
		defer cancel()
		buf := make([]byte, 32<<10)
		for pb.Next() {
			if err := doRead(ctx, c, &gofast.Request{Params: params}, buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDoCancelable runs GETs on kept connections to the lean fake under
// a context that can be cancelled, as the server's requests are: each
// exchange then registers a context.AfterFunc, which BenchmarkDo's
// background context spares.
func BenchmarkDoCancelable(b *testing.B) {
	lean := startLean(b, "Content-type: text/html; charset=UTF-8\r\n\r\n"+benchPage)
	c := newClient(b, lean, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	params := typicalParams()
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		if err := doRead(ctx, c, &gofast.Request{Params: params}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDo(b *testing.B, c *Client, stdin func() io.ReadCloser) {
	params := typicalParams()
	if stdin != nil {
		params["REQUEST_METHOD"] = "POST"
		params["CONTENT_LENGTH"] = strconv.Itoa(4 << 10)
	}
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		req := &gofast.Request{Params: params}
		if stdin != nil {
			req.Stdin = stdin()
		}
		if err := doRead(context.Background(), c, req, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// doRead runs req and reads benchPage back.
func doRead(ctx context.Context, c *Client, req *gofast.Request, buf []byte) error {
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n := 0
	for {
		m, err := resp.Body.Read(buf)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != len(benchPage) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// startLean serves stdout, pre-encoded, to each request, and keeps the
// connection open when asked to.
func startLean(b *testing.B, stdout string) *Client {
	ln, path := listenUnix(b)
	resp := appendEnd(appendStream(nil, typeStdout, stdout, 8192), 0, statusRequestComplete)
	end := appendHeader(nil, typeStdin, requestID, 0, 0) // ends the request
	bufs := sync.Pool{New: func() any { return new([64 << 10]byte) }}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				buf := bufs.Get().(*[64 << 10]byte)
				defer bufs.Put(buf)
				for {
					keep, ok := readUntil(conn, buf[:], end)
					if !ok {
						return
					}
					if _, err := conn.Write(resp); err != nil || !keep {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return &Client{Network: "unix", Address: path}
}

// readUntil reads one request: until a read ends with suffix (good enough
// for a client that writes whole records, then waits for the answer). keep
// is the FCGI_KEEP_CONN flag of its FCGI_BEGIN_REQUEST, in its first read.
func readUntil(conn net.Conn, buf, suffix []byte) (keep, ok bool) {
	for first := true; ; first = false {
		n, err := conn.Read(buf)
		if err != nil {
			return false, false
		}
		if first && n > 10 {
			keep = buf[10]&flagKeepConn != 0
		}
		if bytes.HasSuffix(buf[:n], suffix) {
			return keep, true
		}
	}
}
