// Package bench holds the lab benchmarks (run by `make bench`, never by
// `make test`: the benchmark test builds only with -tags labbench and
// runs only with BULKHEAD_BENCH=1) and the small
// in-namespace traffic helpers they and the e2e tests share: an echo
// server and a long-lived line stream that live inside pod network
// namespaces, and a single TCP probe. Every socket is opened inside a
// namespace the lab created; nothing here touches the host's network.
package bench
