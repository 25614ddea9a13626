package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// spool holds bytes in memory up to a bound, then in an unlinked temp file.
// It buffers request bodies before php-fpm is involved and, with
// BufferResponses, php-fpm's responses before a slow client gets them.
type spool struct {
	buf   bytes.Buffer
	limit int64  // bytes kept in memory
	dir   string // where the temp file goes
	file  *os.File
	n     int64
}

// errSpool marks a failure to write the spool (disk full, unwritable temp
// dir), as opposed to a failure of what is being read into it.
type errSpool struct{ err error }

func (e *errSpool) Error() string { return "buffer to disk: " + e.err.Error() }
func (e *errSpool) Unwrap() error { return e.err }

func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && int64(s.buf.Len()+len(p)) <= s.limit {
		s.n += int64(len(p))
		return s.buf.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "realroot-")
		if err != nil {
			return 0, &errSpool{err}
		}
		os.Remove(f.Name()) // the open file stays usable; nothing is left behind
		s.file = f
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			return 0, &errSpool{err}
		}
		s.buf = bytes.Buffer{}
	}
	n, err := s.file.Write(p)
	s.n += int64(n)
	if err != nil {
		return n, &errSpool{err}
	}
	return n, nil
}

// reader returns everything written, from the start.
func (s *spool) reader() (io.ReadSeeker, error) {
	if s.file == nil {
		return bytes.NewReader(s.buf.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, &errSpool{err}
	}
	return s.file, nil
}

// spooled is a spooled request body as handed to php-fpm: Close does
// nothing (the handler closes the spool), and Seek lets a Balancer send it
// again to another php-fpm.
type spooled struct{ io.ReadSeeker }

func (spooled) Close() error { return nil }

// Close removes the temp file, if any.
func (s *spool) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}

// spoolBody reads r's whole body before php-fpm is involved, like nginx's
// fastcgi_request_buffering: php-fpm gets an exact CONTENT_LENGTH, never a
// truncated upload, and no worker waits on a slow client. It returns nil for
// a request without a body. A body over MaxBodySize is a 413, a client that
// fails mid-body a 400 (or 499 if it went away), a temp file that cannot be
// written a 500.
func (h *Handler) spoolBody(w http.ResponseWriter, r *http.Request) (*spool, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	limit := h.opts.MaxBodySize
	rc := http.NewResponseController(w)
	if limit > 0 && r.ContentLength > limit {
		// Unread, under the deadline serve set.
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: "request body too large",
			err: fmt.Errorf("content-length %d over %d", r.ContentLength, limit), header: closeConn}
	}
	body := io.Reader(r.Body)
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
	}
	dr := &deadlineReader{r: body, rc: rc, timeout: h.opts.BodyTimeout}
	if len(r.TransferEncoding) > 0 {
		dr.step = chunkedStep
	}
	s := &spool{limit: h.opts.BodyMemory, dir: h.opts.TempDir}
	if r.ContentLength > 0 && r.ContentLength <= s.limit {
		s.buf.Grow(int(r.ContentLength))
	}
	_, err := io.Copy(s, dr)
	if err != nil {
		// The deadline stays: net/http reads what is left of the body
		// before it closes the connection, and must not wait forever.
		s.Close()
		return nil, bodyError(r, err)
	}
	dr.clear()
	return s, nil
}

// deadlineReader moves the connection's read deadline before every read, so
// that a client may take as long as it likes in all but not BodyTimeout
// between two reads.
type deadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	step    int  // if not 0, the most bytes asked of r under one deadline
	set     bool // the server supports deadlines (not so in some tests)
}

// chunkedStep is deadlineReader's step for a chunked body. net/http's
// chunked reader (under both HTTP/1 servers) reads from the connection
// until the buffer it is given is full or the chunk ends: one read of
// 32 KiB of a big chunk from a slow client waited for all 32 KiB under one
// deadline, and a steady upload got 408 with no gap near BodyTimeout. One
// full TCP segment ends a read of 1 KiB.
const chunkedStep = 1 << 10

// Read fills p a step at a time, each under a deadline of its own, or, with
// no step, reads once.
func (d *deadlineReader) Read(p []byte) (int, error) {
	n := 0
	for {
		q := p[n:]
		if d.step > 0 && len(q) > d.step {
			q = q[:d.step]
		}
		if err := d.rc.SetReadDeadline(time.Now().Add(d.timeout)); err == nil {
			d.set = true
		}
		m, err := d.r.Read(q)
		n += m
		if d.step == 0 || n == len(p) || err != nil {
			return n, err
		}
	}
}

// clear lifts the deadline once the body is read.
func (d *deadlineReader) clear() {
	if d.set {
		d.rc.SetReadDeadline(time.Time{})
	}
}

// closeConn ends the connection after an error response about the body:
// what is left of the body is not read (nginx does the same).
var closeConn = http.Header{"Connection": {"close"}}

// bodyError classifies an error reading the client's body into a spool.
func bodyError(r *http.Request, err error) *httpError {
	var (
		tooLarge *http.MaxBytesError
		disk     *errSpool
	)
	switch {
	case errors.As(err, &disk):
		return &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err, header: closeConn}
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: "request body too large", err: err, header: closeConn}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &httpError{status: http.StatusRequestTimeout, msg: "request body timed out", err: err, header: closeConn}
	case r.Context().Err() != nil:
		return &httpError{status: StatusClientClosed, msg: "client closed request", err: err}
	}
	return &httpError{status: http.StatusBadRequest, msg: "cannot read request body", err: err, header: closeConn}
}
