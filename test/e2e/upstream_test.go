package e2e

import (
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// upstreamCatalog replays one engine scenario per upstream admin policy
// action: Accept (ClusterNetworkPolicy), Deny and Pass
// (AdminNetworkPolicy), and the baseline (BaselineAdminNetworkPolicy).
var upstreamCatalog = []string{
	"upstream-cnp-priority-order",
	"upstream-anp-deny-overrides-np-allow",
	"upstream-anp-pass-delegates-to-np",
	"upstream-banp-only-without-np",
}

func TestUpstreamAdminPolicyMatrices(t *testing.T) {
	testenv.RequireRoot(t)
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
	if os.Getenv("BULKHEAD_E2E_ALL") != "" {
		t.Skip("TestScenarioMatrices replays every scenario already")
	}
	for _, name := range upstreamCatalog {
		t.Run(name, func(t *testing.T) {
			for _, backend := range backends(t) {
				t.Run(backend, func(t *testing.T) { runScenario(t, name, backend) })
			}
		})
	}
}
