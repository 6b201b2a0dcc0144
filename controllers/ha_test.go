package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
)

// startReplica starts one leader-electing controller replica.
func (k *cluster) startReplica(name string) *controllers.Controller {
	k.t.Helper()
	ctx, cancel := context.WithCancel(logr.NewContext(k.ctx, testr.NewWithOptions(k.t, testr.Options{Verbosity: 0}).WithName(name)))
	c, err := controllers.New(ctx, k.env.Config, controllers.Options{
		StreamAddr: "127.0.0.1:0", Namespace: sysNS, LeaderElect: true,
		Registry: prometheus.NewRegistry(), SkipNameValidation: true,
	})
	if err != nil {
		cancel()
		k.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Start(ctx); err != nil {
			k.t.Logf("%s stopped: %v", name, err)
		}
	}()
	k.t.Cleanup(func() { cancel(); <-done })
	return c
}

// TestAgentsFollowTheLeaderSoStatusCountsTheirAcks: with two replicas and
// leader election, an agent whose first address is the follower is
// refused there and served by the leader, so the leader sees its acks
// and writes "enforced" status for its node.
func TestAgentsFollowTheLeaderSoStatusCountsTheirAcks(t *testing.T) {
	k := startCluster(t)
	nodeA := k.node("node-a")
	k.namespace("shop", nil)
	k.pod("shop", "db-1", "node-a", "10.244.1.10", map[string]string{"app": "db"})

	leader := k.startReplica("replica-1")
	select {
	case <-leader.Manager.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("the first replica was not elected within 30s")
	}
	follower := k.startReplica("replica-2")
	select {
	case <-follower.Manager.Elected():
		t.Fatal("both replicas report being the leader")
	case <-time.After(time.Second):
	}
	eventually(t, "the follower's view to be ready", func() error {
		if !follower.Hub.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})

	ag := k.agent("node-a", k.token("bulkhead-agent", nodeA), follower.StreamAddr(), leader.StreamAddr())
	eventually(t, "the agent to enforce a snapshot", func() error {
		if !ag.Ready() {
			return fmt.Errorf("no snapshot enforced")
		}
		return nil
	})
	if got, want := ag.Applied().Epoch, leader.Hub.Epoch(); got != want {
		t.Errorf("the agent applied epoch %s, want the leader's %s (the follower's is %s)", got, want, follower.Hub.Epoch())
	}
	if s, ok := follower.Hub.State("node-a"); ok && s.Acked != 0 {
		t.Errorf("the follower received acks: %+v", s)
	}

	q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q-ha"},
		Spec: v1alpha1.QuarantineSpec{PodName: "db-1", Reason: "ha"}}
	k.must(k.c.Create(k.ctx, q))
	eventually(t, "the leader to write Active with node-a enforced", func() error {
		k.must(k.c.Get(k.ctx, client.ObjectKeyFromObject(q), q))
		i := slices.IndexFunc(q.Status.Nodes, func(n v1alpha1.QuarantineNode) bool { return n.Node == "node-a" })
		if q.Status.Phase != v1alpha1.QuarantineActive || i < 0 || q.Status.Nodes[i].EnforcedAt == nil {
			return fmt.Errorf("status %+v", q.Status)
		}
		return nil
	})
}
