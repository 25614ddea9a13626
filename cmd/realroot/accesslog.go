package main

import (
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// lineEncoder is a zapcore.Encoder that writes proxy's access log entries
// (message "request", fields remote_addr, method, uri, proto, status, bytes,
// duration, upstream_duration, release, request_id, user_agent, referer) as
// one line of the combined log format or of LTSV, so that proxy logs through
// zap whatever the format.
//
// combined is nginx's (and Apache's) format, nginx's escaping:
//
//	127.0.0.1 - - [21/Nov/2026:12:00:00 +0100] "GET /a?b HTTP/1.1" 200 512 "-" "curl/8.5.0"
//
// LTSV (ltsv.org) uses its usual labels, durations in seconds with
// millisecond precision like nginx's $request_time, apptime "-" when php-fpm
// was not involved:
//
//	time:[21/Nov/2026:12:00:00 +0100]<TAB>host:127.0.0.1<TAB>method:GET<TAB>uri:/a?b<TAB>protocol:HTTP/1.1<TAB>
//	status:200<TAB>size:512<TAB>reqtime:0.012<TAB>apptime:0.010<TAB>referer:-<TAB>ua:curl/8.5.0<TAB>
//	release:/srv/app/releases/3/public<TAB>request_id:6f1c...-1
//
// An empty or missing value is "-". Bytes below 0x20, above 0x7e, '"' and
// '\' are written as \xHH, as nginx does; a line never holds a raw tab or
// newline.
type lineEncoder struct {
	*zapcore.MapObjectEncoder // fields added with Logger.With
	ltsv                      bool
}

// newLineEncoder returns the encoder of format "combined" or "ltsv".
func newLineEncoder(format string) zapcore.Encoder {
	return &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder(), ltsv: format == "ltsv"}
}

var (
	linePool = buffer.NewPool()
	mapPool  = sync.Pool{New: func() any { return zapcore.NewMapObjectEncoder() }}
)

// The fields a line shows, by index in an entry's lineFields.
const (
	fRemoteAddr = iota
	fMethod
	fURI
	fProto
	fStatus
	fBytes
	fDuration
	fUpstream
	fReferer
	fUserAgent
	fRelease
	fRequestID
	numLineFields
)

// lineKeys are the field keys of the fields a line shows.
var lineKeys = [numLineFields]string{
	"remote_addr", "method", "uri", "proto", "status", "bytes",
	"duration", "upstream_duration", "referer", "user_agent", "release", "request_id",
}

// lineFields are an entry's fields by index: a missing one has UnknownType.
// The fields are read as they are, without going through a
// MapObjectEncoder, whose map boxes every value: no allocation per line.
type lineFields [numLineFields]zapcore.Field

// Clone copies the encoder and its fields.
func (e *lineEncoder) Clone() zapcore.Encoder {
	c := &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder(), ltsv: e.ltsv}
	for k, v := range e.Fields {
		c.Fields[k] = v
	}
	return c
}

// EncodeEntry writes one line.
func (e *lineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	var f lineFields
	for _, fd := range fields {
		for i, k := range lineKeys {
			if fd.Key == k {
				f[i] = fd
				break
			}
		}
	}
	b := linePool.Get()
	if e.ltsv {
		b.AppendString("time:[")
		b.AppendTime(ent.Time, clfTime)
		b.AppendString("]\thost:")
		e.appendField(b, &f, fRemoteAddr)
		for _, l := range []struct {
			label string
			i     int
		}{
			{"method", fMethod}, {"uri", fURI}, {"protocol", fProto}, {"status", fStatus}, {"size", fBytes},
		} {
			b.AppendString("\t" + l.label + ":")
			e.appendField(b, &f, l.i)
		}
		b.AppendString("\treqtime:")
		e.appendSeconds(b, &f, fDuration)
		b.AppendString("\tapptime:")
		e.appendSeconds(b, &f, fUpstream)
		for _, l := range []struct {
			label string
			i     int
		}{
			{"referer", fReferer}, {"ua", fUserAgent}, {"release", fRelease}, {"request_id", fRequestID},
		} {
			b.AppendString("\t" + l.label + ":")
			e.appendField(b, &f, l.i)
		}
	} else {
		e.appendField(b, &f, fRemoteAddr)
		b.AppendString(" - - [")
		b.AppendTime(ent.Time, clfTime)
		b.AppendString(`] "`)
		e.appendField(b, &f, fMethod)
		b.AppendByte(' ')
		e.appendField(b, &f, fURI)
		b.AppendByte(' ')
		e.appendField(b, &f, fProto)
		b.AppendString(`" `)
		e.appendField(b, &f, fStatus)
		b.AppendByte(' ')
		e.appendField(b, &f, fBytes)
		b.AppendString(` "`)
		e.appendField(b, &f, fReferer)
		b.AppendString(`" "`)
		e.appendField(b, &f, fUserAgent)
		b.AppendByte('"')
	}
	b.AppendByte('\n')
	return b, nil
}

// appendField writes field i of f, escaped, or "-" when it is empty or
// missing; a missing field is looked for in the encoder's own (With).
// remote_addr is written without its port.
func (e *lineEncoder) appendField(b *buffer.Buffer, f *lineFields, i int) {
	fd := &f[i]
	var s string
	switch fd.Type {
	case zapcore.StringType:
		s = fd.String
	case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type:
		b.AppendInt(fd.Integer)
		return
	case zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type:
		b.AppendUint(uint64(fd.Integer))
		return
	case zapcore.UnknownType: // not in the entry
		s = text(e.Fields[lineKeys[i]])
	default:
		m := mapPool.Get().(*zapcore.MapObjectEncoder)
		fd.AddTo(m)
		s = text(m.Fields[fd.Key])
		clear(m.Fields)
		mapPool.Put(m)
	}
	if i == fRemoteAddr {
		s = host(s)
	}
	appendEscaped(b, s)
}

// appendSeconds writes duration field i of f in seconds with 3 decimals,
// "-" when zero or missing.
func (e *lineEncoder) appendSeconds(b *buffer.Buffer, f *lineFields, i int) {
	var d time.Duration
	switch fd := &f[i]; fd.Type {
	case zapcore.DurationType:
		d = time.Duration(fd.Integer)
	case zapcore.UnknownType:
		d, _ = e.Fields[lineKeys[i]].(time.Duration)
	}
	if d <= 0 {
		b.AppendByte('-')
		return
	}
	var scratch [24]byte
	b.Write(strconv.AppendFloat(scratch[:0], d.Seconds(), 'f', 3, 64))
}

// clfTime is the Common Log Format's time, nginx's $time_local.
const clfTime = "02/Jan/2006:15:04:05 -0700"

// text formats a field's value; "" when missing.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case int:
		return strconv.Itoa(x)
	case time.Duration:
		return x.String()
	case nil:
		return ""
	}
	return "?"
}

// host is an address without its port.
func host(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// appendEscaped writes s with nginx's escaping, or "-" when s is empty.
func appendEscaped(b *buffer.Buffer, s string) {
	if s == "" {
		b.AppendByte('-')
		return
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b.AppendString(`\x`)
			b.AppendByte(hex[c>>4])
			b.AppendByte(hex[c&0xf])
			continue
		}
		b.AppendByte(c)
	}
}
