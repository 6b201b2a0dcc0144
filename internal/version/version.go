// Package version holds the build's version, set with -ldflags -X.
package version

import "runtime/debug"

// Version is set at build time: -X github.com/bulkhead-dev/bulkhead/internal/version.Version=v0.1.0
var Version = ""

// String returns the version, falling back to the module's VCS revision.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
