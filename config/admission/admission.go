// Package admission embeds the admission policies of this directory, so
// that binaries (the local lab's control plane) can install them without
// a source tree.
package admission

import "embed"

// Policies holds *.yaml (and kustomization.yaml, which is not an object):
// multi-document files of MutatingAdmissionPolicy,
// ValidatingAdmissionPolicy and their bindings.
//
//go:embed *.yaml
var Policies embed.FS
