package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func port(proto string, p int32) v1alpha1.PolicyPort {
	v := intstr.FromInt32(p)
	return v1alpha1.PolicyPort{Protocol: v1alpha1.Protocol(proto), Port: &v}
}

func TestParseForensicsPeer(t *testing.T) {
	end := int32(25)
	tests := []struct {
		name, in string
		want     v1alpha1.ForensicsPeer
		wantErr  string
	}{
		{name: "an IPv4 host with a port", in: "cidr:10.0.0.1/32:TCP/22",
			want: v1alpha1.ForensicsPeer{CIDR: "10.0.0.1/32", Ports: []v1alpha1.PolicyPort{port("TCP", 22)}}},
		{name: "an IPv6 prefix keeps its colons", in: "cidr:fd00::1/128",
			want: v1alpha1.ForensicsPeer{CIDR: "fd00::1/128"}},
		{name: "an IPv6 prefix with a port", in: "cidr:fd00::/64:udp/53",
			want: v1alpha1.ForensicsPeer{CIDR: "fd00::/64", Ports: []v1alpha1.PolicyPort{port("UDP", 53)}}},
		{name: "a zone with a port range", in: "zone:forensics:TCP/22-25",
			want: v1alpha1.ForensicsPeer{Zone: "forensics", Ports: []v1alpha1.PolicyPort{{Protocol: "TCP", Port: ptrInt(22), EndPort: &end}}}},
		{name: "pods in a named namespace", in: "pod:sec/app=collector:UDP/514",
			want: v1alpha1.ForensicsPeer{Pods: &v1alpha1.ZonePods{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "sec"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "collector"}}},
				Ports: []v1alpha1.PolicyPort{port("UDP", 514)}}},
		{name: "pods without a namespace mean the quarantine's own", in: "pod:app=a,tier=b",
			want: v1alpha1.ForensicsPeer{Pods: &v1alpha1.ZonePods{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a", "tier": "b"}}}}},
		{name: "host bits are refused with the fix", in: "cidr:10.0.0.1/24", wantErr: "did you mean 10.0.0.0/24"},
		{name: "an unknown kind is named", in: "host:foo", wantErr: `unknown peer kind "host"`},
		{name: "a missing kind is refused", in: "10.0.0.1/32", wantErr: "want cidr:PREFIX"},
		{name: "a port out of range is refused", in: "zone:a:TCP/70000", wantErr: "out of range"},
		{name: "a reversed range is refused", in: "zone:a:TCP/30-20", wantErr: "must be in 30..65535"},
		{name: "an upper-case zone is refused", in: "zone:Bad", wantErr: "lower-case DNS label"},
		{name: "pods need labels", in: "pod:sec/", wantErr: "want KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseForensicsPeer(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseForensicsPeer(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("parseForensicsPeer(%q) (-want +got):\n%s", tt.in, d)
			}
			if back := peersString([]v1alpha1.ForensicsPeer{got}); !strings.EqualFold(back, tt.in) {
				t.Errorf("peersString round trip = %q, want %q", back, tt.in)
			}
		})
	}
}

func ptrInt(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }

func TestBuildQuarantineFlagErrors(t *testing.T) {
	tests := []struct {
		name    string
		f       quarantineFlags
		args    []string
		wantErr []string
	}{
		{name: "every problem is reported at once, naming its flag",
			f:       quarantineFlags{allowFrom: []string{"cidr:x"}, allowTo: []string{"nope"}, duration: -time.Second},
			args:    []string{"pod/a"},
			wantErr: []string{"--reason", `--allow-from "cidr:x"`, `--allow-to "nope"`, "--for -1s"}},
		{name: "pod and selector together are refused", f: quarantineFlags{reason: "r", selector: "app=a"}, args: []string{"pod/a"},
			wantErr: []string{"not both"}},
		{name: "a bare name is refused", f: quarantineFlags{reason: "r"}, args: []string{"a"}, wantErr: []string{`argument "a": want pod/NAME`}},
		{name: "no target is refused", f: quarantineFlags{reason: "r"}, wantErr: []string{"name a pod"}},
		{name: "a bad selector names the flag", f: quarantineFlags{reason: "r", selector: "a in (("}, wantErr: []string{"--selector"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildQuarantine(tt.f, tt.args, "ns")
			if err == nil {
				t.Fatal("no error")
			}
			var ue usageError
			if !asUsage(err, &ue) {
				t.Errorf("error %v is not a usage error (exit code 2)", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestBuildQuarantineSpec(t *testing.T) {
	f := quarantineFlags{reason: "beaconing to C2", allowFrom: []string{"pod:sec/app=ir:TCP/22"}, allowTo: []string{"cidr:10.0.0.9/32"},
		allowDNS: true, duration: 2 * time.Hour, noCut: true}
	q, err := buildQuarantine(f, []string{"pod/api-0"}, "shop")
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := v1alpha1.QuarantineSpec{PodName: "api-0", Reason: "beaconing to C2", AllowDNS: true,
		ExpireAfter:    &metav1.Duration{Duration: 2 * time.Hour},
		CutConnections: &no,
		Allow: v1alpha1.ForensicsAllowList{
			Ingress: []v1alpha1.ForensicsPeer{{Pods: &v1alpha1.ZonePods{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "sec"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ir"}}},
				Ports: []v1alpha1.PolicyPort{port("TCP", 22)}}},
			Egress: []v1alpha1.ForensicsPeer{{CIDR: "10.0.0.9/32"}},
		}}
	if d := cmp.Diff(want, q.Spec); d != "" {
		t.Fatalf("spec (-want +got):\n%s", d)
	}
	if q.Namespace != "shop" || q.GenerateName != "q-api-0-" {
		t.Errorf("namespace/generateName = %s/%s, want shop/q-api-0-", q.Namespace, q.GenerateName)
	}
}

func TestWriteShow(t *testing.T) {
	created := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	enf := metav1.NewMicroTime(created.Add(1234567 * time.Microsecond))
	yes := true
	q := &v1alpha1.Quarantine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q-api-0-x", CreationTimestamp: created},
		Spec: v1alpha1.QuarantineSpec{PodName: "api-0", Reason: "c2", RequestedBy: "alice", CutConnections: &yes,
			Allow: v1alpha1.ForensicsAllowList{Ingress: []v1alpha1.ForensicsPeer{{CIDR: "10.0.0.9/32", Ports: []v1alpha1.PolicyPort{port("TCP", 22)}}}}},
		Status: v1alpha1.QuarantineStatus{Phase: v1alpha1.QuarantineActive, AuthenticatedRequester: "alice", MatchedPods: []string{"shop/api-0"},
			EnforcedAt: &enf,
			Nodes:      []v1alpha1.QuarantineNode{{Node: "n1", EnforcedAt: &enf}, {Node: "n2", Error: "nft: boom"}},
			BlockedFlows: []v1alpha1.QuarantineFlow{{Time: metav1.NewMicroTime(enf.Add(2 * time.Second)), Node: "n1", Direction: "egress", Protocol: "TCP",
				Source: "10.244.1.5:41000", SourcePod: "shop/api-0", Destination: "203.0.113.9:443"}},
			BlockedFlowsTotal: 7},
	}
	ev := []corev1.Event{
		{Type: "Normal", Reason: "Active", Message: "pods shop/api-0 isolated", EventTime: metav1.NewMicroTime(enf.Time)},
		{Type: "Normal", Reason: "Pending", Message: "quarantine requested", EventTime: metav1.NewMicroTime(created.Time)},
	}
	var b bytes.Buffer
	if err := writeShow(&b, q, ev); err != nil {
		t.Fatal(err)
	}
	want := `Name:          shop/q-api-0-x
Phase:         Active
Target:        pod/api-0
Reason:        c2
Requested by:  alice (authenticated: alice)
Created:       2026-12-01T10:00:00Z
Enforced:      2026-12-01T10:00:01.234567Z
Expires:       never (until released)
Ended:         -
Cut conns:     true
Allow DNS:     false
Allow from:    cidr:10.0.0.9/32:TCP/22
Allow to:      -
Matched pods:  shop/api-0
Nodes:
  NODE  ENFORCED AT                  AFTER CREATE  ERROR
  n1    2026-12-01T10:00:01.234567Z  1.235s        -
  n2    -                            -             nft: boom
Blocked flows: 7 recorded, latest 1:
  TIME                         NODE  DIR     PROTO  SOURCE                         DESTINATION
  2026-12-01T10:00:03.234567Z  n1    egress  TCP    10.244.1.5:41000 (shop/api-0)  203.0.113.9:443
Events:
  TIME                  TYPE    REASON   MESSAGE
  2026-12-01T10:00:00Z  Normal  Pending  quarantine requested
  2026-12-01T10:00:01Z  Normal  Active   pods shop/api-0 isolated
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Fatalf("show output (-want +got):\n%s", d)
	}
}

// TestQuarantineCommandsAgainstAPIServer runs quarantine, list, show and
// release against a real API server: the object carries the user the API
// server authenticated (SelfSubjectReview), not the kubeconfig's entry name.
func TestQuarantineCommandsAgainstAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-0", Labels: map[string]string{"app": "api"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	kc := writeKubeconfig(t, env)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantUser := ssr.Status.UserInfo.Username
	if wantUser == "" || wantUser == "entry-name" {
		t.Fatalf("SelfSubjectReview user = %q", wantUser)
	}

	out := qcli(ctx, t, "quarantine", "pod/api-0", "-n", "shop", "--kubeconfig", kc, "--reason", "c2 beacon",
		"--allow-from", "cidr:10.0.0.9/32:TCP/22", "--for", "1h", "--name", "q1")
	if !strings.Contains(out, "quarantine shop/q1 created (requested by "+wantUser+")") {
		t.Errorf("quarantine output = %q", out)
	}
	var q v1alpha1.Quarantine
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "q1"}, &q); err != nil {
		t.Fatal(err)
	}
	if q.Spec.RequestedBy != wantUser || q.Spec.PodName != "api-0" || q.Spec.Reason != "c2 beacon" ||
		q.Spec.ExpireAfter == nil || q.Spec.ExpireAfter.Duration != time.Hour || len(q.Spec.Allow.Ingress) != 1 {
		t.Errorf("created spec = %+v", q.Spec)
	}

	if _, err := qcliErr(ctx, "quarantine", "pod/nope", "-n", "shop", "--kubeconfig", kc, "--reason", "r"); err == nil ||
		!strings.Contains(err.Error(), "pod/nope in namespace shop") {
		t.Errorf("quarantining a missing pod: error = %v, want one naming pod/nope", err)
	}

	out = qcli(ctx, t, "quarantine", "-l", "app=api", "-n", "shop", "--kubeconfig", kc, "--reason", "lateral movement")
	if !strings.Contains(out, "quarantine shop/q-selector-") {
		t.Errorf("selector quarantine output = %q", out)
	}
	out = qcli(ctx, t, "quarantine", "list", "-A", "--kubeconfig", kc)
	if !strings.Contains(out, "q1") || !strings.Contains(out, "pod/api-0") || !strings.Contains(out, "-l app=api") {
		t.Errorf("list output misses a quarantine:\n%s", out)
	}
	out = qcli(ctx, t, "quarantine", "show", "q1", "-n", "shop", "--kubeconfig", kc)
	if !strings.Contains(out, "Requested by:  "+wantUser) || !strings.Contains(out, "Allow from:    cidr:10.0.0.9/32:TCP/22") {
		t.Errorf("show output:\n%s", out)
	}

	qcli(ctx, t, "release", "q1", "-n", "shop", "--kubeconfig", kc)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "q1"}, &q); err != nil {
		t.Fatalf("released quarantine must stay for the audit trail: %v", err)
	}
	if !q.Spec.Released {
		t.Error("release did not set spec.released")
	}
	if _, err := qcliErr(ctx, "release", "nope", "-n", "shop", "--kubeconfig", kc); err == nil || !strings.Contains(err.Error(), "shop/nope") {
		t.Errorf("releasing a missing quarantine: error = %v", err)
	}
}

func qcliErr(ctx context.Context, args ...string) (string, error) {
	root := newRootCmd()
	var b bytes.Buffer
	root.SetOut(&b)
	root.SetErr(&b)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return b.String(), err
}

func qcli(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := qcliErr(ctx, args...)
	if err != nil {
		t.Fatalf("bulkhead %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// writeKubeconfig writes the envtest admin's credentials under a user
// entry named "entry-name", so the test can tell it from the
// authenticated user.
func writeKubeconfig(t *testing.T, env *testenv.Env) string {
	t.Helper()
	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["entry-name"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "entry-name", Namespace: "shop"}
	kc.CurrentContext = "x"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return path
}
