package proxy

import (
	"net/http"
	"time"

	"go.uber.org/zap"
)

// recorder is the ResponseWriter handed down a request: it remembers the
// status and the bytes written, for the access log, and keeps Flush working.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (w *recorder) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush sends what is buffered to the client.
func (w *recorder) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logAccess writes the request's access log line and tells the observer.
func (h *Handler) logAccess(w *recorder, r *http.Request, x *exchange) {
	status := w.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http sends 200
	}
	if h.opts.Observer != nil {
		h.opts.Observer.ObserveRequest(x.route.kind.String(), status, time.Since(x.start), x.upstream)
	}
	if h.access == nil {
		return
	}
	ce := h.access.Check(zap.InfoLevel, "request")
	if ce == nil {
		return
	}
	ce.Write(
		zap.String("remote_addr", r.RemoteAddr),
		zap.String("method", r.Method),
		zap.String("uri", r.RequestURI),
		zap.String("proto", r.Proto),
		zap.Int("status", status),
		zap.Int64("bytes", w.bytes),
		zap.Duration("duration", time.Since(x.start)),
		zap.Duration("upstream_duration", x.upstream),
		zap.String("route", x.route.kind.String()),
		zap.String("release", x.rel.Root),
		zap.Uint64("gen", x.rel.Gen),
		zap.String("request_id", x.id),
		zap.String("user_agent", r.UserAgent()),
		zap.String("referer", r.Referer()),
	)
}
