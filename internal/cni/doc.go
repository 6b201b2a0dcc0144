// Package cni is bulkhead-cni, a chained CNI plugin that gates a new pod's
// network on the node agent's local endpoint API (package
// dataplane/agent/endpointapi). It runs after the plugins that create the
// pod's interface and assign its addresses: its ADD takes the addresses
// from prevResult and the pod's namespace and name from CNI_ARGS, asks the
// agent to admit them, and returns prevResult unchanged only once the
// agent enforces policy for them. Every other outcome fails the ADD (fail
// closed), so the runtime tears the sandbox down and retries it.
//
// The package owns no state: DEL and GC succeed without a call (the
// agent forgets an endpoint when the pod leaves the controller's view),
// CHECK repeats the admission, which the agent answers at once for an
// enforced endpoint, and STATUS reports whether the agent's socket answers.
package cni
