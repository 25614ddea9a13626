package fcgi

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestPutHeader(t *testing.T) {
	tests := []struct {
		name                string
		typ                 byte
		id                  uint16
		contentLen, padding int
		want                []byte
	}{
		{"empty params", typeParams, 1, 0, 0, []byte{1, 4, 0, 1, 0, 0, 0, 0}},
		{"stdin max", typeStdin, 1, 65535, 0, []byte{1, 5, 0, 1, 0xff, 0xff, 0, 0}},
		{"stdout padded", typeStdout, 0x1234, 0x0102, 6, []byte{1, 6, 0x12, 0x34, 1, 2, 6, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendHeader(nil, tt.typ, tt.id, tt.contentLen, tt.padding)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got % x; want % x", got, tt.want)
			}
			h, ok := parseHeader(got)
			want := recordHeader{tt.typ, tt.id, tt.contentLen, tt.padding}
			if !ok || h != want {
				t.Errorf("parseHeader = %+v, %v; want %+v, true", h, ok, want)
			}
		})
	}
	if _, ok := parseHeader([]byte("HTTP/1.1")); ok {
		t.Errorf("parseHeader(HTTP/1.1) ok; want a bad version")
	}
}

func TestAppendBeginRequest(t *testing.T) {
	tests := []struct {
		name  string
		flags byte
		want  []byte
	}{
		{"close", 0, []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"keep conn", flagKeepConn, []byte{1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendBeginRequest(nil, requestID, roleResponder, tt.flags)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got % x; want % x", got, tt.want)
			}
		})
	}
}

func TestAppendPair(t *testing.T) {
	tests := []struct {
		name, pname, value string
		wantPrefix         []byte // lengths
	}{
		{"empty", "", "", []byte{0, 0}},
		{"short", "A", "bc", []byte{1, 2}},
		{"127", "N", strings.Repeat("v", 127), []byte{1, 127}},
		{"128 value", "N", strings.Repeat("v", 128), []byte{1, 0x80, 0, 0, 0x80}},
		{"128 name", strings.Repeat("n", 128), "v", []byte{0x80, 0, 0, 0x80, 1}},
		{"both long", strings.Repeat("n", 300), strings.Repeat("v", 0x012345),
			[]byte{0x80, 0, 0x01, 0x2c, 0x80, 0x01, 0x23, 0x45}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendPair(nil, tt.pname, tt.value)
			want := append(append([]byte(nil), tt.wantPrefix...), tt.pname+tt.value...)
			if !bytes.Equal(got, want) {
				t.Errorf("got % x; want % x", got[:min(len(got), 16)], want[:min(len(want), 16)])
			}
			if n := pairLen(tt.pname, tt.value); n != len(want) {
				t.Errorf("pairLen = %d; want %d", n, len(want))
			}
		})
	}
}

type pair struct{ name, value string }

func TestParamsEncoder(t *testing.T) {
	// A pair filling a record exactly: 4+4 length bytes.
	full := pair{strings.Repeat("N", 1000), strings.Repeat("v", maxContent-1000-8)}
	big := pair{"BIG", strings.Repeat("x", 40000)} // 1+4+3+40000 bytes
	rec := func(content ...[]byte) []byte {
		c := bytes.Join(content, nil)
		return append(appendHeader(nil, typeParams, 1, len(c), 0), c...)
	}
	pairBytes := func(p pair) []byte { return appendPair(nil, p.name, p.value) }
	tests := []struct {
		name  string
		pairs []pair
		want  []byte
	}{
		{"none", nil, []byte{1, 4, 0, 1, 0, 0, 0, 0}},
		{"one", []pair{{"A", "b"}}, []byte{
			1, 4, 0, 1, 0, 4, 0, 0, 1, 1, 'A', 'b',
			1, 4, 0, 1, 0, 0, 0, 0}},
		{"two", []pair{{"A", "b"}, {"SCRIPT", "/x.php"}}, []byte{
			1, 4, 0, 1, 0, 18, 0, 0, 1, 1, 'A', 'b', 6, 6, 'S', 'C', 'R', 'I', 'P', 'T', '/', 'x', '.', 'p', 'h', 'p',
			1, 4, 0, 1, 0, 0, 0, 0}},
		{"exactly one record", []pair{full},
			append(rec(pairBytes(full)), 1, 4, 0, 1, 0, 0, 0, 0)},
		{"split over records", []pair{big, {"A", "b"}, big},
			append(append(rec(pairBytes(big), pairBytes(pair{"A", "b"})), rec(pairBytes(big))...), 1, 4, 0, 1, 0, 0, 0, 0)},
		{"full then small", []pair{full, {"A", "b"}},
			append(append(rec(pairBytes(full)), rec(pairBytes(pair{"A", "b"}))...), 1, 4, 0, 1, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newParamsEncoder([]byte("prefix"), 1)
			for _, p := range tt.pairs {
				if err := e.add(p.name, p.value); err != nil {
					t.Fatalf("add(%.10q): %v", p.name, err)
				}
			}
			got := e.finish()
			want := append([]byte("prefix"), tt.want...)
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes; want %d bytes, equal to:\n% x", len(got), len(want), want[:min(len(want), 64)])
			}
		})
	}
}

func TestAppendParams(t *testing.T) {
	params := map[string]string{}
	for i := range 200 {
		params["P"+strconv.Itoa(i)] = strings.Repeat("v", i*10)
	}
	b, err := appendParams(nil, 1, params)
	if err != nil {
		t.Fatal(err)
	}
	// Every record but the last is non-empty and within bounds; the pair
	// stream decodes back to params.
	var raw []byte
	records := 0
	for r := bytes.NewReader(b); r.Len() > 0; records++ {
		rec, err := readRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if rec.typ != typeParams || rec.id != 1 {
			t.Fatalf("record %d: type %d id %d; want %d, 1", records, rec.typ, rec.id, typeParams)
		}
		if len(rec.content) == 0 && r.Len() > 0 {
			t.Fatalf("record %d: empty before the end", records)
		}
		// Each record holds whole pairs (php-fpm parses records alone).
		if _, err := parsePairs(rec.content); err != nil {
			t.Fatalf("record %d: %v", records, err)
		}
		raw = append(raw, rec.content...)
	}
	if records < 3 {
		t.Errorf("got %d records; want the params split over several", records)
	}
	got, err := parsePairs(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(params) {
		t.Fatalf("got %d params; want %d", len(got), len(params))
	}
	for k, v := range params {
		if got[k] != v {
			t.Errorf("%s: got %d bytes; want %d", k, len(got[k]), len(v))
		}
	}
}

func TestAppendParamsTooLong(t *testing.T) {
	_, err := appendParams([]byte("x"), 1, map[string]string{"HUGE": strings.Repeat("v", maxContent)})
	if !errors.Is(err, ErrParamTooLong) {
		t.Errorf("got %v; want ErrParamTooLong", err)
	}
}

// typicalParams is what a proxy sends for a GET with a few headers.
func typicalParams() map[string]string {
	return map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "realroot",
		"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.com", "SERVER_ADDR": "127.0.0.1",
		"SERVER_PORT": "443", "REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "51234",
		"REQUEST_METHOD": "GET", "REQUEST_SCHEME": "https", "HTTPS": "on",
		"REQUEST_URI":     "/index.php/blog/2024/hello?utm_source=x&page=2",
		"DOCUMENT_URI":    "/index.php/blog/2024/hello",
		"SCRIPT_NAME":     "/index.php",
		"SCRIPT_FILENAME": "/srv/www/releases/20240101120000/public/index.php",
		"DOCUMENT_ROOT":   "/srv/www/releases/20240101120000/public",
		"PATH_INFO":       "/blog/2024/hello", "QUERY_STRING": "utm_source=x&page=2",
		"CONTENT_TYPE": "", "CONTENT_LENGTH": "",
		"HTTP_HOST":            "example.com",
		"HTTP_USER_AGENT":      "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"HTTP_ACCEPT":          "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.5", "HTTP_ACCEPT_ENCODING": "gzip, deflate, br, zstd",
		"HTTP_COOKIE":          "session=" + strings.Repeat("a1b2c3d4", 16) + "; theme=dark",
		"HTTP_REFERER":         "https://example.com/blog",
		"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https",
		"HTTP_CONNECTION": "keep-alive", "HTTP_SEC_FETCH_MODE": "navigate",
		"REDIRECT_STATUS": "200",
	}
}

func BenchmarkEncodeParams(b *testing.B) {
	params := typicalParams()
	b.ReportAllocs()
	buf := make([]byte, 0, 8<<10)
	for b.Loop() {
		var err error
		buf, err = appendParams(buf[:0], 1, params)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
