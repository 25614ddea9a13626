package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"sync/atomic"
)

// requestIDs hands out request ids: the client's X-Request-Id when it is
// sane, else a process-unique id made of a random prefix and a counter.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func (ids *requestIDs) init() {
	var b [6]byte
	rand.Read(b[:])
	ids.prefix = hex.EncodeToString(b[:]) + "-"
}

// get returns r's id. A client's id is kept when it has 1 to 128 printable
// ASCII bytes and no space; otherwise a new one replaces it.
func (ids *requestIDs) get(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) == 1 && saneID(v[0]) {
		return v[0]
	}
	var buf [40]byte
	b := append(buf[:0], ids.prefix...)
	return string(strconv.AppendUint(b, ids.n.Add(1), 16))
}

func saneID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
