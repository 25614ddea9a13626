package conf

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the settings table of docs/configuration.md")

const (
	docPath  = "../docs/configuration.md"
	docBegin = "<!-- settings table: generated from conf.FlagSet by go test ./conf -update; do not edit -->\n"
	docEnd   = "<!-- end of settings table -->\n"
)

// settingsTable is the Markdown table of every flag: key and flag, the
// environment variable, the default and the meaning.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| Key and flag | Environment | Default | Meaning |\n")
	b.WriteString("|---|---|---|---|\n")
	def := Default()
	FlagSet(&def).VisitAll(func(f *flag.Flag) {
		key := "`" + f.Name + "`"
		if f.Name == "config" {
			key = "`--config` (flag and environment only)"
		} else {
			key += " `--" + f.Name + "`"
		}
		dflt := "none"
		if f.DefValue != "" {
			dflt = "`" + f.DefValue + "`"
		}
		_, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", key, EnvName(f.Name), dflt, strings.ReplaceAll(usage, "|", `\|`))
	})
	return b.String()
}

// TestConfigurationDoc keeps docs/configuration.md's table equal to the
// flags: every flag is a row with its environment variable and default, and
// every row is a flag. Run go test ./conf -update after changing a flag.
func TestConfigurationDoc(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", docPath, docBegin, docEnd)
	}
	got, want := doc[i+len(docBegin):j], settingsTable()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(doc[:i+len(docBegin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gotRows, wantRows := strings.Split(got, "\n"), strings.Split(want, "\n")
	for _, r := range wantRows {
		if !strings.Contains(got, r) {
			t.Errorf("%s lacks the row\n%s", docPath, r)
		}
	}
	for _, r := range gotRows {
		if !strings.Contains(want, r) {
			t.Errorf("%s has a row that is no flag (or is stale):\n%s", docPath, r)
		}
	}
	t.Errorf("%s's settings table differs from the flags; run go test ./conf -update", docPath)
}
