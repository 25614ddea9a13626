// Command gofloor is the least a Go HTTP front can do per PHP request, the
// floor against which scripts/bench.sh measures realroot's own cost: a
// goroutine per client connection reads an HTTP/1.1 request to its blank
// line, takes one of -conns kept connections to php-fpm (FCGI_KEEP_CONN), sends one
// request encoded at start-up (fixed params: -root, -script, -uri), reads
// the records to FCGI_END_REQUEST, and answers 200 with the body after PHP's
// header block and a Content-Length. No routing, no stat, no params built
// per request, no header parsing, no timeouts, no error handling beyond
// closing: it is a measuring stick, never a server.
//
//	gofloor -listen 127.0.0.1:18099 -fastcgi unix:/tmp/b/fpm.sock -conns 8 -root /srv/app/public -script /hello.php
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
)

// FastCGI record types.
const (
	typeBeginRequest = 1
	typeEndRequest   = 3
	typeParams       = 4
	typeStdin        = 5
	typeStdout       = 6
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18099", "HTTP address")
	fastcgi := flag.String("fastcgi", "", "php-fpm address, unix:PATH or host:port")
	conns := flag.Int("conns", 8, "kept connections to php-fpm")
	root := flag.String("root", "", "DOCUMENT_ROOT, as php-fpm sees it")
	script := flag.String("script", "/hello.php", "SCRIPT_NAME")
	uri := flag.String("uri", "", "REQUEST_URI (default: the script)")
	flag.Parse()
	if *fastcgi == "" || *root == "" {
		fmt.Fprintln(os.Stderr, "gofloor: -fastcgi and -root are required")
		os.Exit(2)
	}
	if *uri == "" {
		*uri = *script
	}
	network, addr := "tcp", *fastcgi
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	pool := make(chan *upstream, *conns)
	for range *conns {
		c, err := net.Dial(network, addr)
		if err != nil {
			log.Fatalf("gofloor: %v", err)
		}
		pool <- &upstream{c: c, br: bufio.NewReaderSize(c, 16<<10)}
	}
	req := encodeRequest(*root, *script, *uri)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("gofloor: %v", err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatalf("gofloor: %v", err)
		}
		go serve(c, pool, req)
	}
}

// upstream is a kept connection to php-fpm.
type upstream struct {
	c  net.Conn
	br *bufio.Reader
}

// encodeRequest is the whole FastCGI request: FCGI_BEGIN_REQUEST (responder,
// FCGI_KEEP_CONN), the params, and the empty FCGI_PARAMS and FCGI_STDIN
// records ending both streams.
func encodeRequest(root, script, uri string) []byte {
	_, query, _ := strings.Cut(uri, "?")
	var p []byte
	for _, kv := range [][2]string{
		{"SCRIPT_FILENAME", root + script}, {"SCRIPT_NAME", script}, {"DOCUMENT_ROOT", root},
		{"REQUEST_URI", uri}, {"DOCUMENT_URI", script}, {"QUERY_STRING", query},
		{"REQUEST_METHOD", "GET"}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "gofloor"}, {"REMOTE_ADDR", "127.0.0.1"}, {"REMOTE_PORT", "40000"},
		{"SERVER_ADDR", "127.0.0.1"}, {"SERVER_PORT", "80"}, {"SERVER_NAME", "localhost"},
		{"REDIRECT_STATUS", "200"}, {"HTTP_HOST", "127.0.0.1"},
	} {
		p = appendLen(p, len(kv[0]))
		p = appendLen(p, len(kv[1]))
		p = append(p, kv[0]...)
		p = append(p, kv[1]...)
	}
	var b []byte
	b = appendRecord(b, typeBeginRequest, []byte{0, 1, 1, 0, 0, 0, 0, 0})
	b = appendRecord(b, typeParams, p)
	b = appendRecord(b, typeParams, nil)
	return appendRecord(b, typeStdin, nil)
}

// appendLen appends a name-value pair length: one byte below 128, else four
// with the high bit set.
func appendLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|1<<31)
}

// appendRecord appends a record of request id 1 (content under 64 KiB).
func appendRecord(b []byte, typ byte, content []byte) []byte {
	b = append(b, 1, typ, 0, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(content)))
	b = append(b, 0, 0)
	return append(b, content...)
}

// serve answers the requests of one client connection until it closes.
func serve(c net.Conn, pool chan *upstream, req []byte) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4<<10)
	bw := bufio.NewWriterSize(c, 4<<10)
	body := make([]byte, 0, 16<<10)
	for {
		for { // the request's line and headers, to the blank line
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		up := <-pool
		var err error
		body, err = exchange(up, req, body[:0])
		pool <- up
		if err != nil {
			log.Fatalf("gofloor: php-fpm: %v", err)
		}
		if i := bytes.Index(body, []byte("\r\n\r\n")); i >= 0 {
			body = body[i+4:]
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: ")
		bw.WriteString(strconv.Itoa(len(body)))
		bw.WriteString("\r\n\r\n")
		bw.Write(body)
		if bw.Flush() != nil {
			return
		}
	}
}

// exchange sends req on up and appends the FCGI_STDOUT content to body,
// until FCGI_END_REQUEST.
func exchange(up *upstream, req, body []byte) ([]byte, error) {
	if _, err := up.c.Write(req); err != nil {
		return body, err
	}
	var h [8]byte
	for {
		if _, err := io.ReadFull(up.br, h[:]); err != nil {
			return body, err
		}
		n, pad := int(binary.BigEndian.Uint16(h[4:])), int(h[6])
		switch h[1] {
		case typeStdout:
			start := len(body)
			body = append(body, make([]byte, n)...)
			if _, err := io.ReadFull(up.br, body[start:]); err != nil {
				return body, err
			}
		default:
			if _, err := up.br.Discard(n); err != nil {
				return body, err
			}
		}
		if _, err := up.br.Discard(pad); err != nil {
			return body, err
		}
		if h[1] == typeEndRequest {
			return body, nil
		}
	}
}
