// Package admission embeds the admission policies of this directory (the
// Quarantine audit trail), so that binaries (the local lab's control
// plane) and tests can install them without a source tree: Objects
// decodes the files kustomization.yaml lists, Install creates them
// through a client and leaves objects that already exist alone.
package admission

import "embed"

// Policies holds *.yaml (and kustomization.yaml, which is not an object):
// multi-document files of MutatingAdmissionPolicy,
// ValidatingAdmissionPolicy and their bindings.
//
//go:embed *.yaml
var Policies embed.FS
