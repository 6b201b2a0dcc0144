package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

func init() { addCommand(newFlowsCmd) }

type flowsFlags struct {
	kubeconfig, controller, caFile, tokenFile, caNamespace string
	namespace, pod, zone, verdict                          string
	follow, edges                                          bool
	wait                                                   time.Duration
	limit                                                  int
	output                                                 string
}

func newFlowsCmd() *cobra.Command {
	var f flowsFlags
	cmd := &cobra.Command{
		Use:   "flows --controller HOST:PORT [-n NS] [--pod POD] [--zone Z] [--verdict V] [--follow] [-o table|json] | flows --edges",
		Short: "Stream flow records from every agent, or print the learned edges",
		Long: `flows streams the flow records that every agent reports, through the
controller (with your own token, checked by TokenReview and a
SubjectAccessReview for listing zones). Filters match either end of a flow.
Without --follow it stops after --limit records or --wait.

With --edges it prints the workload-level edges persisted in FlowEdgeSets
instead, read from the API server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runFlows(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	fl.StringVar(&f.controller, "controller", "", "controller stream address host:port (required without --edges)")
	fl.StringVar(&f.caFile, "ca-file", "", "controller CA bundle (default: ConfigMap bulkhead-ca in --controller-namespace)")
	fl.StringVar(&f.tokenFile, "token-file", "", "bearer token for the controller (default: the kubeconfig's token)")
	fl.StringVar(&f.caNamespace, "controller-namespace", "bulkhead-system", "namespace of the controller's ConfigMap bulkhead-ca")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "only flows with an end in this namespace")
	fl.StringVar(&f.pod, "pod", "", "only flows with an end in this pod")
	fl.StringVar(&f.zone, "zone", "", "only flows with an end in this zone")
	fl.StringVar(&f.verdict, "verdict", "", "only this verdict: FORWARDED, DROPPED or AUDIT")
	fl.BoolVarP(&f.follow, "follow", "f", false, "stream until interrupted")
	fl.DurationVar(&f.wait, "wait", 10*time.Second, "without --follow, stop after this long")
	fl.IntVar(&f.limit, "limit", 100, "without --follow, stop after this many records")
	fl.BoolVar(&f.edges, "edges", false, "print the persisted FlowEdgeSets instead of streaming")
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	return cmd
}

func (f *flowsFlags) validate() error {
	var errs []error
	if f.output != "table" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want table or json", f.output))
	}
	switch strings.ToUpper(f.verdict) {
	case "", dataplane.VerdictForwarded, dataplane.VerdictDropped, dataplane.VerdictAudit:
	default:
		errs = append(errs, fmt.Errorf("--verdict %q: want FORWARDED, DROPPED or AUDIT", f.verdict))
	}
	if !f.edges && f.controller == "" {
		errs = append(errs, errors.New("--controller is required to stream flows (or pass --edges)"))
	}
	if f.pod != "" && f.namespace == "" {
		errs = append(errs, errors.New("--pod needs -n/--namespace"))
	}
	return errors.Join(errs...)
}

func runFlows(ctx context.Context, w io.Writer, f flowsFlags) error {
	if err := f.validate(); err != nil {
		return usageError{err}
	}
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
	if f.edges {
		var list v1alpha1.FlowEdgeSetList
		if err := c.List(ctx, &list); err != nil {
			return fmt.Errorf("listing flow edge sets: %w", err)
		}
		return writeEdges(w, filterEdges(list.Items, f), f.output)
	}
	conn, err := dialController(ctx, c, cfg, controllerDial{address: f.controller, tokenFile: f.tokenFile, caFile: f.caFile, caNamespace: f.caNamespace})
	if err != nil {
		return err
	}
	defer conn.Close()
	if !f.follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.wait)
		defer cancel()
	}
	st, err := pb.NewPolicyStreamClient(conn).Flows(ctx, &pb.FlowsRequest{Namespace: f.namespace, Pod: f.pod, Zone: f.zone, Verdict: strings.ToUpper(f.verdict)})
	if err != nil {
		return fmt.Errorf("asking the controller for flows: %w", err)
	}
	var tw *tabwriter.Writer
	if f.output == "table" {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tNODE\tVERDICT\tDIR\tSOURCE\tDESTINATION\tPROTO\tPOLICY")
		defer tw.Flush()
	}
	for n := 0; f.follow || n < f.limit; n++ {
		m, err := st.Recv()
		if err != nil {
			// The deadline of --wait reaches the server too, which may end
			// the stream (EOF) before the client's own timer fires.
			if ctx.Err() != nil || !f.follow && (errors.Is(err, io.EOF) || status.Code(err) == codes.DeadlineExceeded) {
				return nil // --wait elapsed or interrupted
			}
			return fmt.Errorf("receiving flows: %w", err)
		}
		if tw == nil {
			fmt.Fprintln(w, m.GetJson())
			continue
		}
		r, err := stream.DecodeFlow(m)
		if err != nil {
			return fmt.Errorf("decoding a flow record: %w", err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.TimeOnly), r.Node, r.Verdict, r.Direction,
			flowEnd(r.Source, r.Src.String(), r.SrcPort), flowEnd(r.Destination, r.Dst.String(), r.DstPort), protoString(r.Protocol), r.RuleID)
		if f.follow {
			tw.Flush()
		}
	}
	return nil
}

func flowEnd(ep *dataplane.FlowEndpoint, ip string, port uint16) string {
	s := ip
	if ep != nil && ep.Pod != "" {
		s = ep.Namespace + "/" + ep.Pod + "(" + ip + ")"
	}
	if port != 0 {
		s += fmt.Sprintf(":%d", port)
	}
	return s
}

func protoString(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return fmt.Sprint(p)
}

func filterEdges(sets []v1alpha1.FlowEdgeSet, f flowsFlags) []v1alpha1.FlowEdge {
	match := func(ep v1alpha1.EdgeEndpoint) bool {
		w := ep.Workload
		if f.namespace == "" && f.zone == "" && f.pod == "" {
			return true
		}
		return w != nil && (f.namespace == "" || w.Namespace == f.namespace) && (f.zone == "" || w.Zone == f.zone) &&
			(f.pod == "" || w.Kind == "Pod" && w.Name == f.pod)
	}
	var out []v1alpha1.FlowEdge
	for _, s := range sets {
		for _, e := range s.Spec.Edges {
			if f.verdict != "" && !strings.EqualFold(string(e.Verdict), f.verdict) {
				continue
			}
			if match(e.Source) || match(e.Destination) {
				out = append(out, e)
			}
		}
	}
	return out
}

func edgeEnd(ep v1alpha1.EdgeEndpoint) string {
	s := ep.CIDR
	if w := ep.Workload; w != nil {
		s = w.Namespace + "/" + w.Kind + "/" + w.Name
		if w.Zone != "" {
			s += "[" + w.Zone + "]"
		}
	}
	if ep.Service != "" {
		s += " via svc/" + ep.Service
	}
	return s
}

func writeEdges(w io.Writer, edges []v1alpha1.FlowEdge, output string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if edges == nil {
			edges = []v1alpha1.FlowEdge{}
		}
		return enc.Encode(edges)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPORT\tVERDICT\tCONNECTIONS\tPACKETS\tBYTES\tLAST SEEN")
	for _, e := range edges {
		fmt.Fprintf(tw, "%s\t%s\t%s/%d\t%s\t%d\t%d\t%d\t%s\n", edgeEnd(e.Source), edgeEnd(e.Destination), e.Protocol, e.Port, e.Verdict, e.Connections, e.Packets, e.Bytes, e.LastSeen.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
