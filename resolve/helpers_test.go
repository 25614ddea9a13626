package resolve

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// mkdir creates every directory, with parents.
func mkdir(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// writeFile creates name with content, and its parents.
func writeFile(t testing.TB, name, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(name))
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// symlink makes link point to target.
func symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// flipAtomic points link at target the way `ln -s target tmp && mv -T tmp
// link` does: one rename(2).
func flipAtomic(t testing.TB, target, link string) {
	t.Helper()
	tmp := link + ".tmp"
	symlink(t, target, tmp)
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// realpath returns the realpath of p, which the test expects to exist.
func realpath(t testing.TB, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A deployment is the usual layout: app/releases/{A,B}/public, app/shared,
// and app/current -> releases/A.
type deployment struct {
	app     string // <tmp>/app
	current string // <tmp>/app/current
	root    string // <tmp>/app/current/public: the configured root
	a, b    string // realpaths of releases/A/public and releases/B/public
}

func newDeployment(t testing.TB) deployment {
	t.Helper()
	tmp := realpath(t, t.TempDir())
	app := filepath.Join(tmp, "app")
	mkdir(t,
		filepath.Join(app, "releases", "A", "public"),
		filepath.Join(app, "releases", "B", "public"),
		filepath.Join(app, "shared"))
	current := filepath.Join(app, "current")
	symlink(t, "releases/A", current)
	return deployment{
		app:     app,
		current: current,
		root:    filepath.Join(current, "public"),
		a:       filepath.Join(app, "releases", "A", "public"),
		b:       filepath.Join(app, "releases", "B", "public"),
	}
}

// observed returns a logger that records every entry.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// isClosed reports whether c is closed, without waiting.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
