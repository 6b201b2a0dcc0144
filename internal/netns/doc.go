// Package netns runs code inside network namespaces and manages named
// namespaces under /run/netns. Every switch happens on a goroutine locked
// to its OS thread, and the thread's original namespace is restored
// afterwards, so callers never leak a namespace change into the Go
// runtime's thread pool.
package netns
