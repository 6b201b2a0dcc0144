package attrib

import "strings"

// unstableLabels are set by controllers per revision or per pod.
var unstableLabels = map[string]bool{
	"pod-template-hash":                        true,
	"controller-revision-hash":                 true,
	"pod-template-generation":                  true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"batch.kubernetes.io/controller-uid":       true,
	"batch.kubernetes.io/job-name":             true,
	"controller-uid":                           true,
	"job-name":                                 true,
	"batch.kubernetes.io/job-completion-index": true,
}

// StableLabels returns labels without the ones controllers add per
// revision or per pod, and without topology.kubernetes.io/*. It returns
// nil for an empty result.
func StableLabels(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if unstableLabels[k] || strings.HasPrefix(k, "topology.kubernetes.io/") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}
