// Package endpointapi is the agent's local endpoint API: the call a CNI
// plugin (in the lab, the lab kubelet) makes before it brings a new pod's
// network up. The agent listens on a unix socket in its state directory
// (SocketName); POST Path with a Request blocks until the node's
// dataplane enforces policy that includes the endpoint's addresses, or
// fails with an error when that cannot happen within the request's
// timeout (fail closed: the caller must then keep the pod's network
// down). The package holds only the wire types and a small client, so
// callers need not import the agent.
package endpointapi
