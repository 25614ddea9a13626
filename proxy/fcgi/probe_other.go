//go:build !unix

package fcgi

// probe cannot read without blocking here: a kept connection is assumed
// alive, and a dead one is left to the retry rule of Client.Do.
func (pc *pconn) probe(fd uintptr) { pc.probeOK = true }
