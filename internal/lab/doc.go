// Package lab runs the whole product on one machine: a real kube-apiserver
// and etcd, node and pod network namespaces joined by veths and routed as
// common CNIs do, a small "kubelet" that registers Nodes and Pods with the
// addresses the lab assigned, probe servers in every pod namespace, and the
// real bulkhead-controller and one bulkhead-agent per node when they exist.
//
// Everything a lab creates is recorded under one state directory (PIDs,
// logs, kubeconfig, tokens, CA) and every network namespace it creates is
// named "bh-<lab>-...". Down removes all of it, also after a crash, and is
// idempotent. The lab never touches the root namespace's interfaces,
// routes or nft tables: veths are created inside lab namespaces only, and
// traffic flows only between lab namespaces.
package lab
