package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
)

// agentSocket serves the endpoint API's wire format on a unix socket:
// it records each request and answers with the given status and error.
type agentSocket struct {
	path string
	mu   sync.Mutex
	reqs []endpointapi.Request
	code int
	msg  string
}

func newAgentSocket(t *testing.T, code int, msg string) *agentSocket {
	t.Helper()
	a := &agentSocket{path: filepath.Join(t.TempDir(), endpointapi.SocketName), code: code, msg: msg}
	lis, err := endpointapi.Listen(a.path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+endpointapi.Path, func(w http.ResponseWriter, r *http.Request) {
		var req endpointapi.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(endpointapi.Response{Error: err.Error()})
			return
		}
		a.mu.Lock()
		a.reqs = append(a.reqs, req)
		a.mu.Unlock()
		w.WriteHeader(a.code)
		resp := endpointapi.Response{Error: a.msg}
		if a.code == http.StatusOK {
			resp = endpointapi.Response{Epoch: "e1", Generation: 7}
		}
		_ = json.NewEncoder(w).Encode(resp)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *agentSocket) requests() []endpointapi.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]endpointapi.Request(nil), a.reqs...)
}

const podArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc"

const prev = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],` +
	`"ips":[{"address":"10.244.1.6/24","interface":0,"gateway":"10.244.1.1"},{"address":"fd00:10:244:1::6/64","interface":0}]}`

func config(socket, prevResult string) string {
	c := `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"bulkhead-cni","socket":"` + socket + `","timeoutSeconds":2`
	if prevResult != "" {
		c += `,"prevResult":` + prevResult
	}
	return c + "}"
}

func run(cmd, args, stdin string) (string, error) {
	var out bytes.Buffer
	err := Run(context.Background(), Env{Command: cmd, ContainerID: "abc", Netns: "/var/run/netns/x", IfName: "eth0", Args: args}, strings.NewReader(stdin), &out)
	return out.String(), err
}

func TestAddReturnsPrevResultOnceTheAgentAdmitsThePod(t *testing.T) {
	a := newAgentSocket(t, http.StatusOK, "")
	out, err := run("ADD", podArgs, config(a.path, prev))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	want := []endpointapi.Request{{Namespace: "shop", Name: "web-0", IPs: []string{"10.244.1.6", "fd00:10:244:1::6"}, TimeoutSeconds: 2}}
	if diff := cmp.Diff(want, a.requests()); diff != "" {
		t.Errorf("admission requests (-want +got):\n%s", diff)
	}
	var got, wantOut map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("ADD printed %q: %v", out, err)
	}
	if err := json.Unmarshal([]byte(prev), &wantOut); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantOut, got); diff != "" {
		t.Errorf("ADD result is not prevResult (-want +got):\n%s", diff)
	}
}

func TestAddFailsClosedWhenTheAgentRefusesOrIsAbsent(t *testing.T) {
	refusing := newAgentSocket(t, http.StatusServiceUnavailable, "policy for the endpoint is not programmed after 2s: no controller is connected")
	for _, tc := range []struct {
		name, socket, want string
	}{
		{"the agent refuses: the reason reaches the runtime", refusing.path, "no controller is connected"},
		{"no agent listens: the pod is not admitted either", filepath.Join(t.TempDir(), "absent.sock"), "absent.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run("ADD", podArgs, config(tc.socket, prev))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("ADD = %v (printed %q), want a CNI error", err, out)
			}
			if ce.Code != CodeTryAgainLater || !strings.Contains(ce.Error(), "shop/web-0") || !strings.Contains(ce.Error(), tc.want) {
				t.Errorf("ADD error %d %q, want code %d naming shop/web-0 and %q", ce.Code, ce.Error(), CodeTryAgainLater, tc.want)
			}
			if out != "" {
				t.Errorf("a refused ADD printed a result: %q", out)
			}
		})
	}
}

func TestBadInvocationsNameWhatIsWrong(t *testing.T) {
	a := newAgentSocket(t, http.StatusOK, "")
	for _, tc := range []struct {
		name, cmd, args, stdin string
		code                   int
		want                   string
	}{
		{"no CNI_COMMAND", "", podArgs, config(a.path, prev), CodeInvalidEnv, "CNI_COMMAND is not set"},
		{"an unknown command", "RESET", podArgs, config(a.path, prev), CodeInvalidEnv, `"RESET"`},
		{"configuration that is not JSON", "ADD", podArgs, "{", CodeDecodeFailure, "decoding the network configuration"},
		{"no cniVersion", "ADD", podArgs, `{"name":"n","type":"bulkhead-cni"}`, CodeInvalidConfig, "cniVersion is missing"},
		{"an unsupported cniVersion", "ADD", podArgs, `{"cniVersion":"0.2.0","name":"n","type":"bulkhead-cni"}`, CodeIncompatibleVersion, `"0.2.0"`},
		{"a negative timeout", "ADD", podArgs, `{"cniVersion":"1.0.0","name":"n","type":"bulkhead-cni","timeoutSeconds":-1}`, CodeInvalidConfig, "timeoutSeconds"},
		{"no pod name in CNI_ARGS", "ADD", "K8S_POD_NAMESPACE=shop", config(a.path, prev), CodeInvalidEnv, "K8S_POD_NAME missing"},
		{"no pod in CNI_ARGS", "ADD", "", config(a.path, prev), CodeInvalidEnv, "K8S_POD_NAMESPACE and K8S_POD_NAME missing"},
		{"a CNI_ARGS entry without =", "ADD", "K8S_POD_NAMESPACE=shop;oops", config(a.path, prev), CodeInvalidEnv, `"oops"`},
		{"first in the chain: no prevResult", "ADD", podArgs, config(a.path, ""), CodeInvalidConfig, "prevResult is missing"},
		{"prevResult without addresses", "ADD", podArgs, config(a.path, `{"cniVersion":"1.0.0","ips":[]}`), CodeInvalidConfig, "prevResult.ips is empty"},
		{"an address without a prefix length", "ADD", podArgs, config(a.path, `{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.6"}]}`), CodeInvalidConfig, "prevResult.ips[0].address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.cmd, tc.args, tc.stdin)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Run = %v (printed %q), want a CNI error", err, out)
			}
			if ce.Code != tc.code || !strings.Contains(ce.Error(), tc.want) {
				t.Errorf("error %d %q, want code %d containing %q", ce.Code, ce.Error(), tc.code, tc.want)
			}
		})
	}
	if n := len(a.requests()); n != 0 {
		t.Errorf("%d admission requests for invalid invocations, want 0", n)
	}
}

func TestCheckAdmitsAgainAndPrintsNothing(t *testing.T) {
	a := newAgentSocket(t, http.StatusOK, "")
	out, err := run("CHECK", podArgs, config(a.path, prev))
	if err != nil || out != "" {
		t.Fatalf("CHECK = %v, printed %q; want success and no output", err, out)
	}
	if n := len(a.requests()); n != 1 {
		t.Errorf("CHECK made %d admission requests, want 1", n)
	}
	refusing := newAgentSocket(t, http.StatusServiceUnavailable, "not programmed")
	if _, err := run("CHECK", podArgs, config(refusing.path, prev)); err == nil {
		t.Error("CHECK succeeded while the agent refuses the pod")
	}
}

func TestDelAndGCSucceedWithoutTheAgent(t *testing.T) {
	for _, cmd := range []string{"DEL", "GC"} {
		if out, err := run(cmd, "", config(filepath.Join(t.TempDir(), "absent.sock"), "")); err != nil || out != "" {
			t.Errorf("%s = %v, printed %q; want success and no output", cmd, err, out)
		}
	}
}

func TestStatusReportsWhetherTheAgentAnswers(t *testing.T) {
	a := newAgentSocket(t, http.StatusOK, "")
	if _, err := run("STATUS", "", config(a.path, "")); err != nil {
		t.Errorf("STATUS with a listening agent: %v", err)
	}
	_, err := run("STATUS", "", config(filepath.Join(t.TempDir(), "absent.sock"), ""))
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeNotAvailable {
		t.Errorf("STATUS without an agent = %v, want code %d", err, CodeNotAvailable)
	}
}

func TestVersionListsTheSupportedVersions(t *testing.T) {
	out, err := run("VERSION", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("VERSION printed %q: %v", out, err)
	}
	if v.CNIVersion != "1.1.0" || !cmp.Equal(v.SupportedVersions, []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}) {
		t.Errorf("VERSION = %+v", v)
	}
}
