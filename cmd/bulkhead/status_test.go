package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

func TestWriteStatus(t *testing.T) {
	rows := []statusRow{{Kind: "ZonePolicy", Name: "web-to-db", Enforced: 1, Desired: 2, Ready: "False", Message: "enforced on 1/2 nodes; failed on node-b: boom"}}
	resp := &pb.StatusResponse{Epoch: "e1",
		Nodes: []*pb.NodeStatus{{Node: "node-a", Connected: true, Generation: 4, AckedGeneration: 4}, {Node: "node-b", Generation: 4, AckedGeneration: 3, Error: "boom"}},
		Objects: []*pb.ObjectStatus{
			{Kind: "NetworkPolicy", Namespace: "shop", Name: "db", NodesDesired: 2, NodesEnforced: 1, FailedNodes: []string{"node-b: boom"}},
			{Kind: "NetworkPolicy", Namespace: "shop", Name: "web", NodesDesired: 1, NodesEnforced: 1},
			{Kind: "Zone", Name: "pci", NodesDesired: 1, NodesEnforced: 1},
		}}
	var b strings.Builder
	if err := writeStatus(&b, rows, resp); err != nil {
		t.Fatal(err)
	}
	want := `KIND           NAME       ENFORCED  READY  MESSAGE
NetworkPolicy  shop/db    1/2       False  failed on node-b: boom
NetworkPolicy  shop/web   1/1       True   enforced on 1/1 nodes
ZonePolicy     web-to-db  1/2       False  enforced on 1/2 nodes; failed on node-b: boom

NODE    CONNECTED  GENERATION  ACKED  ERROR  (epoch e1)
node-a  true       4           4      -      
node-b  false      4           3      boom   
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Fatalf("status output (-want +got):\n%s", d)
	}
}
