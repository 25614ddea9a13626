package fcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// readBufSize is the size of a connection's bufio.Reader.
const readBufSize = 32 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// errBodyClosed is returned by Body.Read after Body.Close.
var errBodyClosed = errors.New("fastcgi: read on closed body")

// States of the stdin goroutine (exchange.stdinEnd).
const (
	stdinRunning = iota
	stdinSent    // the whole body and the empty record ending it were written
	stdinFailed
)

// exchange is one request/response on one connection. The reading side
// (Do, then Body.Read) owns br, remain, pad and the stderr buffer; the
// stdin goroutine owns the write side once started.
//
// With FCGI_KEEP_CONN the connection goes back to the pool only when the
// exchange ended cleanly (see settle); otherwise it is closed.
type exchange struct {
	ctx          context.Context
	conn         net.Conn
	pc           *pconn // nil when the exchange must not touch the pool
	dr           deadlineReader
	br           *bufio.Reader // nil once released
	writeTimeout time.Duration
	maxStderr    int

	// What was sent: FCGI_KEEP_CONN (keep), a request body. bodyMax is
	// its CONTENT_LENGTH, the most php-fpm reads; sent is what the stdin
	// goroutine wrote (read once stdinEnd is not stdinRunning).
	keep     bool
	hasStdin bool
	bodyMax  int64
	sent     int64
	stdinEnd atomic.Int32
	endOK    bool        // FCGI_END_REQUEST(FCGI_REQUEST_COMPLETE) consumed whole
	parked   atomic.Bool // reading side ended cleanly; Close settles the connection
	settled  bool        // the connection was put back or closed (under mu)

	stopCtx   func() bool // stops the context.AfterFunc closing conn; nil if none
	closeOnce sync.Once
	closed    atomic.Bool // Body.Close was called

	// abortErr is set by the stdin goroutine before it closes conn: reading
	// req.Stdin failed, or a write timed out. The reading side reports it.
	abortErr atomic.Pointer[error]
	// writeErr is a write error that did not abort the exchange (php-fpm
	// may have answered without reading the whole body).
	writeErr atomic.Pointer[error]
	stdin    sync.WaitGroup

	mu     sync.Mutex // serialises Read, Pending, Close
	remain int        // unread content bytes of the current FCGI_STDOUT record
	pad    int        // padding still to skip after the current record
	pre    []byte     // stdout bytes read along with the header block
	preBuf *[]byte    // pooled buffer behind pre, if any
	err    error      // sticky result of Read: io.EOF or an error

	smu       sync.Mutex // guards stderr, dropped, appStatus
	stderr    []byte
	dropped   int64
	appStatus uint32

	// The Response, and the values of its first header lines, share the
	// exchange's allocation: both live as long as the caller holds the
	// Response. 6 lines: Content-Type, X-Powered-By, and those of a PHP
	// session (Set-Cookie, Expires, Cache-Control, Pragma).
	resp    Response
	hdrVals [6]string
}

func newExchange(ctx context.Context, pc *pconn, c *Client) *exchange {
	conn := pc.conn
	x := &exchange{
		ctx:          ctx,
		conn:         conn,
		pc:           pc,
		keep:         !c.DisableKeepAlive,
		dr:           deadlineReader{pc: pc, timeout: c.readTimeout()},
		writeTimeout: c.writeTimeout(),
		maxStderr:    c.maxStderrBytes(),
	}
	if !pc.reused && x.keep {
		// A new connection may sit in php-fpm's accept queue until a
		// worker is free; see pool.put.
		x.dr.first = newFirstByteWatch(&c.pool, orDefault(c.starveAfter, starveAfter))
	}
	x.br = readerPool.Get().(*bufio.Reader)
	x.br.Reset(&x.dr)
	switch a := ctx.(type) {
	case afterFuncer:
		// The server's request context can register f itself, without
		// the allocations and the map entry of context.AfterFunc.
		pc.x = x
		x.stopCtx = a.AfterFunc(pc.onCancel)
	default:
		if ctx.Done() != nil { // else ctx is never done: nothing to watch
			pc.x = x
			x.stopCtx = context.AfterFunc(ctx, pc.onCancel)
		}
	}
	return x
}

// afterFuncer is a context that runs a function once done, with
// context.AfterFunc's contract (package context looks for the same method).
type afterFuncer interface {
	AfterFunc(f func()) (stop func() bool)
}

// stopWatch stops ctx from closing the connection; false means it has
// closed it or is doing so.
func (x *exchange) stopWatch() bool {
	return x.stopCtx == nil || x.stopCtx()
}

// closeConn closes the connection once; blocked reads and writes return.
// After detach it does nothing.
func (x *exchange) closeConn() {
	x.closeOnce.Do(func() { x.conn.Close() })
}

// detach makes later closeConn calls no-ops, so that the connection can
// outlive the exchange; false means it was closed already.
func (x *exchange) detach() bool {
	won := false
	x.closeOnce.Do(func() { won = true })
	return won
}

// write writes b under a write deadline between WriteTimeout - WriteTimeout/8
// and WriteTimeout from now (see pconn.armWrite).
func (x *exchange) write(b []byte) error {
	if err := x.dr.pc.armWrite(x.writeTimeout); err != nil {
		return err
	}
	_, err := x.conn.Write(b)
	return err
}

// sendStdin streams stdin as FCGI_STDIN records, then the empty record
// ending the stream. It owns buf and stdin, and closes stdin when done.
func (x *exchange) sendStdin(stdin io.ReadCloser, bufp *[]byte) {
	defer x.stdin.Done()
	defer putBuf(bufp)
	defer stdin.Close()
	end := int32(stdinFailed)
	defer func() { x.stdinEnd.Store(end) }() // first: the conn is no longer ours
	buf := (*bufp)[:headerLen+stdinChunk]
	for {
		n, rerr := stdin.Read(buf[headerLen:])
		if n > 0 {
			putHeader(buf, typeStdin, requestID, n, 0)
			if err := x.write(buf[:headerLen+n]); err != nil {
				x.writeFailed(err)
				return
			}
			x.sent += int64(n)
		}
		if rerr == io.EOF {
			putHeader(buf, typeStdin, requestID, 0, 0)
			if err := x.write(buf[:headerLen]); err != nil {
				x.writeFailed(err)
				return
			}
			end = stdinSent
			return
		}
		if rerr != nil {
			x.abort(fmt.Errorf("fastcgi: read request body: %w", rerr))
			return
		}
	}
}

// writeFailed handles a failed FCGI_STDIN write. A timeout aborts the
// exchange: php-fpm is not reading. Other errors (php-fpm closed its end,
// maybe after answering without reading the whole body) leave the outcome
// to the reading side.
func (x *exchange) writeFailed(err error) {
	if isTimeout(err) {
		x.abort(fmt.Errorf("%w: write request body: %w", ErrTimeout, err))
		return
	}
	if x.closed.Load() || x.ctx.Err() != nil {
		return
	}
	x.writeErr.Store(&err)
}

// abort records err as the exchange's outcome and closes the connection.
func (x *exchange) abort(err error) {
	x.abortErr.CompareAndSwap(nil, &err)
	x.closeConn()
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// connErr maps an error reading from the connection to the exchange's
// outcome: an abort by the stdin side, Body.Close, ctx, a timeout, or else
// a truncated response.
func (x *exchange) connErr(err error) error {
	if p := x.abortErr.Load(); p != nil {
		return *p
	}
	if x.closed.Load() {
		return errBodyClosed
	}
	if x.ctx.Err() != nil {
		return ctxErr(x.ctx)
	}
	if isTimeout(err) {
		return fmt.Errorf("%w: read: %w", ErrTimeout, err)
	}
	if p := x.writeErr.Load(); p != nil {
		return fmt.Errorf("%w: %v (after write error: %v)", ErrTruncated, err, *p)
	}
	// %v, not %w: a truncation must never satisfy errors.Is(err, io.EOF).
	return fmt.Errorf("%w: %v", ErrTruncated, err)
}

// readStdout reads FCGI_STDOUT content into p, handling the records in
// between. It returns as soon as some content is available. At
// FCGI_END_REQUEST it returns io.EOF, ErrOverloaded or ErrProtocol.
func (x *exchange) readStdout(p []byte) (int, error) {
	for x.remain == 0 {
		if err := x.nextRecord(); err != nil {
			return 0, err
		}
	}
	if len(p) > x.remain {
		p = p[:x.remain]
	}
	n, err := x.br.Read(p)
	x.remain -= n
	if err != nil {
		return n, x.connErr(err)
	}
	return n, nil
}

// nextRecord skips the padding of the current record and reads records
// until one starts FCGI_STDOUT content (remain > 0), or the request ends.
func (x *exchange) nextRecord() error {
	if x.pad > 0 {
		if _, err := x.br.Discard(x.pad); err != nil {
			return x.connErr(err)
		}
		x.pad = 0
	}
	b, err := x.br.Peek(headerLen)
	if err != nil {
		return x.connErr(err)
	}
	h, ok := parseHeader(b)
	if !ok {
		return fmt.Errorf("%w: record version %d", ErrProtocol, b[0])
	}
	x.br.Discard(headerLen) // cannot fail: peeked
	if h.id != requestID {
		return fmt.Errorf("%w: record for request %d", ErrProtocol, h.id)
	}
	switch h.typ {
	case typeStdout:
		x.remain, x.pad = h.contentLen, h.paddingLen
		return nil
	case typeStderr:
		return x.readStderr(h)
	case typeEndRequest:
		return x.readEndRequest(h)
	default:
		return fmt.Errorf("%w: unexpected record type %d", ErrProtocol, h.typ)
	}
}

// readStderr keeps the record's content up to maxStderr bytes in all and
// counts the rest as dropped.
func (x *exchange) readStderr(h recordHeader) error {
	n := h.contentLen
	x.smu.Lock()
	keep := min(n, x.maxStderr-len(x.stderr))
	x.smu.Unlock()
	if keep > 0 {
		// Read into spare capacity: Stderr may be looking at x.stderr[:len].
		s := x.stderr
		if cap(s)-len(s) < keep {
			s = make([]byte, len(s), min(max(2*cap(s), len(s)+keep, 512), x.maxStderr))
			copy(s, x.stderr)
		}
		if _, err := io.ReadFull(x.br, s[len(s):len(s)+keep]); err != nil {
			return x.connErr(err)
		}
		x.smu.Lock()
		x.stderr = s[:len(s)+keep]
		x.smu.Unlock()
	}
	if rest := n - keep + h.paddingLen; rest > 0 {
		if _, err := x.br.Discard(rest); err != nil {
			return x.connErr(err)
		}
	}
	if n > keep {
		x.smu.Lock()
		x.dropped += int64(n - keep)
		x.smu.Unlock()
	}
	return nil
}

func (x *exchange) readEndRequest(h recordHeader) error {
	if h.contentLen < 8 {
		return fmt.Errorf("%w: FCGI_END_REQUEST of %d bytes", ErrProtocol, h.contentLen)
	}
	b, err := x.br.Peek(8)
	if err != nil {
		return x.connErr(err)
	}
	app := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	status := b[4]
	x.smu.Lock()
	x.appStatus = app
	x.smu.Unlock()
	// Consume the record: on a kept connection the next exchange starts
	// right after it.
	if _, err := x.br.Discard(h.contentLen + h.paddingLen); err == nil {
		x.endOK = status == statusRequestComplete
	}
	switch status {
	case statusRequestComplete:
		return io.EOF
	case statusCantMpxConn:
		return fmt.Errorf("%w: FCGI_CANT_MPX_CONN", ErrOverloaded)
	case statusOverloaded:
		return fmt.Errorf("%w: FCGI_OVERLOADED", ErrOverloaded)
	case statusUnknownRole:
		return fmt.Errorf("%w: FCGI_UNKNOWN_ROLE", ErrProtocol)
	default:
		return fmt.Errorf("%w: protocol status %d", ErrProtocol, status)
	}
}

// release ends the exchange on the reading side: it hands back the buffers
// and settles the connection, unless that has to wait for the stdin
// goroutine. It does not wait for that goroutine, which may be blocked
// reading req.Stdin; Close does. Called with mu held.
func (x *exchange) release() {
	if x.br == nil {
		return
	}
	clean := x.err == io.EOF && x.endOK && x.br.Buffered() == 0
	x.dr.answered()
	x.br.Reset(nil)
	readerPool.Put(x.br)
	x.br = nil
	x.releasePre()
	if clean && x.keep && x.hasStdin && x.stdinEnd.Load() == stdinRunning {
		// php-fpm answered before our last FCGI_STDIN write returned
		// (it reads CONTENT_LENGTH bytes, not the empty record ending the
		// stream). Close settles once the goroutine is done.
		x.parked.Store(true)
		return
	}
	x.settle(clean)
}

// settle puts the connection back in the pool when the exchange ended
// cleanly and php-fpm is ready for the next request on it, else closes it
// and frees its slot. Reusable means: FCGI_KEEP_CONN sent,
// FCGI_END_REQUEST(FCGI_REQUEST_COMPLETE) read with nothing after it, the
// request body fully written and no longer than CONTENT_LENGTH (php-fpm
// would take the excess for the next request's records), and neither
// Body.Close, ctx nor an abort closed the connection first. Called with mu
// held.
func (x *exchange) settle(clean bool) {
	if x.settled {
		return
	}
	x.settled = true
	reuse := clean && x.keep && x.pc != nil && x.stdinClean()
	if reuse && x.stopWatch() && x.detach() {
		x.pc.x = nil // the callback will not run: the next exchange may set it
		x.pc.c.pool.put(x.pc)
		return
	}
	x.stopWatch()
	x.closeConn()
	if x.pc != nil {
		x.pc.c.pool.drop()
	}
}

// stdinClean reports whether the request body, if any, was sent whole and
// php-fpm consumed all of it.
func (x *exchange) stdinClean() bool {
	if !x.hasStdin {
		return true
	}
	return x.stdinEnd.Load() == stdinSent && x.sent <= x.bodyMax
}

func (x *exchange) releasePre() {
	x.pre = nil
	if x.preBuf != nil {
		putBuf(x.preBuf)
		x.preBuf = nil
	}
}

// ctxErr wraps ctx.Err(), so that errors.Is(err, context.Canceled) holds,
// and the cancellation cause when there is a distinct one.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("fastcgi: %w: %w", err, cause)
	}
	return fmt.Errorf("fastcgi: %w", err)
}
