//go:build unix

package fcgi

import "syscall"

// probe reads from fd without blocking (net sets O_NONBLOCK on its sockets).
// Only "would block" means the connection is open and silent.
func (pc *pconn) probe(fd uintptr) {
	var err error
	for {
		_, err = syscall.Read(int(fd), pc.probeB[:])
		if err != syscall.EINTR {
			break
		}
	}
	pc.probeOK = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
