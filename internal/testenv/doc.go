// Package testenv gives tests a real kube-apiserver and etcd (through
// controller-runtime's envtest) with Bulkhead's CRDs installed, and the
// rules privileged tests follow: skip with a reason when they cannot run,
// and fail instead under CI=true as root.
package testenv
