// Package h2raw is a minimal HTTP/2 client for tests, with frames written
// by hand and HPACK literals without Huffman coding or indexing: for what
// Go's client never does (give a stream no window, declare a body its DATA
// does not match, reset streams, watch frames after a stream ended).
package h2raw

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Frame types and flags (RFC 9113 §6).
const (
	Data, Headers, RSTStream, Settings, Ping, GoAway, WindowUpdate = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
	EndStream, Ack, EndHeaders                                     = 0x1, 0x1, 0x4
)

// Frame is one frame read.
type Frame struct {
	Type, Flags byte
	Stream      uint32
	Payload     []byte
}

// Encode is a frame's bytes.
func Encode(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	return append(b, payload...)
}

// Conn is a prior-knowledge (h2c) connection.
type Conn struct {
	net.Conn
	addr string
}

// Dial connects to addr and sends the preface and a SETTINGS frame that
// keeps the defaults (65,535-byte windows). The connection has a 20 s
// deadline; it is closed when the test ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Encode(Settings, 0, 0, nil)...)); err != nil {
		t.Fatal(err)
	}
	return &Conn{Conn: c, addr: addr}
}

// Request is the header block of a request for path with the connection's
// address as :authority, then fields "name: value" (lower case).
func (c *Conn) Request(method, path string, fields ...string) []byte {
	var b []byte
	lit := func(k, v string) {
		b = append(b, 0x00)
		b = append(b, hpackString(k)...)
		b = append(b, hpackString(v)...)
	}
	lit(":method", method)
	lit(":scheme", "http")
	lit(":path", path)
	lit(":authority", c.addr)
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ": ")
		lit(k, v)
	}
	return b
}

// hpackString is an HPACK string literal without Huffman coding.
func hpackString(s string) []byte {
	n := len(s)
	if n < 127 {
		return append([]byte{byte(n)}, s...)
	}
	b := []byte{127}
	n -= 127
	for n >= 128 {
		b = append(b, byte(n%128+128))
		n /= 128
	}
	return append(append(b, byte(n)), s...)
}

// Send writes frames in one write.
func (c *Conn) Send(t testing.TB, frames ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Next reads the next frame, and acknowledges it if it is SETTINGS or
// PING, as a client that reads its connection does. It never sends
// WINDOW_UPDATE.
func (c *Conn) Next() (Frame, error) {
	head := make([]byte, 9)
	if _, err := io.ReadFull(c, head); err != nil {
		return Frame{}, err
	}
	p := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
	if _, err := io.ReadFull(c, p); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: head[3], Flags: head[4], Stream: uint32(head[5]&0x7f)<<24 | uint32(head[6])<<16 | uint32(head[7])<<8 | uint32(head[8]), Payload: p}
	switch {
	case f.Type == Settings && f.Flags&Ack == 0:
		c.Write(Encode(Settings, Ack, 0, nil))
	case f.Type == Ping && f.Flags&Ack == 0:
		c.Write(Encode(Ping, Ack, 0, p))
	}
	return f, nil
}

// StreamEnd is how a stream ended for the client.
type StreamEnd struct {
	Headers   int    // HEADERS frames received
	Status    string // the :status, if it could be read (see Status)
	Data      []byte // DATA payloads, concatenated
	EndStream bool   // ended by END_STREAM
	Reset     bool   // ended by RST_STREAM
	ResetCode uint32
	GoAway    bool // a GOAWAY came meanwhile
	Err       error
}

// ReadStream reads until stream id ends (END_STREAM or RST_STREAM), the
// connection fails, or a GOAWAY leaves id unprocessed.
func (c *Conn) ReadStream(id uint32) StreamEnd {
	var e StreamEnd
	for {
		f, err := c.Next()
		if err != nil {
			e.Err = err
			return e
		}
		switch {
		case f.Type == GoAway:
			e.GoAway = true
			if last := uint32(f.Payload[0]&0x7f)<<24 | uint32(f.Payload[1])<<16 | uint32(f.Payload[2])<<8 | uint32(f.Payload[3]); last < id {
				return e
			}
		case f.Stream != id:
		case f.Type == Headers:
			e.Headers++
			if e.Status == "" {
				e.Status = Status(f.Payload)
			}
			if f.Flags&EndStream != 0 {
				e.EndStream = true
				return e
			}
		case f.Type == Data:
			e.Data = append(e.Data, f.Payload...)
			if f.Flags&EndStream != 0 {
				e.EndStream = true
				return e
			}
		case f.Type == RSTStream:
			e.Reset = true
			e.ResetCode = uint32(f.Payload[0])<<24 | uint32(f.Payload[1])<<16 | uint32(f.Payload[2])<<8 | uint32(f.Payload[3])
			return e
		}
	}
}

// Status finds :status in a header block that starts with it as Go's and
// nginx's servers write it, after any dynamic table size update: an
// indexed static entry (8-14) or a literal named by one of them (not
// Huffman-coded); "?" otherwise.
func Status(b []byte) string {
	for len(b) > 0 && b[0]&0xe0 == 0x20 { // a dynamic table size update first
		i := 1
		if b[0]&0x1f == 0x1f {
			for i < len(b) && b[i]&0x80 != 0 {
				i++
			}
			i++
		}
		b = b[min(i, len(b)):]
	}
	if len(b) == 0 {
		return ""
	}
	switch idx := b[0]; {
	case idx >= 0x88 && idx <= 0x8e:
		return []string{"200", "204", "206", "304", "400", "404", "500"}[idx-0x88]
	case (idx&0xe0 == 0x00 && idx&0x0f >= 8 && idx&0x0f <= 14 || idx&0xc0 == 0x40 && idx&0x3f >= 8 && idx&0x3f <= 14) && len(b) >= 5 && b[1] == 3:
		return string(b[2:5]) // a literal whose name is one of the :status entries
	}
	return "?"
}
