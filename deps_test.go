package realroot_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries keeps the four rooms apart: conf, resolve,
// proxy/fcgi and proxy/h1 import nothing of ours, resolve speaks no HTTP, proxy imports
// resolve but never conf, and only cmd/realroot knows every package.
func TestImportBoundaries(t *testing.T) {
	tests := []struct {
		pkg    string
		forbid []string // never among its dependencies, direct or not
		direct []string // never imported by the package itself
	}{
		{pkg: "realroot/conf", forbid: []string{"realroot/resolve", "realroot/proxy", "realroot/cmd"}},
		{pkg: "realroot/resolve", forbid: []string{"realroot/conf", "realroot/proxy", "realroot/cmd"}, direct: []string{"net/http"}},
		{pkg: "realroot/proxy/fcgi", forbid: []string{"realroot/conf", "realroot/resolve", "realroot/cmd"}},
		{pkg: "realroot/proxy", forbid: []string{"realroot/conf", "realroot/cmd", "realroot/internal"}},
		{pkg: "realroot/proxy/admin", forbid: []string{"realroot/conf", "realroot/cmd", "realroot/internal"}},
		// The HTTP/1.1 server serves any http.Handler: nothing of ours.
		{pkg: "realroot/proxy/h1", forbid: []string{"realroot/conf", "realroot/resolve", "realroot/proxy", "realroot/cmd", "realroot/internal"}},
	}
	for _, tt := range tests {
		deps := goList(t, "{{join .Deps \"\\n\"}}", tt.pkg)
		imports := goList(t, "{{join .Imports \"\\n\"}}", tt.pkg)
		for _, dep := range deps {
			for _, f := range tt.forbid {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s; it must not", tt.pkg, dep)
				}
			}
		}
		for _, imp := range imports {
			for _, f := range tt.direct {
				if imp == f || strings.HasPrefix(imp, f+"/") {
					t.Errorf("%s imports %s; it must not", tt.pkg, imp)
				}
			}
		}
		if tt.pkg == "realroot/proxy/fcgi" {
			for _, dep := range deps {
				if dep == "realroot/proxy" {
					t.Errorf("proxy/fcgi depends on proxy; it must not")
				}
			}
		}
	}
}

func goList(t *testing.T, format, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", format, pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}
