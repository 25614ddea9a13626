package fcgi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/yookoala/gofast"
)

var benchPage = strings.Repeat("<p>hello</p>\n", 1000) // 13 KB

// BenchmarkDo measures whole exchanges (dial, params, header block, body)
// on a unix socket: against net/http/fcgi, and against a lean fake that
// answers with pre-encoded records, whose figures are mostly the client's.
func BenchmarkDo(b *testing.B) {
	std := startStdlib(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, benchPage)
	}))
	lean := startLean(b, "Content-type: text/html; charset=UTF-8\r\n\r\n"+benchPage)
	form := bytes.Repeat([]byte("k=v&"), 1024)
	post := func() io.ReadCloser { return io.NopCloser(bytes.NewReader(form)) }
	b.Run("stdlib/GET", func(b *testing.B) { benchDo(b, std, nil) })
	b.Run("stdlib/POST4K", func(b *testing.B) { benchDo(b, std, post) })
	b.Run("lean/GET", func(b *testing.B) { benchDo(b, lean, nil) })
	b.Run("lean/POST4K", func(b *testing.B) { benchDo(b, lean, post) })
}

func benchDo(b *testing.B, c *Client, stdin func() io.ReadCloser) {
	params := typicalParams()
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		req := &gofast.Request{Params: params}
		if stdin != nil {
			req.Stdin = stdin()
		}
		resp, err := c.Do(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := resp.Body.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
		if n != len(benchPage) {
			b.Fatalf("got %d bytes; want %d", n, len(benchPage))
		}
	}
}

// startLean serves stdout, pre-encoded, to each request.
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
				if readUntil(conn, buf[:], end) {
					conn.Write(resp)
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

// readUntil reads until a read ends with suffix (good enough for a client
// that writes whole records).
func readUntil(conn net.Conn, buf, suffix []byte) bool {
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return false
		}
		if bytes.HasSuffix(buf[:n], suffix) {
			return true
		}
	}
}
