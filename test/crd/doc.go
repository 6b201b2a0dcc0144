// Package crd checks the CRD schemas against a real kube-apiserver: every
// sample is accepted, and invalid objects are refused at admission with a
// message that names the offending field.
package crd
