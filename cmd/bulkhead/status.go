package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

func init() { addCommand(newStatusCmd) }

type statusFlags struct {
	kubeconfig string
	controller string
	caFile     string
	tokenFile  string
	namespace  string
}

func newStatusCmd() *cobra.Command {
	var f statusFlags
	cmd := &cobra.Command{
		Use:   "status [--kubeconfig FILE] [--controller HOST:PORT [--token-file FILE] [--ca-file FILE]]",
		Short: "Realization per policy and per node",
		Long: `status prints, for every Zone, ZonePolicy and Quarantine, on how many nodes it is
enforced, read from the objects' status. With --controller it also asks the
controller (with your own token, checked by TokenReview and a
SubjectAccessReview for listing zones) for every node's generation and ack,
and for NetworkPolicies, whose realization is not stored in the API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVar(&f.controller, "controller", "", "controller stream address host:port; empty reads object status only")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "controller CA bundle (default: ConfigMap bulkhead-ca in --namespace)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "bearer token for the controller (default: the kubeconfig's token)")
	cmd.Flags().StringVar(&f.namespace, "namespace", "bulkhead-system", "namespace of the controller's ConfigMap bulkhead-ca")
	return cmd
}

func runStatus(ctx context.Context, w io.Writer, f statusFlags) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.kubeconfig != "" {
		rules.ExplicitPath = f.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return usageError{fmt.Errorf("loading kubeconfig: %w", err)}
	}
	c, err := client.New(cfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	rows, err := statusRows(ctx, c)
	if err != nil {
		return err
	}
	var resp *pb.StatusResponse
	if f.controller != "" {
		conn, err := dialController(ctx, c, cfg, controllerDial{address: f.controller, tokenFile: f.tokenFile, caFile: f.caFile, caNamespace: f.namespace})
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if resp, err = pb.NewPolicyStreamClient(conn).Status(ctx, &pb.StatusRequest{}); err != nil {
			return fmt.Errorf("asking the controller for status: %w", err)
		}
	}
	return writeStatus(w, rows, resp)
}

// statusRow is one object's realization line.
type statusRow struct {
	Kind, Name        string
	Enforced, Desired int32
	Ready             string
	Message           string
}

func rowFrom(kind, name string, r *v1alpha1.Realization, conds []metav1.Condition) statusRow {
	row := statusRow{Kind: kind, Name: name, Ready: "Unknown", Message: "no status yet"}
	if r != nil {
		row.Enforced, row.Desired = r.NodesEnforced, r.NodesDesired
	}
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted); c != nil && c.Status == "False" {
		row.Ready, row.Message = "Invalid", c.Message
		return row
	}
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionEnforced); c != nil {
		row.Ready, row.Message = string(c.Status), c.Message
	}
	return row
}

func statusRows(ctx context.Context, c client.Client) ([]statusRow, error) {
	var rows []statusRow
	var zones v1alpha1.ZoneList
	if err := c.List(ctx, &zones); err != nil {
		return nil, fmt.Errorf("listing zones: %w", err)
	}
	for _, z := range zones.Items {
		rows = append(rows, rowFrom("Zone", z.Name, z.Status.Realization, z.Status.Conditions))
	}
	var zps v1alpha1.ZonePolicyList
	if err := c.List(ctx, &zps); err != nil {
		return nil, fmt.Errorf("listing zone policies: %w", err)
	}
	for _, p := range zps.Items {
		rows = append(rows, rowFrom("ZonePolicy", p.Name, p.Status.Realization, p.Status.Conditions))
	}
	var qs v1alpha1.QuarantineList
	if err := c.List(ctx, &qs); err != nil {
		return nil, fmt.Errorf("listing quarantines: %w", err)
	}
	for _, q := range qs.Items {
		row := rowFrom("Quarantine", q.Namespace+"/"+q.Name, nil, q.Status.Conditions)
		for _, n := range q.Status.Nodes {
			row.Desired++
			if n.EnforcedAt != nil {
				row.Enforced++
			}
		}
		row.Message = fmt.Sprintf("phase %s; %s", orDash(string(q.Status.Phase)), row.Message)
		rows = append(rows, row)
	}
	return rows, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeStatus prints the object rows, then (from the controller) the
// NetworkPolicy rows and the per-node table.
func writeStatus(w io.Writer, rows []statusRow, resp *pb.StatusResponse) error {
	if resp != nil {
		for _, o := range resp.GetObjects() {
			if o.GetKind() != controllers.KindNetworkPolicy {
				continue
			}
			row := statusRow{Kind: o.GetKind(), Name: o.GetNamespace() + "/" + o.GetName(), Enforced: o.GetNodesEnforced(), Desired: o.GetNodesDesired(), Ready: "True"}
			switch {
			case o.GetAcceptError() != "":
				row.Ready, row.Message = "Invalid", o.GetAcceptError()
			case len(o.GetFailedNodes()) > 0:
				row.Ready, row.Message = "False", "failed on "+strings.Join(o.GetFailedNodes(), "; ")
			case len(o.GetLaggingNodes()) > 0:
				row.Ready, row.Message = "False", "waiting for "+strings.Join(o.GetLaggingNodes(), ", ")
			default:
				row.Message = fmt.Sprintf("enforced on %d/%d nodes", row.Enforced, row.Desired)
			}
			rows = append(rows, row)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Kind != rows[j].Kind {
			return rows[i].Kind < rows[j].Kind
		}
		return rows[i].Name < rows[j].Name
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tENFORCED\tREADY\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", r.Kind, r.Name, r.Enforced, r.Desired, r.Ready, r.Message)
	}
	if resp != nil {
		fmt.Fprintf(tw, "\nNODE\tCONNECTED\tGENERATION\tACKED\tERROR\t(epoch %s)\n", resp.GetEpoch())
		for _, n := range resp.GetNodes() {
			fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%s\t\n", n.GetNode(), n.GetConnected(), n.GetGeneration(), n.GetAckedGeneration(), orDash(n.GetError()))
		}
	}
	return tw.Flush()
}
