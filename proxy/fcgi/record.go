package fcgi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// FastCGI 1.0 record layout and constants
// (https://fastcgi-archives.github.io/FastCGI_Specification.html).
const (
	version1 = 1

	// headerLen is the size of a record header.
	headerLen = 8
	// maxContent is the largest content length a record can carry.
	maxContent = 65535

	// requestID is the only request ID we use: one request per connection
	// at a time, as php-fpm does not multiplex.
	requestID = 1
)

// Record types.
const (
	typeBeginRequest    = 1
	typeAbortRequest    = 2
	typeEndRequest      = 3
	typeParams          = 4
	typeStdin           = 5
	typeStdout          = 6
	typeStderr          = 7
	typeData            = 8
	typeGetValues       = 9
	typeGetValuesResult = 10
	typeUnknownType     = 11
)

// Roles and flags of FCGI_BEGIN_REQUEST.
const (
	roleResponder = 1

	// flagKeepConn asks the application to keep the connection open after
	// the request; without it php-fpm closes the connection after
	// FCGI_END_REQUEST. Sent unless Client.DisableKeepAlive.
	flagKeepConn = 1
)

// Protocol statuses of FCGI_END_REQUEST.
const (
	statusRequestComplete = 0
	statusCantMpxConn     = 1
	statusOverloaded      = 2
	statusUnknownRole     = 3
)

// stdinChunk is the size of the FCGI_STDIN records we stream; a write buffer
// holds one record header and one chunk.
const stdinChunk = 32 << 10

// ErrParamTooLong: a single name-value pair does not fit in one record
// (65,535 bytes). php-fpm parses each FCGI_PARAMS record on its own, so a
// pair cannot straddle two records. Do returns it, wrapped, before it
// takes a connection: nothing was sent.
var ErrParamTooLong = errors.New("fastcgi: param larger than a record")

// putHeader writes a record header into b[:headerLen].
func putHeader(b []byte, typ byte, id uint16, contentLen, paddingLen int) {
	_ = b[headerLen-1]
	b[0] = version1
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], id)
	binary.BigEndian.PutUint16(b[4:], uint16(contentLen))
	b[6] = byte(paddingLen)
	b[7] = 0
}

// appendHeader appends a record header to b.
func appendHeader(b []byte, typ byte, id uint16, contentLen, paddingLen int) []byte {
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	putHeader(b[len(b)-headerLen:], typ, id, contentLen, paddingLen)
	return b
}

// recordHeader is a decoded record header.
type recordHeader struct {
	typ        byte
	id         uint16
	contentLen int
	paddingLen int
}

// parseHeader decodes a record header; ok is false for a version other
// than 1.
func parseHeader(b []byte) (h recordHeader, ok bool) {
	_ = b[headerLen-1]
	h = recordHeader{
		typ:        b[1],
		id:         binary.BigEndian.Uint16(b[2:]),
		contentLen: int(binary.BigEndian.Uint16(b[4:])),
		paddingLen: int(b[6]),
	}
	return h, b[0] == version1
}

// appendBeginRequest appends an FCGI_BEGIN_REQUEST record.
func appendBeginRequest(b []byte, id uint16, role uint16, flags byte) []byte {
	b = appendHeader(b, typeBeginRequest, id, 8, 0)
	return append(b, byte(role>>8), byte(role), flags, 0, 0, 0, 0, 0)
}

// pairLen is the encoded size of a name-value pair.
func pairLen(name, value string) int {
	return lenLen(len(name)) + lenLen(len(value)) + len(name) + len(value)
}

func lenLen(n int) int {
	if n < 128 {
		return 1
	}
	return 4
}

func appendLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|1<<31)
}

// appendPair appends a name-value pair: each length in 1 byte if below 128,
// else in 4 bytes with the high bit set.
func appendPair(b []byte, name, value string) []byte {
	b = appendLen(b, len(name))
	b = appendLen(b, len(value))
	b = append(b, name...)
	return append(b, value...)
}

// paramsEncoder packs name-value pairs into FCGI_PARAMS records of at most
// maxContent bytes, each pair whole in one record.
type paramsEncoder struct {
	b     []byte
	id    uint16
	start int // offset of the open record's header in b
}

func newParamsEncoder(b []byte, id uint16) paramsEncoder {
	e := paramsEncoder{b: b, id: id, start: len(b)}
	e.b = append(e.b, 0, 0, 0, 0, 0, 0, 0, 0)
	return e
}

func (e *paramsEncoder) add(name, value string) error {
	n := pairLen(name, value)
	if n > maxContent {
		return ErrParamTooLong
	}
	if len(e.b)-e.start-headerLen+n > maxContent {
		putHeader(e.b[e.start:], typeParams, e.id, len(e.b)-e.start-headerLen, 0)
		e.start = len(e.b)
		e.b = append(e.b, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	e.b = appendPair(e.b, name, value)
	return nil
}

// finish closes the open record and appends the empty FCGI_PARAMS record
// that ends the stream.
func (e *paramsEncoder) finish() []byte {
	if n := len(e.b) - e.start - headerLen; n > 0 {
		putHeader(e.b[e.start:], typeParams, e.id, n, 0)
		e.b = appendHeader(e.b, typeParams, e.id, 0, 0)
	} else {
		putHeader(e.b[e.start:], typeParams, e.id, 0, 0)
	}
	return e.b
}

// appendParams appends params as FCGI_PARAMS records, then the empty record
// ending the stream. On error b is returned unchanged.
func appendParams(b []byte, id uint16, params map[string]string) ([]byte, error) {
	e := newParamsEncoder(b, id)
	for k, v := range params {
		if err := e.add(k, v); err != nil {
			return b, fmt.Errorf("%w: %.64s (%d bytes)", err, k, pairLen(k, v))
		}
	}
	return e.finish(), nil
}

// bufPool holds write buffers: the request's records up to its params, then
// one FCGI_STDIN record at a time.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, headerLen+stdinChunk)
	return &b
}}

// maxPooledBuf bounds the buffers kept in bufPool: a request with huge
// params should not pin a huge buffer.
const maxPooledBuf = 128 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(p *[]byte) {
	if cap(*p) > maxPooledBuf {
		return
	}
	*p = (*p)[:0]
	bufPool.Put(p)
}
