// Package fcgitest is a scriptable FastCGI responder for tests: it records
// the exact params and body of every request and answers with whatever the
// test's function writes. Use a real php-fpm where one can run; use this to
// see what PHP hides (HTTP_PROXY, the exact param set) or to inject faults.
package fcgitest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Request is what the server received.
type Request struct {
	Params map[string]string
	Stdin  []byte
}

// Handler answers a request by writing the raw CGI response (headers, blank
// line, body) to stdout. Returning an error closes the connection without
// FCGI_END_REQUEST.
type Handler func(req *Request, stdout io.Writer) error

// Server is a FastCGI responder on a unix socket.
type Server struct {
	Socket string

	ln      net.Listener
	handler Handler
	wg      sync.WaitGroup

	mu    sync.Mutex
	reqs  []*Request
	conns map[net.Conn]bool
}

// Start starts a Server answering with h; t.Cleanup stops it.
func Start(t testing.TB, h Handler) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcgi")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Socket: filepath.Join(dir, "s.sock"), handler: h, conns: map[net.Conn]bool{}}
	s.ln, err = net.Listen("unix", s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns { // kept-alive connections a client may still hold
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		os.RemoveAll(dir)
	})
	return s
}

// Requests returns every request received so far.
func (s *Server) Requests() []*Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Request(nil), s.reqs...)
}

// Last returns the last request received, or nil.
func (s *Server) Last() *Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return nil
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		}()
	}
}

const (
	typeBeginRequest = 1
	typeEndRequest   = 3
	typeParams       = 4
	typeStdin        = 5
	typeStdout       = 6
)

func (s *Server) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, id, keep, err := readRequest(br)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, req)
		s.mu.Unlock()
		w := &stdoutWriter{w: c, id: id}
		if err := s.handler(req, w); err != nil {
			return
		}
		if writeRecord(c, typeEndRequest, id, make([]byte, 8)) != nil || !keep {
			return
		}
	}
}

func readRequest(br *bufio.Reader) (req *Request, id uint16, keep bool, err error) {
	req = &Request{Params: map[string]string{}}
	var params []byte
	for {
		typ, rid, content, err := readRecord(br)
		if err != nil {
			return nil, 0, false, err
		}
		switch typ {
		case typeBeginRequest:
			id, keep = rid, len(content) > 2 && content[2]&1 != 0
		case typeParams:
			params = append(params, content...)
			if len(content) == 0 {
				if err := decodePairs(params, req.Params); err != nil {
					return nil, 0, false, err
				}
			}
		case typeStdin:
			if len(content) == 0 {
				return req, id, keep, nil
			}
			req.Stdin = append(req.Stdin, content...)
		}
	}
}

func readRecord(r io.Reader) (typ uint8, id uint16, content []byte, err error) {
	var h [8]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	if h[0] != 1 {
		return 0, 0, nil, errors.New("fcgitest: bad version")
	}
	typ, id = h[1], binary.BigEndian.Uint16(h[2:])
	n, pad := int(binary.BigEndian.Uint16(h[4:])), int(h[6])
	buf := make([]byte, n+pad)
	if _, err = io.ReadFull(r, buf); err != nil {
		return
	}
	return typ, id, buf[:n], nil
}

func decodePairs(b []byte, into map[string]string) error {
	size := func() (int, bool) {
		if len(b) == 0 {
			return 0, false
		}
		if b[0]>>7 == 0 {
			n := int(b[0])
			b = b[1:]
			return n, true
		}
		if len(b) < 4 {
			return 0, false
		}
		n := int(binary.BigEndian.Uint32(b) &^ (1 << 31))
		b = b[4:]
		return n, true
	}
	for len(b) > 0 {
		kl, ok1 := size()
		vl, ok2 := size()
		if !ok1 || !ok2 || len(b) < kl+vl {
			return errors.New("fcgitest: bad name-value pair")
		}
		into[string(b[:kl])] = string(b[kl : kl+vl])
		b = b[kl+vl:]
	}
	return nil
}

func writeRecord(w io.Writer, typ uint8, id uint16, content []byte) error {
	h := [8]byte{1, typ}
	binary.BigEndian.PutUint16(h[2:], id)
	binary.BigEndian.PutUint16(h[4:], uint16(len(content)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(content)
	return err
}

// stdoutWriter frames what it is given as FCGI_STDOUT records, one record
// per Write (split at 65535 bytes), so a test controls the framing.
type stdoutWriter struct {
	w  io.Writer
	id uint16
}

func (s *stdoutWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		chunk := p[:min(len(p), 65535)]
		if err := writeRecord(s.w, typeStdout, s.id, chunk); err != nil {
			return 0, err
		}
		p = p[len(chunk):]
	}
	return n, nil
}
