package fcgi

import (
	"context"
	"net"
	"net/http"
	"time"
)

// pconn is one connection to the application, pooled or not. Its fields
// after idleAt belong to the exchange running on it, one at a time; the pool
// hands the connection from one to the next.
type pconn struct {
	c      *Client
	conn   net.Conn
	reused bool      // it ran an exchange before; set by put
	idleAt time.Time // when put back; under pool.mu

	// readDeadline and writeDeadline are the deadlines last set on conn
	// (see armRead). Reads and writes each run on one goroutine at a time.
	readDeadline, writeDeadline time.Time

	// x is the exchange whose ctx closes conn when done; onCancel, the
	// context.AfterFunc callback doing so, is allocated once, here. x is
	// set before the callback is registered and changes only once its
	// registration was stopped (see exchange.settle).
	x        *exchange
	onCancel func()

	// hdr is the map of the last Response.Header read on conn, cleared
	// and refilled by the next one (see Response.Header).
	hdr http.Header
}

// dialConn opens a connection (in a slot the caller holds).
func (c *Client) dialConn(ctx context.Context) (*pconn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.pool.dials.Add(1)
	pc := &pconn{c: c, conn: conn}
	pc.onCancel = pc.cancel
	return pc, nil
}

// cancel closes the connection of pc's exchange: its ctx is done.
func (pc *pconn) cancel() { pc.x.closeConn() }

// armRead makes the read deadline fall between timeout - timeout/8 and
// timeout from now (see Client.ReadTimeout). Moving a deadline updates a
// runtime timer, so it is moved only when out of that window: about once
// per timeout/8 on a busy connection, not at every read. The deadline left
// by a previous exchange follows the same rule, hence never cuts a wait of
// the next one short.
func (pc *pconn) armRead(timeout time.Duration) error {
	return arm(pc.conn.SetReadDeadline, &pc.readDeadline, timeout)
}

// armWrite is armRead for writes (see Client.WriteTimeout).
func (pc *pconn) armWrite(timeout time.Duration) error {
	return arm(pc.conn.SetWriteDeadline, &pc.writeDeadline, timeout)
}

func arm(set func(time.Time) error, last *time.Time, timeout time.Duration) error {
	d := time.Now().Add(timeout)
	if lag := d.Sub(*last); lag >= 0 && lag <= timeout/8 {
		return nil
	}
	if err := set(d); err != nil {
		return err
	}
	*last = d
	return nil
}

// deadlineReader reads from an exchange's connection under a read
// deadline, so that ReadTimeout bounds each wait (see pconn.armRead). It
// counts the bytes read: none means php-fpm sent nothing for this request.
type deadlineReader struct {
	pc      *pconn
	timeout time.Duration
	n       int64
	err     error // of the last read from conn
	// first, if set, watches an exchange on a new connection until its
	// first byte (see pool.put); ended at the first byte or at release.
	first *firstByteWatch
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	if err := r.pc.armRead(r.timeout); err != nil {
		return 0, err
	}
	n, err := r.pc.conn.Read(p)
	r.n += int64(n)
	r.err = err
	if n > 0 {
		r.answered()
	}
	return n, err
}

// answered ends the first-byte watch, once.
func (r *deadlineReader) answered() {
	if r.first != nil {
		r.first.done()
		r.first = nil
	}
}
