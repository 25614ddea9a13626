package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

var helloHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "Hello, world!")
})

// BenchmarkKeepAliveGet is one GET of a small body per op on a kept
// loopback connection, client included; allocations are the process's.
func BenchmarkKeepAliveGet(b *testing.B) {
	b.Run("h1", func(b *testing.B) {
		addr, _ := startH1(b, helloHandler)
		benchGet(b, addr)
	})
	b.Run("nethttp", func(b *testing.B) {
		benchGet(b, startStd(b, helloHandler))
	})
}

func benchGet(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /index.php HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for { // the header, then the 13-byte body
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
		}
		if _, err := br.Discard(13); err != nil {
			b.Fatal(err)
		}
	}
}
