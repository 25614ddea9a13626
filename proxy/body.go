package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

// spooledBody is a request body read in full before php-fpm is involved,
// like nginx's fastcgi_request_buffering: php-fpm gets an exact
// CONTENT_LENGTH, never a truncated upload, and no worker waits on a slow
// client. Small bodies stay in memory; larger ones go to an unlinked temp
// file.
type spooledBody struct {
	io.Reader
	n    int64
	file *os.File
}

// Close removes the temp file, if any.
func (b *spooledBody) Close() error {
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}

// spool reads r's body. It returns nil for a request without one. A body
// over MaxBodySize is a 413, a client that fails mid-body a 400 (or 499 if
// it went away), a temp file that cannot be written a 500.
func (h *Handler) spool(w http.ResponseWriter, r *http.Request) (*spooledBody, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	limit := h.opts.MaxBodySize
	if limit > 0 && r.ContentLength > limit {
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: "request body too large",
			err: fmt.Errorf("content-length %d over %d", r.ContentLength, limit)}
	}
	body := io.Reader(r.Body)
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
	}

	mem := h.opts.BodyMemory
	if r.ContentLength > 0 && r.ContentLength < mem {
		mem = r.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, mem+1))
	n, err := io.CopyN(buf, body, mem+1)
	if errors.Is(err, io.EOF) {
		return &spooledBody{Reader: bytes.NewReader(buf.Bytes()), n: n}, nil
	}
	if err != nil {
		return nil, bodyError(r, err)
	}

	f, err := os.CreateTemp(h.opts.TempDir, "realroot-body-")
	if err != nil {
		return nil, &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err}
	}
	os.Remove(f.Name()) // the open file stays readable; nothing is left behind
	sb := &spooledBody{file: f}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return nil, &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err}
	}
	m, err := io.Copy(f, body)
	if err != nil {
		f.Close()
		var pe *os.PathError
		if errors.As(err, &pe) { // the write side failed: disk full, I/O error
			return nil, &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err}
		}
		return nil, bodyError(r, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, &httpError{status: http.StatusInternalServerError, msg: "cannot buffer request body", err: err}
	}
	sb.Reader, sb.n = f, n+m
	return sb, nil
}

// bodyError classifies an error reading the client's body.
func bodyError(r *http.Request, err error) *httpError {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: "request body too large", err: err}
	case r.Context().Err() != nil:
		return &httpError{status: StatusClientClosed, msg: "client closed request", err: err}
	}
	return &httpError{status: http.StatusBadRequest, msg: "cannot read request body", err: err}
}
