// Package manifests checks the install manifests: config/default rendered
// by kustomize (the committed copies in testdata are compared with a fresh
// render), every object accepted by a real API server with server-side
// dry-run, and the RBAC the ServiceAccounts end up with, through
// SubjectAccessReviews after the roles and bindings are created for real.
package manifests
