package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
)

// ErrNotProgrammed is returned by Admit when the endpoint's policy was
// not enforced in time.
var ErrNotProgrammed = errors.New("policy for the endpoint is not programmed")

// admitWait is one pending Admit.
type admitWait struct {
	key  string
	ips  []netip.Addr
	done chan State
}

// Admit blocks until the node's dataplane enforces a policy whose
// endpoint namespace/name holds every address in ips, and returns the
// (epoch, generation) that did. It is the CNI-side gate for new pods: the
// caller keeps the pod's network down until Admit returns nil. While
// waiting, the agent tells the controller the addresses over the stream
// (an EndpointHint, re-sent on every new session), so the controller can
// compile the pod before the pod's status carries them. Admit fails with
// an error wrapping ErrNotProgrammed when ctx ends first, naming whether
// no controller was connected or the dataplane failed to apply.
func (a *Agent) Admit(ctx context.Context, namespace, name string, ips []netip.Addr) (State, error) {
	key := namespace + "/" + name
	if namespace == "" || name == "" {
		return State{}, fmt.Errorf("endpoint %q: namespace and name are required", key)
	}
	if len(ips) == 0 {
		return State{}, fmt.Errorf("endpoint %s: at least one IP is required", key)
	}
	w := &admitWait{key: key, ips: ips, done: make(chan State, 1)}
	a.mu.Lock()
	if a.programmedLocked(w) {
		st := a.applied
		a.mu.Unlock()
		return st, nil
	}
	a.waits = append(a.waits, w)
	if a.sess != nil {
		if err := a.sess.Hint(namespace, name, ips); err != nil {
			a.log.Info("sending endpoint hint failed; re-sent on the next session", "pod", key, "error", err.Error())
		}
	}
	a.mu.Unlock()
	start := time.Now()
	select {
	case st := <-w.done:
		a.log.V(1).Info("endpoint admitted", "pod", key, "ips", ips, "generation", st.Generation, "waited", time.Since(start))
		return st, nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	a.waits = slices.DeleteFunc(a.waits, func(x *admitWait) bool { return x == w })
	connected, failed := a.sess != nil, a.failed
	a.mu.Unlock()
	select {
	case st := <-w.done: // programmed just as the wait ended
		return st, nil
	default:
	}
	why := "the controller has not sent a policy that includes it"
	switch {
	case !connected:
		why = "no controller is connected"
	case failed:
		why = "the dataplane failed to apply the current policy"
	}
	return State{}, fmt.Errorf("endpoint %s %v: %w after %s: %s", key, ips, ErrNotProgrammed, time.Since(start).Round(time.Millisecond), why)
}

// programmedLocked reports whether the enforced policy holds w.
func (a *Agent) programmedLocked(w *admitWait) bool {
	if a.desired == nil || a.failed || a.applied.Epoch != a.epoch || a.applied.Generation != a.gen {
		return false
	}
	i, ok := slices.BinarySearchFunc(a.desired.Endpoints, w.key, func(e irEndpoint, k string) int {
		switch {
		case e.Name < k:
			return -1
		case e.Name > k:
			return 1
		}
		return 0
	})
	if !ok {
		// Endpoints are documented as sorted; fall back to a scan.
		i = slices.IndexFunc(a.desired.Endpoints, func(e irEndpoint) bool { return e.Name == w.key })
		if i < 0 {
			return false
		}
	}
	for _, ip := range w.ips {
		if !slices.Contains(a.desired.Endpoints[i].IPs, ip) {
			return false
		}
	}
	return true
}

// admitLocked releases the waits the just-enforced policy satisfies.
func (a *Agent) admitLocked() {
	if len(a.waits) == 0 {
		return
	}
	kept := a.waits[:0]
	for _, w := range a.waits {
		if a.programmedLocked(w) {
			w.done <- a.applied
			continue
		}
		kept = append(kept, w)
	}
	clear(a.waits[len(kept):])
	a.waits = kept
}

// hintPendingLocked re-sends the hints of pending waits on a new session.
func (a *Agent) hintPendingLocked(sendHint func(namespace, name string, ips []netip.Addr) error) {
	for _, w := range a.waits {
		ns, name, _ := cutKey(w.key)
		if err := sendHint(ns, name, w.ips); err != nil {
			a.log.Info("sending endpoint hint failed", "pod", w.key, "error", err.Error())
			return
		}
	}
}

func cutKey(key string) (string, string, bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

// EndpointHandler serves the local endpoint API (package endpointapi) on
// top of Admit. Refusals answer 503 with the reason; malformed requests
// 400 naming the field.
func EndpointHandler(a *Agent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+endpointapi.Path, func(w http.ResponseWriter, r *http.Request) {
		reply := func(code int, resp endpointapi.Response) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(resp)
		}
		var req endpointapi.Request
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			reply(http.StatusBadRequest, endpointapi.Response{Error: fmt.Sprintf("decoding request: %v", err)})
			return
		}
		var ips []netip.Addr
		for i, s := range req.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				reply(http.StatusBadRequest, endpointapi.Response{Error: fmt.Sprintf("ips[%d]: %v", i, err)})
				return
			}
			ips = append(ips, ip.Unmap())
		}
		timeout := endpointapi.DefaultTimeout
		if req.TimeoutSeconds < 0 {
			reply(http.StatusBadRequest, endpointapi.Response{Error: fmt.Sprintf("timeoutSeconds %v is negative", req.TimeoutSeconds)})
			return
		} else if req.TimeoutSeconds > 0 {
			timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		st, err := a.Admit(ctx, req.Namespace, req.Name, ips)
		switch {
		case errors.Is(err, ErrNotProgrammed):
			reply(http.StatusServiceUnavailable, endpointapi.Response{Error: err.Error()})
		case err != nil:
			reply(http.StatusBadRequest, endpointapi.Response{Error: err.Error()})
		default:
			reply(http.StatusOK, endpointapi.Response{Epoch: st.Epoch, Generation: st.Generation})
		}
	})
	return mux
}
