package h1

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// diffHandler behaves by path, to compare h1 with net/http's server.
var diffHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for _, kv := range q["h"] {
		k, v, _ := strings.Cut(kv, ":")
		w.Header().Add(k, v)
	}
	if q.Has("read") {
		io.ReadAll(r.Body)
	}
	if s := q.Get("status"); s != "" {
		code, _ := strconv.Atoi(s)
		w.WriteHeader(code)
	}
	n, _ := strconv.Atoi(q.Get("n"))
	body := q.Get("body")
	for range max(n, 1) {
		io.WriteString(w, body)
	}
	if q.Has("flush") {
		w.(http.Flusher).Flush()
		io.WriteString(w, "after")
	}
	fmt.Fprintf(w, "|%s %s %q %d", r.Method, r.Host, r.RequestURI, r.ContentLength)
})

var diffRequests = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?body=<html>hi HTTP/1.1\r\nHost: a:80\r\n\r\n",
	"GET /x?body=abc&h=Content-Type:text/x&h=X-A:1&h=X-A:2 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?body=0123456789&n=1000 HTTP/1.1\r\nHost: a\r\n\r\n",                       // chunked in both
	"GET /x?body=<html>" + strings.Repeat("x", 5000) + " HTTP/1.1\r\nHost: a\r\n\r\n", // one write, too big to hold
	"GET /x?body=x&flush=1 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?status=204 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?status=304&h=Content-Type:text/x&h=Etag:\"1\" HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?status=404&body=nope HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?status=299 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?status=103&h=Link:</a> HTTP/1.1\r\nHost: a\r\n\r\n",
	"HEAD /x?body=abc HTTP/1.1\r\nHost: a\r\n\r\n",
	"HEAD /x?body=abc&h=Content-Length:3 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?h=Content-Length:2&body=ab HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?h=Transfer-Encoding:identity&body=ab HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?h=Transfer-Encoding:chunked&body=ab HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?h=Transfer-Encoding:chunked&body=ab HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /x?h=Content-Encoding:gzip&body=ab HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /x?h=Connection:close HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /?body=0123456789&n=1000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET http://b/p?q HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /?read=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST /?read=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /?read=1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
}

// TestDifferential sends the same bytes, twice on one connection (then a
// request that closes it), to h1
// and net/http with the same handler, and compares statuses, bodies, and
// headers but Date.
func TestDifferential(t *testing.T) {
	h1addr, _ := startH1(t, diffHandler)
	stdaddr := startStd(t, diffHandler)
	reqs := slices.Clone(diffRequests)
	for _, br := range badRequests {
		switch br.name {
		case "PRI":
			continue // known differences, see TestKnownDifferences
		}
		reqs = append(reqs, br.give)
	}
	const last = "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	for _, raw := range reqs {
		method, _, _ := strings.Cut(strings.TrimLeft(raw, "\r\n"), " ")
		got := summarize(rawRoundTrip(t, h1addr, raw+raw+last), method)
		want := summarize(rawRoundTrip(t, stdaddr, raw+raw+last), method)
		if got != want {
			t.Errorf("%q:\nh1:       %s\nnet/http: %s", raw, got, want)
		}
	}
}

// knownHandler is diffHandler and the handlers of TestKnownDifferences.
var knownHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/late": // a header map kept and changed after WriteHeader
		h := w.Header()
		w.WriteHeader(http.StatusOK)
		h.Set("X-Late", "1")
	case "/hijack":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotImplemented)
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		conn.Close()
	case "/server":
		if r.Context().Value(http.ServerContextKey) == nil {
			http.Error(w, "no ServerContextKey", http.StatusInternalServerError)
		}
	case "/readfrom": // a declared length short of what ReadFrom is given
		w.Header().Set("Content-Length", "520")
		w.(io.ReaderFrom).ReadFrom(strings.NewReader(strings.Repeat("x", 1000)))
	case "/maxbytes":
		_, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 3))
		http.Error(w, fmt.Sprint(err), http.StatusRequestEntityTooLarge)
	default:
		diffHandler(w, r)
	}
})

// TestKnownDifferences pins where h1 differs from net/http on purpose, with
// what each answers: should net/http change, the test says so.
func TestKnownDifferences(t *testing.T) {
	h1addr, _ := startH1(t, knownHandler)
	stdaddr := startStd(t, knownHandler)
	for _, tt := range []struct{ name, give, wantH1, wantStd string }{
		// An empty Host cannot be told from none after http.ReadRequest.
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n",
			"400 Bad Request: missing required Host header", "200 OK cl=11 te=[] close=false"},
		// No HTTP/2 upgrade.
		{"PRI", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			"505 HTTP Version Not Supported: unsupported protocol version", "200 OK cl=12 te=[] close=true"},
		// RFC 9112 section 3.2.2: with an absolute-form target the Host
		// field is ignored (http.ReadRequest does not keep it to check).
		{"absolute with bad host", "GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n",
			"200 OK cl=20 te=[] close=false", "400 Bad Request: malformed Host header"},
		// No trailers: a declared Trailer does not force chunking.
		{"trailer", "GET /?h=Trailer:X HTTP/1.1\r\nHost: a\r\n\r\n",
			"200 OK cl=24 te=[] close=false", "200 OK cl=-1 te=[chunked] close=false"},
		// An invalid Content-Length from the handler is dropped, then the
		// whole body's length is sent (net/http sends chunked).
		{"invalid content-length", "GET /?h=Content-Length:x HTTP/1.1\r\nHost: a\r\n\r\n",
			"200 OK cl=31 te=[] close=false", "200 OK cl=-1 te=[chunked] close=false"},
		// The header map is not copied at WriteHeader: changes through a
		// map kept from before are sent until the header goes out (all
		// but Content-Length, see TestContentLengthChangedAfterWriteHeader).
		{"header kept past WriteHeader", "GET /late HTTP/1.1\r\nHost: a\r\n\r\n",
			"200 OK cl=0 te=[] close=false X-Late=1", "200 OK cl=0 te=[] close=false"},
		// The Content-Length sent is the framing value, as a number: the
		// handler's "+35" is sent as it is by net/http, which clients
		// (Go's among them) refuse.
		{"signed content-length", "GET /?h=Content-Length:%2B35 HTTP/1.1\r\nHost: a\r\n\r\n",
			"200 OK cl=35 te=[] close=false", "no response"},
		// RFC 9112 sections 6.1 and 6.3: after Transfer-Encoding with
		// Content-Length, or Transfer-Encoding in HTTP/1.0, a proxy in
		// front may have framed the body otherwise: the connection closes.
		{"chunked and content-length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			"200 OK cl=14 te=[] close=true", "200 OK cl=14 te=[] close=false"},
		{"1.0 transfer-encoding", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi",
			"200 OK cl=12 te=[] close=true", "200 OK cl=12 te=[] close=false"},
		// 4 KiB of body are held for a Content-Length (net/http: 2 KiB).
		{"held body", "GET /?body=x&n=3000 HTTP/1.1\r\nHost: a\r\n\r\n",
			"200 OK cl=3026 te=[] close=false", "200 OK cl=-1 te=[chunked] close=false"},
		// No Hijack (so no WebSocket), no *http.Server in the context.
		{"hijack", "GET /hijack HTTP/1.1\r\nHost: a\r\n\r\n",
			"feature not supported\n", "200 OK cl=8 te=[] close=true"},
		{"ServerContextKey", "GET /server HTTP/1.1\r\nHost: a\r\n\r\n",
			"no ServerContextKey\n", "200 OK cl=0 te=[] close=false"},
		// http.MaxBytesReader cannot tell h1 its limit was hit: the rest of
		// the body is drained (up to 256 KiB) and the connection kept.
		{"MaxBytesReader", "POST /maxbytes HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
			"413 Request Entity Too Large cl=29 te=[] close=false", "413 Request Entity Too Large cl=29 te=[] close=true"},
		// Exactly 256 KiB of body left unread is drained (net/http: up to
		// 256 KiB less one byte).
		{"drain limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 262144\r\n\r\n" + strings.Repeat("x", 262144),
			"200 OK cl=18 te=[] close=false", "200 OK cl=18 te=[] close=true"},
	} {
		got := [2]string{firstResponse(t, h1addr, tt.give), firstResponse(t, stdaddr, tt.give)}
		if want := [2]string{tt.wantH1, tt.wantStd}; got != want {
			t.Errorf("%s:\nh1:       got %q; want %q\nnet/http: got %q; want %q", tt.name, got[0], want[0], got[1], want[1])
		}
	}

	// ReadFrom past a declared Content-Length: h1 sends the declared bytes,
	// refuses the rest (http.ErrContentLength, as Write) and closes;
	// net/http's ReadFrom sends all its source has past the first 512
	// bytes, which the client reads as the next response.
	const readFrom = "GET /readfrom HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tt := range []struct {
		name, addr string
		wantExcess bool
	}{{"h1", h1addr, false}, {"net/http", stdaddr, true}} {
		c := dial(t, tt.addr)
		c.send(readFrom)
		res, body := c.response("GET")
		rest, _ := c.rest() // both close: written != Content-Length
		if res.ContentLength != 520 || body != strings.Repeat("x", 520) || (len(rest) > 0) != tt.wantExcess {
			t.Errorf("%s: ReadFrom past Content-Length: %d bytes of Content-Length %d, then %d bytes; want 520, 520, excess %v",
				tt.name, len(body), res.ContentLength, len(rest), tt.wantExcess)
		}
	}
}

// firstResponse sends raw to addr and describes the first response: the
// body of an error, else the status, the framing and an X-Late header.
func firstResponse(t *testing.T, addr, raw string) string {
	c := dial(t, addr)
	go c.c.Write([]byte(raw)) // the server may answer before it reads it all
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "no response"
	}
	if res.StatusCode >= 400 && res.StatusCode != http.StatusRequestEntityTooLarge {
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	s := fmt.Sprintf("%s cl=%d te=%v close=%v", res.Status, res.ContentLength, res.TransferEncoding, res.Close)
	if v := res.Header.Get("X-Late"); v != "" {
		s += " X-Late=" + v
	}
	return s
}

// summarize parses every response in raw.
// The first two are answers to method, the last to a GET.
func summarize(raw, method string) string {
	var b strings.Builder
	br := bufio.NewReader(strings.NewReader(raw))
	for i := 0; ; i++ {
		m := method
		if i >= 2 {
			m = "GET"
		}
		res, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				fmt.Fprintf(&b, "unparsed %q", rest)
			}
			return b.String()
		}
		body, err := io.ReadAll(res.Body)
		var keys []string
		for k, vv := range res.Header {
			if k != "Date" {
				keys = append(keys, k+"="+strings.Join(vv, ","))
			}
		}
		slices.Sort(keys)
		fmt.Fprintf(&b, "[%d cl=%d te=%v close=%v %v %q err=%v] ", res.StatusCode, res.ContentLength, res.TransferEncoding, res.Close, keys, body, err)
	}
}
