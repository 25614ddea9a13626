package proxy

import (
	"net/http"
	"strings"
)

// Response headers from the configuration (Options.Headers), like nginx's
// add_header: set in serve once a request is routed, before the static file
// or PHP's response fills in the rest, so that PHP's own headers override
// them and realroot's error responses (which start from empty headers) get
// none.

// HeaderRule gives responses whose URL path matches Match the header Name:
// Value. Match is as CacheRule's: ".ext", "/prefix" or "*".
type HeaderRule struct {
	Match, Name, Value string
}

// pathMatches reports whether the cleaned URL path p fits match: ".ext" (an
// extension, any case), "/prefix" (that path and everything below it) or
// "*".
func pathMatches(match, p string) bool {
	switch {
	case match == "*":
		return true
	case strings.HasPrefix(match, "."):
		return len(p) > len(match) && equalFoldASCII(p[len(p)-len(match):], match)
	}
	return underPrefix(p, match)
}

// headerRule is a HeaderRule ready to apply: its name canonical and its
// value a slice shared by every response (set, never modified in place).
type headerRule struct {
	match, key string
	values     []string
}

// addHeaders sets the headers of the rules matching the cleaned URL path p
// that hd does not have yet.
func (h *Handler) addHeaders(hd http.Header, p string) {
	for _, hr := range h.headers {
		if _, ok := hd[hr.key]; !ok && pathMatches(hr.match, p) {
			hd[hr.key] = hr.values
		}
	}
}
