package controllers_test

import (
	"net/netip"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

func TestEndpointHintsCompileAPodBeforeItsStatusHasIPs(t *testing.T) {
	hinted := []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00:10:244:1::7")}
	fromStatus := []netip.Addr{netip.MustParseAddr("10.244.1.8")}
	pod := func(node string, ips ...netip.Addr) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		if len(ips) > 0 {
			p.Status.PodIP = ips[0].String()
		}
		return p
	}
	type step struct {
		pod      *corev1.Pod // upserted when set
		hintNode string      // a hint for app/web from this node when set
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []netip.Addr // app/web's IPs in node-a's policy; nil: not there
	}{
		{"a hint after the pod was created compiles it with the hinted IPs",
			[]step{{pod: pod("node-a")}, {hintNode: "node-a"}}, hinted},
		{"a hint before the pod was created is used when the pod arrives",
			[]step{{hintNode: "node-a"}, {pod: pod("node-a")}}, hinted},
		{"a hint from another node than the pod's is ignored",
			[]step{{pod: pod("node-a")}, {hintNode: "node-b"}}, nil},
		{"status IPs win over a hint",
			[]step{{pod: pod("node-a")}, {hintNode: "node-a"}, {pod: pod("node-a", fromStatus...)}}, fromStatus},
		{"a hint does not override status IPs already written",
			[]step{{pod: pod("node-a", fromStatus...)}, {hintNode: "node-a"}}, fromStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := controllers.NewModel(stream.NewHub(), 0, nil, testr.New(t))
			m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
			for _, s := range tc.steps {
				if s.pod != nil {
					m.Upsert(s.pod)
				}
				if s.hintNode != "" {
					m.Hint(s.hintNode, "app", "web", hinted)
				}
			}
			m.Publish()
			var got []netip.Addr
			if np := m.NodePolicy("node-a"); np != nil {
				for _, ep := range np.Endpoints {
					if ep.Name == "app/web" {
						got = ep.IPs
					}
				}
			}
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("app/web's IPs on node-a (-want +got):\n%s", d)
			}
		})
	}
}
