package conf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// fileKeys is the config file's shape: a struct with one field per flag but
// config, tagged with the flag's name and typed any, so that the decoder's
// DisallowUnknownFields rejects every other key with its line, and every
// value then goes through its flag's own parser: the file, the environment
// and the command line accept the same spellings ("90s", "32m").
var fileKeys = sync.OnceValues(func() (reflect.Type, []string) {
	var fields []reflect.StructField
	var names []string
	FlagSet(new(Config)).VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		fields = append(fields, reflect.StructField{
			Name: "F" + strconv.Itoa(len(fields)),
			Type: reflect.TypeFor[any](),
			Tag:  reflect.StructTag(`toml:"` + f.Name + `"`),
		})
		names = append(names, f.Name)
	})
	return reflect.StructOf(fields), names
})

// loadFile sets c's settings from the TOML file at path.
func loadFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err // names the path: open /etc/realroot.toml: no such file or directory
	}
	typ, names := fileKeys()
	// The decoder matches keys regardless of case (ROOT would set root);
	// a key must be spelled as its flag.
	lines := keyLines(data)
	var unknown []error
	for _, k := range slices.SortedFunc(maps.Keys(lines), func(a, b string) int { return lines[a] - lines[b] }) {
		if !slices.Contains(names, k) {
			unknown = append(unknown, fmt.Errorf("config %s:%d: unknown key %q (keys are spelled like the flags, in lower case)", path, lines[k], k))
		}
	}
	if len(unknown) > 0 {
		return errors.Join(unknown...)
	}
	v := reflect.New(typ)
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Interface()); err != nil {
		return fileError(path, err)
	}
	fs := FlagSet(c)
	var errs []error
	for i, name := range names {
		val := v.Elem().Field(i).Interface()
		if val == nil {
			continue
		}
		if err := setTOML(fs.Lookup(name).Value, val); err != nil {
			errs = append(errs, fmt.Errorf("config %s:%d: %s: %w", path, lines[name], name, err))
		}
	}
	return errors.Join(errs...)
}

// fileError words a decoding error with the file, the line and the key.
func fileError(path string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, len(strict.Errors))
		for i, e := range strict.Errors {
			line, _ := e.Position()
			errs[i] = fmt.Errorf("config %s:%d: unknown key %q", path, line, strings.Join(e.Key(), "."))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return fmt.Errorf("config %s:%d:%d: %s", path, line, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return fmt.Errorf("config %s: %w", path, err)
}

// setTOML sets a flag from a decoded TOML value: a scalar, an array for a
// list flag, or a table for param.
func setTOML(fv flag.Value, v any) error {
	lf, isList := fv.(listFlag)
	switch x := v.(type) {
	case map[string]any:
		if _, ok := fv.(*params); !ok {
			return errors.New("is a table; want a value")
		}
		if len(x) == 0 {
			lf.reset()
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			s, err := tomlScalar(x[k])
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if err := fv.Set(k + "=" + s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if !isList {
			return errors.New("is an array; want one value")
		}
		if len(x) == 0 {
			lf.reset()
		}
		for _, e := range x {
			s, err := tomlScalar(e)
			if err != nil {
				return err
			}
			if err := fv.Set(s); err != nil {
				return err
			}
		}
		return nil
	}
	s, err := tomlScalar(v)
	if err != nil {
		return err
	}
	return fv.Set(s)
}

func tomlScalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case []any, map[string]any:
		return "", errors.New("holds an array or a table; want strings, numbers or booleans")
	}
	return "", fmt.Errorf("%v is a date or a time; want a string, a number or a boolean", v)
}

// keyLines maps each top-level key (the first part of a dotted key, or a
// table's name) to the line where it first appears.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTable = true
		case unstable.KeyValue:
			if inTable {
				continue
			}
		default:
			continue
		}
		it := e.Key()
		if !it.Next() {
			continue
		}
		k := it.Node()
		if _, ok := lines[string(k.Data)]; !ok {
			lines[string(k.Data)] = p.Shape(k.Raw).Start.Line
		}
	}
	return lines
}
