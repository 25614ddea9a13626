package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"unicode/utf8"

	"realroot/proxy/admin"
	"realroot/resolve"
)

const releasesUsage = `Usage: realroot releases [--link PATH] [--admin ADDR] [--prune [--keep N] [--dry-run]]

Lists the releases: the directories beside the link's target (for
current -> releases/B, every directory in releases/), oldest first (by
number when every name is one, else by mtime), each with its state as the
running server reports it: current, draining (N requests in flight), drained,
or never served (by this server since it started).

  --link PATH     the symlink (REALROOT_LINK); default: ./current
  --admin ADDR    the server's admin address (REALROOT_ADMIN), e.g.
                  127.0.0.1:9180; without it states are unknown
  --prune         delete old releases, oldest first, keeping the --keep
                  newest; never the link's target, the server's current
                  release or one with requests in flight. Refused when the
                  server cannot be asked.
  --keep N        how many of the newest releases --prune keeps (default 5)
  --dry-run       with --prune: print what would be deleted, delete nothing
`

// listReleases is `realroot releases`.
func listReleases(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
	flags := flag.NewFlagSet("releases", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	link := flags.String("link", cmp.Or(getenv("REALROOT_LINK"), "current"), "")
	adminAddr := flags.String("admin", getenv("REALROOT_ADMIN"), "")
	prune := flags.Bool("prune", false, "")
	keep := flags.Int("keep", 5, "")
	dryRun := flags.Bool("dry-run", false, "")
	pos, err := parseArgs(flags, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, releasesUsage)
		return nil
	}
	if err != nil {
		return &usageError{fmt.Errorf("releases: %w", err)}
	}
	if len(pos) > 0 {
		return &usageError{fmt.Errorf("releases: unexpected arguments %q", pos)}
	}
	if *keep < 1 {
		return &usageError{fmt.Errorf("releases: --keep %d: keep at least 1", *keep)}
	}
	if *prune && *adminAddr == "" {
		return &usageError{errors.New("releases: --prune needs --admin ADDR (or REALROOT_ADMIN): only the server knows which releases have requests in flight")}
	}

	l, err := resolve.ListReleases(*link)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(sigs)
	defer stop()
	var st *admin.Status
	if *adminAddr != "" {
		base, err := adminBase(*adminAddr)
		if err != nil {
			return &usageError{fmt.Errorf("releases: %w", err)}
		}
		s, err := fetchStatus(ctx, base)
		switch {
		case err != nil && *prune:
			return fmt.Errorf("releases: cannot ask the server; not pruning: %w", err)
		case err != nil:
			fmt.Fprintf(stderr, "realroot: releases: %v; states unknown\n", err)
		case !inRelease(s.Current, l.Dir):
			err := fmt.Errorf("releases: the server at %s serves %s, which is not in %s: is it the server of %s?", *adminAddr, s.Current.Root, l.Dir, l.Link)
			if *prune {
				return fmt.Errorf("%w; not pruning", err)
			}
			fmt.Fprintf(stderr, "realroot: %v\n", err)
		default:
			st = &s
		}
	}
	printReleases(stdout, l, st)
	if !*prune {
		return nil
	}

	busy := func(r resolve.ReleaseDir) bool {
		state, _ := releaseState(r, st)
		return state == "current" || state == "draining"
	}
	for _, r := range l.Releases {
		if !utf8.ValidString(r.Name) {
			// /status (JSON) cannot name it exactly: its state is unknown.
			return fmt.Errorf("releases: %q is not a UTF-8 name, which the server's status cannot report exactly; not pruning", r.Name)
		}
	}
	doomed := l.Prunable(*keep, busy)
	var errs []error
	for _, r := range doomed {
		if *dryRun {
			fmt.Fprintf(stdout, "would remove %s\n", r.Path)
			continue
		}
		if err := l.Remove(r); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "removed %s\n", r.Path)
	}
	if len(doomed) == 0 {
		fmt.Fprintf(stdout, "nothing to remove: %d releases, keeping %d\n", len(l.Releases), *keep)
	}
	return errors.Join(errs...)
}

// printReleases prints l as a table, with the states st reports (nil:
// unknown).
func printReleases(w io.Writer, l *resolve.ReleaseList, st *admin.Status) {
	target, _ := os.Readlink(l.Link)
	fmt.Fprintf(w, "%s -> %s\n", l.Link, target)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tSTATE\tMODIFIED\tLINK")
	for _, r := range l.Releases {
		state, n := releaseState(r, st)
		switch {
		case st == nil:
			state = "unknown"
		case n > 0:
			state = fmt.Sprintf("%s, %d in flight", state, n)
		}
		mark := ""
		if r.Current {
			mark = filepath.Base(l.Link)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, state, r.ModTime.Format("2006-01-02 15:04:05"), mark)
	}
	tw.Flush()
}

// releaseState returns what the server says of r: current, draining,
// drained or never served, and the requests in flight on it. st nil: "".
func releaseState(r resolve.ReleaseDir, st *admin.Status) (string, int64) {
	if st == nil {
		return "", 0
	}
	if inRelease(st.Current, r.Path) {
		return "current", st.Current.InFlight
	}
	var n int64
	draining := false
	for _, d := range st.Draining {
		if inRelease(d, r.Path) {
			n += d.InFlight
			draining = true
		}
	}
	if draining {
		return "draining", n
	}
	for _, d := range st.Drained {
		if inRelease(d, r.Path) {
			return "drained", 0
		}
	}
	return "never served", 0
}
