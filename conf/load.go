package conf

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Load returns the configuration from the defaults, then the config file
// (--config in args, else REALROOT_CONFIG), then the environment (getenv,
// e.g. os.Getenv), then the flags in args. It returns the arguments left
// after the flags (those after "--" included). It does not validate.
//
// -h or --help in args returns flag.ErrHelp. Errors name the file and line,
// the environment variable or the flag.
func Load(args []string, getenv func(string) string) (Config, []string, error) {
	// A first pass over the flags finds --config and reports flag errors
	// before anything is read.
	var probe Config
	pfs := FlagSet(&probe)
	pfs.SetOutput(io.Discard)
	if err := pfs.Parse(args); err != nil {
		return Config{}, nil, err
	}
	path := probe.File
	if path == "" {
		path = getenv(EnvName("config"))
	}

	c := Default()
	if path != "" {
		c.File = path
		if err := loadFile(&c, path); err != nil {
			return c, nil, err
		}
	}
	if err := loadEnv(&c, getenv); err != nil {
		return c, nil, err
	}
	fs := FlagSet(&c)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	return c, fs.Args(), nil
}

// loadEnv sets every setting whose REALROOT_* variable is not empty.
func loadEnv(c *Config, getenv func(string) string) error {
	var errs []error
	FlagSet(c).VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if lv, ok := f.Value.(listFlag); ok {
			for _, item := range strings.Split(v, lv.sep()) {
				if item = strings.TrimSpace(item); item == "" {
					continue
				}
				if err := lv.Set(item); err != nil {
					errs = append(errs, fmt.Errorf("environment %s: %w", name, err))
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}
