package proxy

import (
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// recorder is the ResponseWriter handed down a request: it remembers the
// status and the bytes sent, for the access log, and keeps Flush working.
// When the response may be compressed its ResponseWriter is its own cz,
// which wraps the server's.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64 // written by the handler; sent() is what went out
	wroteHeader bool
	served      bool // the handler returned
	cz          compressor
	// idv backs the X-Request-Id header value: the recorder is allocated
	// anyway, a []string of its own would be one more allocation.
	idv [1]string
}

// compress makes the response compressed on the fly in encoding (see
// compressor), holding at most min bytes to decide.
func (w *recorder) compress(encoding string, min int64, bufs *sync.Pool) {
	w.cz = compressor{out: sink{w: w.ResponseWriter}, encoding: encoding, min: min, bufs: bufs}
	w.ResponseWriter = &w.cz
}

// compressing reports whether the response goes through w.cz.
func (w *recorder) compressing() bool { return w.cz.out.w != nil }

// noCompression is called by a handler that streams: its response is sent
// as it is, every Flush passing through.
func (w *recorder) noCompression() { w.cz.off = true }

// finish ends a compressed response once the handler is done. If it did
// not return (it panicked: http.ErrAbortHandler after a failed exchange),
// nothing held by compression is sent, so that a cut response can never
// look whole.
func (w *recorder) finish() {
	if w.compressing() {
		w.cz.aborted = !w.served
		w.cz.finish()
	}
}

// sent is the number of body bytes sent to the client (compressed ones
// when compressed).
func (w *recorder) sent() int64 {
	if w.compressing() {
		return w.cz.out.n
	}
	return w.bytes
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

// ReadFrom lets a static file go out with sendfile(2) when the server's
// writer can (and the response is not compressed).
func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var (
		n   int64
		err error
	)
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = copyPooled(writerOnly{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
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
		zap.String("remote_addr", h.remoteAddr(r)),
		zap.String("method", r.Method),
		zap.String("uri", r.RequestURI),
		zap.String("proto", r.Proto),
		zap.Int("status", status),
		zap.Int64("bytes", w.sent()),
		zap.Duration("duration", time.Since(x.start)),
		zap.Duration("upstream_duration", x.upstream),
		zap.String("route", x.route.kind.String()),
		zap.String("release", x.rel.Root),
		zap.Uint64("gen", x.rel.Gen),
		zap.String("request_id", x.requestID()),
		zap.String("user_agent", r.UserAgent()),
		zap.String("referer", r.Referer()),
	)
}

// maxRejectReason bounds the reason of a rejected request in its log line:
// it may quote what the client sent.
const maxRejectReason = 256

// LogRejected logs a request the HTTP server answered itself, before any
// handler (a request it could not read: 400, 431, 501; or 417), with route
// "none", and tells the observer. The HTTP/1 server calls it (see
// h1.Server.Rejected); net/http's has no such hook.
func (h *Handler) LogRejected(remoteAddr string, status int, reason string, bytes int) {
	if h.opts.Observer != nil {
		h.opts.Observer.ObserveRequest("none", status, 0, 0)
	}
	if h.access == nil {
		return
	}
	if len(reason) > maxRejectReason {
		reason = reason[:maxRejectReason]
	}
	if ce := h.access.Check(zap.InfoLevel, "request"); ce != nil {
		ce.Write(
			zap.String("remote_addr", remoteAddr),
			zap.Int("status", status),
			zap.Int("bytes", bytes),
			zap.String("route", "none"),
			zap.String("reason", reason),
		)
	}
}
