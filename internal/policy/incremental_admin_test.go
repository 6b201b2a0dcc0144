package policy_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func mkZone(name string, age int, podSel map[string]string, nsSel map[string]string) *v1alpha1.Zone {
	z := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	z.Spec.Pods = &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: podSel}}
	if nsSel != nil {
		z.Spec.Pods.NamespaceSelector = &metav1.LabelSelector{MatchLabels: nsSel}
	}
	return z
}

// TestIncrementalAdminWork: on the incCluster (30 pods: web, db and other
// in n0 and n1, 5 of each), with zone webz (the 10 web pods) and zone dbz
// (the 10 db pods), changes of zones, ZonePolicies, upstream admin
// policies and nodes recompile only the endpoints whose chains they
// change.
func TestIncrementalAdminWork(t *testing.T) {
	tests := []struct {
		name     string
		change   func(t *testing.T, e *policy.Engine)
		compiled int
	}{
		{
			// egress of the 10 web pods, ingress of the 10 db pods
			name: "adding a ZonePolicy recompiles only the endpoints of its from and to zones",
			change: func(t *testing.T, e *policy.Engine) {
				zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web-to-db"}}
				zp.Spec.From, zp.Spec.To, zp.Spec.Action = []string{"webz"}, []string{"dbz"}, v1alpha1.ActionAccept
				if err := e.SetZonePolicy(zp); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 20,
		},
		{
			name: "a ZonePolicy from unzoned recompiles only the unzoned endpoints and its to zone",
			change: func(t *testing.T, e *policy.Engine) {
				zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "other-to-web"}}
				zp.Spec.From, zp.Spec.To, zp.Spec.Action = []string{"unzoned"}, []string{"webz"}, v1alpha1.ActionDeny
				if err := e.SetZonePolicy(zp); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 20,
		},
		{
			// the 5 db pods of n1 leave dbz; nobody else changes zone
			name: "narrowing a zone's selector recompiles only the endpoints that leave it",
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetZone(mkZone("dbz", 2, map[string]string{"app": "db"}, map[string]string{corev1.LabelMetadataName: "n0"})); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 5,
		},
		{
			name: "an AdminNetworkPolicy recompiles only the endpoints its subject selects",
			change: func(t *testing.T, e *policy.Engine) {
				a := &anpv1alpha1.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-other"}}
				a.Spec.Priority = 5
				a.Spec.Subject.Pods = &anpv1alpha1.NamespacedPod{
					NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "n1"}},
					PodSelector:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
				}
				a.Spec.Ingress = []anpv1alpha1.AdminNetworkPolicyIngressRule{{Action: anpv1alpha1.AdminNetworkPolicyRuleActionDeny,
					From: []anpv1alpha1.AdminNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}}
				if err := e.SetAdminNetworkPolicy(a); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 5,
		},
		{
			name: "a Node change recompiles no endpoint",
			change: func(t *testing.T, e *policy.Engine) {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0", Labels: map[string]string{"role": "infra"}}}
				n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.1"}}
				e.SetNode(n)
			},
			compiled: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := incCluster(t)
			if err := e.SetZone(mkZone("webz", 1, map[string]string{"app": "web"}, map[string]string{})); err != nil {
				t.Fatal(err)
			}
			if err := e.SetZone(mkZone("dbz", 2, map[string]string{"app": "db"}, map[string]string{})); err != nil {
				t.Fatal(err)
			}
			if n := endpointsCompiledBy(e, func() { tt.change(t, e) }); n != tt.compiled {
				t.Errorf("endpoints compiled: %d, want %d", n, tt.compiled)
			}
		})
	}
}

// endpointsCompiledBy compiles every dirty node, runs change, compiles the
// nodes it dirtied, and returns how many endpoints that compiled.
func endpointsCompiledBy(e *policy.Engine, change func()) int {
	for _, n := range e.TakeDirtyNodes() {
		e.NodePolicy(n)
	}
	before := e.Stats()
	change()
	for _, n := range e.TakeDirtyNodes() {
		e.NodePolicy(n)
	}
	return statsDelta(before, e.Stats()).EndpointsCompiled
}

// TestIncrementalZoneWork: on the incCluster with zones webz (the 10 web
// pods, age 1) and dbz (the 10 db pods, age 2), both Enforce, adding,
// deleting or changing a zone recompiles only the endpoints whose chains
// it changes; the other chains' zone boundaries name the shared
// ZoneMode/* sets, whose members change instead (docs/policy-model.md
// "Incremental updates"). After each change the node policies equal a
// full build of the same objects.
func TestIncrementalZoneWork(t *testing.T) {
	webz := mkZone("webz", 1, map[string]string{"app": "web"}, map[string]string{})
	dbz := mkZone("dbz", 2, map[string]string{"app": "db"}, map[string]string{})
	with := func(z *v1alpha1.Zone, fn func(*v1alpha1.Zone)) *v1alpha1.Zone {
		z = z.DeepCopy()
		fn(z)
		return z
	}
	otherz := mkZone("otherz", 3, map[string]string{"app": "other"}, map[string]string{corev1.LabelMetadataName: "n0"})
	webzAudit := with(webz, func(z *v1alpha1.Zone) { z.Spec.Mode = v1alpha1.ZoneModeAudit })
	dbzAudit := with(dbz, func(z *v1alpha1.Zone) { z.Spec.Mode = v1alpha1.ZoneModeAudit })
	dbzDeny := with(dbz, func(z *v1alpha1.Zone) { z.Spec.IntraZone = v1alpha1.IntraZoneDeny })
	nets := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "partners", CreationTimestamp: metav1.NewTime(time.Unix(1003, 0))}}
	nets.Spec.Networks = []v1alpha1.ZoneNetwork{{CIDR: "192.0.2.0/24"}}
	zp := func(name string, action v1alpha1.ZonePolicyAction) *v1alpha1.ZonePolicy {
		p := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
		p.Spec.From, p.Spec.To, p.Spec.Action = []string{"webz"}, []string{"dbz"}, action
		return p
	}
	tests := []struct {
		name   string
		before []*v1alpha1.Zone       // the zones compiled first
		zps    []*v1alpha1.ZonePolicy // ZonePolicies, before and after
		change func(t *testing.T, e *policy.Engine)
		after  []*v1alpha1.Zone // the zones once changed
		// compiled is derived by hand from the cluster; see each case.
		compiled int
	}{
		{
			// n0's 5 other pods join otherz; the 20 webz and dbz
			// members keep "Deny !Zones/<own zone>", and the 5 unzoned
			// other pods of n1 keep their rules over ZoneMode/Enforce,
			// which gains the 5 addresses (rather than all 30).
			name:     "adding a zone recompiles only its members",
			before:   []*v1alpha1.Zone{webz, dbz},
			change:   setZone(otherz),
			after:    []*v1alpha1.Zone{webz, dbz, otherz},
			compiled: 5,
		},
		{
			// the 10 web pods become unzoned; dbz remains, so this is
			// not the last zone going and every chain keeps a zone
			// boundary (rather than all 30)
			name:     "deleting a zone recompiles only its former members",
			before:   []*v1alpha1.Zone{webz, dbz},
			change:   func(_ *testing.T, e *policy.Engine) { e.DeleteZone("webz") },
			after:    []*v1alpha1.Zone{dbz},
			compiled: 10,
		},
		{
			// the 10 web pods' boundary becomes "Deny ZoneMode/Enforce,
			// Audit !Zones/webz"; for every other chain the web pods
			// move from ZoneMode/Enforce to ZoneMode/AuditOrLearn
			// (rather than all 30)
			name:     "changing a zone's mode recompiles only its members",
			before:   []*v1alpha1.Zone{webz, dbz},
			change:   setZone(webzAudit),
			after:    []*v1alpha1.Zone{webzAudit, dbz},
			compiled: 10,
		},
		{
			// a network zone has no pod members, and no pod changes zone
			name:     "adding a network zone recompiles no endpoint",
			before:   []*v1alpha1.Zone{webz, dbz},
			change:   setZone(nets),
			after:    []*v1alpha1.Zone{webz, dbz, nets},
			compiled: 0,
		},
		{
			// the baseline tier of the 10 db pods gains the intra-zone Deny
			name:     "changing a zone's intra-zone posture recompiles only its members",
			before:   []*v1alpha1.Zone{webz, dbz},
			change:   setZone(dbzDeny),
			after:    []*v1alpha1.Zone{webz, dbzDeny},
			compiled: 10,
		},
		{
			// the 10 db pods, and the 10 web pods (Audit) whose egress
			// Deny to dbz becomes an Audit
			name:     "a mode change recompiles the Audit endpoints that a Deny ZonePolicy pairs with the zone",
			before:   []*v1alpha1.Zone{webzAudit, dbz},
			zps:      []*v1alpha1.ZonePolicy{zp("web-to-db", v1alpha1.ActionDeny)},
			change:   setZone(dbzAudit),
			after:    []*v1alpha1.Zone{webzAudit, dbzAudit},
			compiled: 20,
		},
		{
			// flows from webz (Enforce) are enforced whatever dbz's
			// mode: the web pods' Deny stays; the db pods only
			name:     "a mode change leaves the Enforce endpoints that a Deny ZonePolicy pairs with the zone",
			before:   []*v1alpha1.Zone{webz, dbz},
			zps:      []*v1alpha1.ZonePolicy{zp("web-to-db", v1alpha1.ActionDeny)},
			change:   setZone(dbzAudit),
			after:    []*v1alpha1.Zone{webz, dbzAudit},
			compiled: 10,
		},
		{
			// an Accept does not depend on modes: the db pods only
			name:     "a mode change leaves the endpoints that only an Accept ZonePolicy pairs with the zone",
			before:   []*v1alpha1.Zone{webzAudit, dbz},
			zps:      []*v1alpha1.ZonePolicy{zp("web-to-db", v1alpha1.ActionAccept)},
			change:   setZone(dbzAudit),
			after:    []*v1alpha1.Zone{webzAudit, dbzAudit},
			compiled: 10,
		},
		{
			// the 10 db pods join, and the web pods' egress rule of
			// web-to-db, which named no existing zone, now names dbz
			name:     "adding a zone recompiles the endpoints that a ZonePolicy pairs with it",
			before:   []*v1alpha1.Zone{webz},
			zps:      []*v1alpha1.ZonePolicy{zp("web-to-db", v1alpha1.ActionAccept)},
			change:   setZone(dbz),
			after:    []*v1alpha1.Zone{webz, dbz},
			compiled: 20,
		},
		{
			// with no zone left, no chain has a zone boundary
			name:     "deleting the last zone recompiles every endpoint",
			before:   []*v1alpha1.Zone{webz},
			change:   func(_ *testing.T, e *policy.Engine) { e.DeleteZone("webz") },
			compiled: 30,
		},
		{
			name:     "adding the first zone recompiles every endpoint",
			change:   setZone(webz),
			after:    []*v1alpha1.Zone{webz},
			compiled: 30,
		},
	}
	build := func(t *testing.T, zones []*v1alpha1.Zone, zps []*v1alpha1.ZonePolicy) *policy.Engine {
		t.Helper()
		e, _ := incCluster(t)
		for _, z := range zones {
			if err := e.SetZone(z); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range zps {
			if err := e.SetZonePolicy(p); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := build(t, tt.before, tt.zps)
			if n := endpointsCompiledBy(e, func() { tt.change(t, e) }); n != tt.compiled {
				t.Errorf("endpoints compiled: %d, want %d", n, tt.compiled)
			}
			full := build(t, tt.after, tt.zps)
			if diff := cmp.Diff(allNodePolicies(t, full), allNodePolicies(t, e)); diff != "" {
				t.Errorf("incremental differs from a full build (-full +incremental):\n%s", diff)
			}
		})
	}
}

func setZone(z *v1alpha1.Zone) func(*testing.T, *policy.Engine) {
	return func(t *testing.T, e *policy.Engine) {
		t.Helper()
		if err := e.SetZone(z); err != nil {
			t.Fatal(err)
		}
	}
}
