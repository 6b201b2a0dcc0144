// Package manifests checks what operators install and read: config/default
// rendered by kustomize (the committed copies in testdata are compared
// with a fresh render), every object accepted by a real API server with
// server-side dry-run, the RBAC the ServiceAccounts end up with, through
// SubjectAccessReviews after the roles and bindings are created for real,
// and docs/metrics.md against the metrics the controller and agent export.
package manifests
