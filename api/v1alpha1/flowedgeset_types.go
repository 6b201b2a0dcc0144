package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FlowVerdict is what the datapath did with an observed flow.
// +kubebuilder:validation:Enum=Forwarded;Dropped;Audit
type FlowVerdict string

const (
	// VerdictForwarded: the flow was allowed.
	VerdictForwarded FlowVerdict = "Forwarded"
	// VerdictDropped: the flow was denied.
	VerdictDropped FlowVerdict = "Dropped"
	// VerdictAudit: the flow would have been denied, but an Audit zone or
	// ZonePolicy let it through.
	VerdictAudit FlowVerdict = "Audit"
)

// EdgeEndpoint is one end of an observed edge, after attribution: a
// workload, or an address range outside the cluster's pods.
// +kubebuilder:validation:XValidation:rule="has(self.workload) != has(self.cidr)",message="exactly one of workload or cidr must be set"
type EdgeEndpoint struct {
	// Workload is the top owner of the pods on this end.
	// +optional
	Workload *WorkloadRef `json:"workload,omitempty"`
	// CIDR is the address range of a peer that is not a pod.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr,omitempty"`
	// Service names the Service whose ClusterIP the client addressed, as
	// namespace/name, when the flow went through one.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service,omitempty"`
}

// WorkloadRef names a workload: the top of a pod's owner chain, or the pod
// itself when it has no owner.
type WorkloadRef struct {
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// Kind is Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet
	// or Pod.
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Labels are the pods' stable labels: those set in the pod template,
	// without the ones controllers add per revision or per pod.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Zone is the zone the pods belonged to when last seen.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Zone string `json:"zone,omitempty"`
}

// FlowEdge is every observed flow between two endpoints on one server port
// with one verdict, merged.
type FlowEdge struct {
	Source      EdgeEndpoint `json:"source"`
	Destination EdgeEndpoint `json:"destination"`
	Protocol    Protocol     `json:"protocol"`
	// Port is the server's port, after Service translation.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port    int32       `json:"port"`
	Verdict FlowVerdict `json:"verdict"`
	// Connections is the number of connections (flows) observed.
	Connections int64 `json:"connections"`
	// Packets is the number of packets observed.
	// +optional
	Packets int64 `json:"packets,omitempty"`
	// Bytes is the number of IP bytes observed, both directions.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
	// SourcePodCount is the number of distinct source pods.
	// +optional
	SourcePodCount int32 `json:"sourcePodCount,omitempty"`
	// SourcePods names up to 10 of the source pods.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	SourcePods []string    `json:"sourcePods,omitempty"`
	FirstSeen  metav1.Time `json:"firstSeen"`
	LastSeen   metav1.Time `json:"lastSeen"`
	// Samples are a few example flows, as "srcIP -> dstIP proto/port".
	// +optional
	// +kubebuilder:validation:MaxItems=5
	Samples []string `json:"samples,omitempty"`
}

// FlowEdgeSetSpec holds one bounded shard of the learned edges.
type FlowEdgeSetSpec struct {
	// Edges are the merged edges of this shard.
	// +optional
	// +kubebuilder:validation:MaxItems=500
	Edges []FlowEdge `json:"edges,omitempty"`
}

// FlowEdgeSet persists observed edges so learning survives a controller
// restart. The controller owns these objects; it shards the edges across
// several of them so that no object grows without bound.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fes
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FlowEdgeSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec FlowEdgeSetSpec `json:"spec"`
}

// FlowEdgeSetList is a list of FlowEdgeSets.
// +kubebuilder:object:root=true
type FlowEdgeSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FlowEdgeSet `json:"items"`
}
