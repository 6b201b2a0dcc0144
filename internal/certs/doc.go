// Package certs creates the controller's self-signed CA and serving
// certificate, and checks whether an existing pair can be reused. It does
// no I/O; the controller stores the result in a Secret.
package certs
