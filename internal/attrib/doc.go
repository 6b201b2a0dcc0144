// Package attrib turns address-level flow edges reported by agents into
// workload-level edges (api/v1alpha1 FlowEdge), merges them, and shards
// them into bounded FlowEdgeSet objects.
//
// It is pure Go: the controller feeds it pods, owners and Services from
// its informers and reads the result; nothing here talks to an API server.
//
//   - History maps an IP to the pods that held it over time, so a flow is
//     attributed to the pod that had the address when the flow was seen,
//     even after the IP was reused.
//   - Owner chains are walked through an OwnerLookup up to the top
//     workload (ReplicaSet→Deployment, Job→CronJob, StatefulSet,
//     DaemonSet); a pod without owner is its own workload (Kind Pod).
//   - StableLabels drops labels that controllers set per revision or per
//     pod, so edges of one workload merge across rollouts.
//   - Services maps ClusterIP:port to the Service and its backends'
//     targetPort, for dataplanes that see pre-DNAT addresses. kube-dns is
//     a known peer even when its backends are unknown.
//   - Other addresses become CIDR endpoints: /32 or /128 per address, or
//     the smallest configured aggregate that contains them.
package attrib
