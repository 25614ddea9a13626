package fcgi

import (
	"context"
	"net"
	"syscall"
	"time"
)

// pconn is one connection to the application, pooled or not.
type pconn struct {
	c      *Client
	conn   net.Conn
	reused bool      // it ran an exchange before; set by put
	idleAt time.Time // when put back; under pool.mu

	// Liveness check (see alive), set up at the first reuse.
	noProbe bool // the connection cannot be checked
	rc      syscall.RawConn
	probeFn func(fd uintptr) // pc.probe, allocated once
	probeOK bool
	probeB  [1]byte
}

// dialConn opens a connection (in a slot the caller holds).
func (c *Client) dialConn(ctx context.Context) (*pconn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.pool.dials.Add(1)
	return &pconn{c: c, conn: conn}, nil
}

// alive reports whether a kept connection can carry a request: php-fpm has
// not closed it and sent nothing since the last exchange ended. It reads
// without blocking: nothing to read (EAGAIN) is the only good answer; EOF,
// a reset, or stray bytes (which desynchronise the stream) mean dead.
func (pc *pconn) alive() bool {
	if pc.noProbe {
		return true
	}
	if pc.probeFn == nil {
		sc, ok := pc.conn.(syscall.Conn)
		if !ok {
			pc.noProbe = true
			return true
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		pc.rc, pc.probeFn = rc, pc.probe
	}
	pc.probeOK = false
	if err := pc.rc.Control(pc.probeFn); err != nil {
		return false
	}
	return pc.probeOK
}
