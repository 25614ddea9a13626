// Package resolve turns a docroot path that contains a symlink (for example
// /srv/app/current/public) into releases: the realpath the path resolves to,
// numbered by generation, refreshed when the symlink changes, and pinned by
// requests so that in-flight counts per release are exact.
//
// Nothing here knows HTTP. A request calls Releases.Pin once at arrival and
// Release.Unpin when its response is complete; everything it touches on disk
// comes from the pinned Release.
//
// # The deploy directory and symlinks inside a release
//
// The deploy directory of a root is the realpath of the directory that holds
// its deploy link: the first symlink met while resolving the root that
// points below its own directory, to a directory that holds the root. For
// /srv/app/current/public with current -> releases/B it is /srv/app, and the
// release directory is /srv/app/releases/B, whatever links come after
// (public -> web inside the release, releases -> /data/releases). A link
// before it whose target is not below its directory, or whose directory is
// /, is an alias of the site (/var/www -> /data/www): its directory holds
// more than the site. With no deploy link the deploy directory is the root
// itself.
//
// Release.Open follows symlinks inside a release only while the file they lead
// to stays below the release's Root, the release directory or the deploy
// directory. So the Deployer/Capistrano layout, storage ->
// ../../shared/storage, is served, and a link to /etc/passwd, or to a sibling
// such as /srv/app2, fails with ErrOutside. Caveat: another release
// (/srv/app/releases/A) is inside the deploy directory too, so a link from
// release B into release A is followed.
// Release.Stat does not apply the rule; only Open hands out content.
//
// # Deploys
//
// Switch points a link at a release atomically (a temporary symlink renamed
// over the link); ListReleases and ReleaseList.Prunable/Remove list and
// delete the releases beside the link's target. While Run watches, a new
// release can be prepared (warmed up) before it becomes current
// (Options.Prepare), is checked in the background for problems it would
// cause in production (Options.Checks), and a hook runs once it has
// drained (Options.OnDrain).
package resolve

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// A Release is one resolution of the configured root: the realpath it named
// from Since until it was superseded. A Release is immutable but for its
// in-flight count; two generations may share a Root (a flip back to an older
// release is a new generation).
type Release struct {
	// Root is the realpath of the configured root in this release, with no
	// symlink left in it, e.g. /srv/app/releases/20261121120000/public.
	Root string
	// Dir is the realpath of the release directory: the target of the
	// root's deploy link, e.g. /srv/app/releases/20261121120000 (see the
	// package's doc). It is Root itself, or one of its parents; Root when
	// the root has no symlink.
	Dir string
	// Gen numbers the releases of one Releases, from 1.
	Gen uint64
	// Since is when this release became current.
	Since time.Time

	// base is the deploy directory (e.g. /srv/app), release the release
	// directory when a deploy link leads to it, else "" (see deployDirs).
	// Symlinks inside a release are followed only while they stay below
	// Root, base or release.
	base, release string
	// rootInfo is the Stat of Root when resolved: a directory replaced in
	// place at the same path is a new release.
	rootInfo os.FileInfo
	// dir is Root opened as a directory (O_PATH, Linux) for Stat, and
	// dirFD its descriptor; nil when it could not be opened. It is closed
	// by its cleanup once the Release is unreachable, so no request that
	// holds the Release can see it closed.
	dir   *os.File
	dirFD uintptr

	// state holds the in-flight count in its low bits and supersededBit.
	state     atomic.Int64
	drained   atomic.Bool
	until     atomic.Int64 // unix nanoseconds when superseded; 0 while current
	drainedAt atomic.Int64 // unix nanoseconds when drained; 0 before
	drainedC  chan struct{}
	onDrain   func(*Release)
}

const (
	// supersededBit is set in Release.state once the release is no longer
	// current; the bits below it count the requests in flight.
	supersededBit = int64(1) << 62
	countMask     = supersededBit - 1
)

// Info is a snapshot of one release, for status pages and deploy tools.
type Info struct {
	Root      string    `json:"root"`
	Dir       string    `json:"dir"`
	Gen       uint64    `json:"gen"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until,omitzero"`      // zero while current
	InFlight  int64     `json:"in_flight"`           // requests pinned to it now
	DrainedAt time.Time `json:"drained_at,omitzero"` // zero until drained
}

// Snapshot is the state of every release a Releases still knows.
type Snapshot struct {
	Current  Info   `json:"current"`
	Draining []Info `json:"draining"` // superseded, requests still in flight
	Drained  []Info `json:"drained"`  // recently drained, newest first
	// DownSince is when the root stopped resolving to a directory (Current
	// is then the last good release); zero while it resolves.
	DownSince time.Time `json:"down_since,omitzero"`
}

// newRelease returns the release of res, current from since.
func newRelease(res *resolution, gen uint64, since time.Time, onDrain func(*Release)) *Release {
	r := &Release{
		Root:     res.real,
		Dir:      res.top,
		Gen:      gen,
		Since:    since,
		base:     res.base,
		release:  res.release,
		rootInfo: res.dir,
		drainedC: make(chan struct{}),
		onDrain:  onDrain,
	}
	if d := openDir(res.real, res.dir); d != nil {
		r.dir, r.dirFD = d, d.Fd()
	}
	return r
}

// Unpin ends one request's pin on r.
func (r *Release) Unpin() {
	n := r.state.Add(-1)
	switch {
	case n == supersededBit:
		r.markDrained()
	case n < 0 || n&countMask == countMask:
		r.state.Add(1) // leave the count as it was for whoever recovers
		panic(fmt.Sprintf("resolve: Unpin of release %s (gen %d) without a matching Pin", r.Root, r.Gen))
	}
}

// InFlight returns how many requests are pinned to r now.
func (r *Release) InFlight() int64 {
	return r.state.Load() & countMask
}

// Drained returns a channel closed once r is superseded and has no request in
// flight. It is nil for a Release not made by New.
func (r *Release) Drained() <-chan struct{} {
	return r.drainedC
}

// supersede marks r as no longer current from now on; it is drained at once
// if no request is in flight.
func (r *Release) supersede(now time.Time) {
	r.until.Store(now.UnixNano())
	if r.state.Or(supersededBit) == 0 {
		r.markDrained()
	}
}

// abandon ends r, prepared but never made current (the link moved on while
// it was prepared): no request was ever pinned to it. Its Drained closes, so
// that what Prepare started for it (a managed php-fpm pool) stops, with no
// "release drained" log and no OnDrain: it never served.
func (r *Release) abandon(now time.Time) {
	r.until.Store(now.UnixNano())
	r.state.Or(supersededBit)
	if r.drained.CompareAndSwap(false, true) {
		r.drainedAt.Store(now.UnixNano())
		if r.drainedC != nil {
			close(r.drainedC)
		}
	}
}

// markDrained runs once per release, when it is superseded with nothing in
// flight.
func (r *Release) markDrained() {
	if !r.drained.CompareAndSwap(false, true) {
		return // a Pin that lost the race to a switch undid its count
	}
	r.drainedAt.Store(time.Now().UnixNano())
	if r.onDrain != nil {
		r.onDrain(r)
	}
	if r.drainedC != nil {
		close(r.drainedC)
	}
}

// info returns the current state of r.
func (r *Release) info() Info {
	return Info{
		Root:      r.Root,
		Dir:       r.Dir,
		Gen:       r.Gen,
		Since:     r.Since,
		Until:     unixTime(r.until.Load()),
		InFlight:  r.InFlight(),
		DrainedAt: unixTime(r.drainedAt.Load()),
	}
}

// unixTime turns unix nanoseconds into a time, 0 into the zero time.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
