// Package dptest is a backend-agnostic, privileged test table for
// dataplane.Dataplane implementations. It builds a node network namespace
// with routed pod namespaces (veth pairs, pod /32 and /128 addresses),
// runs TCP and UDP probe servers inside the pods, syncs reference
// policies through the backend under test and compares what real packets
// do with ir.NodePolicy.Evaluate and with hand-written expectations.
//
// Every namespace it creates has a unique name and is deleted when the
// test ends, also on failure. Traffic only flows between these
// namespaces.
package dptest
