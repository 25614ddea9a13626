package proxy

// splitScript splits the cleaned URL path p at the first script extension
// (one of exts, each starting with ".") that ends p or is followed by "/",
// like nginx's `fastcgi_split_path_info ^(.+?\.php)(/.*)$`. The match is
// ASCII and case-insensitive, and the extension must have at least one byte
// before it that is not "/" ("/.php" is a dotfile, not a script). ok is false
// when p names no script.
func splitScript(p string, exts []string) (script, pathInfo string, ok bool) {
	for i := 1; i < len(p); i++ {
		if p[i] != '.' || p[i-1] == '/' {
			continue
		}
		for _, ext := range exts {
			end := i + len(ext)
			if end > len(p) || (end < len(p) && p[end] != '/') {
				continue
			}
			if equalFoldASCII(p[i:end], ext) {
				return p[:end], p[end:], true
			}
		}
	}
	return "", "", false
}

// equalFoldASCII reports whether a and b are equal under ASCII case folding.
// Unlike strings.EqualFold it never matches non-ASCII letters (the Kelvin
// sign is not "k").
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// hasScriptExt reports whether name ends with one of exts.
func hasScriptExt(name string, exts []string) bool {
	for _, ext := range exts {
		if len(name) > len(ext) && equalFoldASCII(name[len(name)-len(ext):], ext) {
			return true
		}
	}
	return false
}
