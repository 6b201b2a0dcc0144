package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
)

func init() {
	addCommand(newQuarantineCmd)
	addCommand(newReleaseCmd)
}

// kubeFlags are the connection flags of the quarantine commands.
type kubeFlags struct {
	kubeconfig string
	namespace  string
}

func (k *kubeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVarP(&k.namespace, "namespace", "n", "", "namespace (default: the kubeconfig context's, else default)")
}

// kubeSession is a connection to the API server and what the kubeconfig
// says about its user.
type kubeSession struct {
	cfg       *rest.Config
	c         client.Client
	cs        kubernetes.Interface
	namespace string
	// contextUser is the current context's user entry name.
	contextUser string
}

func (k kubeFlags) connect() (*kubeSession, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, usageError{fmt.Errorf("--kubeconfig: loading kubeconfig: %w", err)}
	}
	ns := k.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	s := &kubeSession{cfg: cfg, namespace: ns}
	if raw, err := cc.RawConfig(); err == nil {
		if ctx, ok := raw.Contexts[raw.CurrentContext]; ok && ctx != nil {
			s.contextUser = ctx.AuthInfo
		}
	}
	if s.c, err = client.New(cfg, client.Options{Scheme: controllers.Scheme()}); err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	if s.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("creating clientset: %w", err)
	}
	return s, nil
}

// whoami returns the user the API server authenticates this kubeconfig
// as (SelfSubjectReview), falling back to the current context's user name.
func (s *kubeSession) whoami(ctx context.Context) string {
	r, err := s.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err == nil && r.Status.UserInfo.Username != "" {
		return r.Status.UserInfo.Username
	}
	return s.contextUser
}

type quarantineFlags struct {
	kube      kubeFlags
	selector  string
	reason    string
	allowFrom []string
	allowTo   []string
	allowDNS  bool
	duration  time.Duration
	noCut     bool
	wait      bool
	timeout   time.Duration
	name      string
}

func newQuarantineCmd() *cobra.Command {
	var f quarantineFlags
	cmd := &cobra.Command{
		Use:   "quarantine (pod/NAME | -l SELECTOR) -n NS --reason TEXT [--allow-from PEER]... [--allow-to PEER]... [--allow-dns] [--for 2h] [--no-cut] [--wait]",
		Short: "Isolate pods now, with a forensics allow-list (see docs/quarantine.md)",
		Long: `quarantine creates a Quarantine object: the selected pods can reach nothing
and nothing reaches them, except the forensics allow-list (and DNS with
--allow-dns). Established connections are cut unless --no-cut.

PEER is one of
  cidr:PREFIX[:PROTO/PORT[-END]]          cidr:10.0.0.1/32:TCP/22, cidr:fd00::1/128
  zone:NAME[:PROTO/PORT[-END]]            zone:forensics:TCP/443, zone:world
  pod:[NS/]KEY=VALUE[,KEY=VALUE][:PROTO/PORT[-END]]
                                          pod:sec/app=collector:UDP/514
PROTO is TCP, UDP or SCTP. A pod peer without NS/ means the quarantine's
namespace.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQuarantine(cmd.Context(), cmd.OutOrStdout(), f, args)
		},
	}
	f.kube.add(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.selector, "selector", "l", "", "quarantine every pod of the namespace matching this label selector, including later ones")
	fl.StringVar(&f.reason, "reason", "", "why, for the audit trail (required)")
	fl.StringArrayVar(&f.allowFrom, "allow-from", nil, "ingress forensics peer (repeatable), see PEER")
	fl.StringArrayVar(&f.allowTo, "allow-to", nil, "egress forensics peer (repeatable), see PEER")
	fl.BoolVar(&f.allowDNS, "allow-dns", false, "keep DNS (UDP and TCP 53) to kube-dns open")
	fl.DurationVar(&f.duration, "for", 0, "expire after this long (default: until released)")
	fl.BoolVar(&f.noCut, "no-cut", false, "keep established connections (default: cut them)")
	fl.BoolVar(&f.wait, "wait", false, "wait until the quarantine is Active and print per-node enforcement")
	fl.DurationVar(&f.timeout, "timeout", 60*time.Second, "how long --wait waits")
	fl.StringVar(&f.name, "name", "", "name of the Quarantine object (default: generated from the pod or selector)")
	cmd.AddCommand(newQuarantineListCmd(), newQuarantineShowCmd())
	return cmd
}

// buildQuarantine turns the flags into the object to create; namespace is
// the quarantine's. Every flag problem is reported at once.
func buildQuarantine(f quarantineFlags, args []string, namespace string) (*v1alpha1.Quarantine, error) {
	var errs []error
	q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: f.name}}
	switch {
	case len(args) == 1 && f.selector != "":
		errs = append(errs, errors.New("give either pod/NAME or --selector, not both"))
	case len(args) == 1:
		name, ok := strings.CutPrefix(args[0], "pod/")
		if !ok {
			name, ok = strings.CutPrefix(args[0], "pods/")
		}
		if !ok || name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("argument %q: want pod/NAME", args[0]))
		}
		q.Spec.PodName = name
		if q.Name == "" {
			q.GenerateName = generateBase(name)
		}
	case f.selector != "":
		sel, err := metav1.ParseToLabelSelector(f.selector)
		if err != nil {
			errs = append(errs, fmt.Errorf("--selector %q: %w", f.selector, err))
		} else {
			q.Spec.PodSelector = sel
		}
		if q.Name == "" {
			q.GenerateName = "q-selector-"
		}
	default:
		errs = append(errs, errors.New("name a pod (pod/NAME) or give --selector"))
	}
	if strings.TrimSpace(f.reason) == "" {
		errs = append(errs, errors.New("--reason is required and must not be blank"))
	}
	q.Spec.Reason = f.reason
	for _, s := range f.allowFrom {
		p, err := parseForensicsPeer(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--allow-from %q: %w", s, err))
			continue
		}
		q.Spec.Allow.Ingress = append(q.Spec.Allow.Ingress, p)
	}
	for _, s := range f.allowTo {
		p, err := parseForensicsPeer(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--allow-to %q: %w", s, err))
			continue
		}
		q.Spec.Allow.Egress = append(q.Spec.Allow.Egress, p)
	}
	q.Spec.AllowDNS = f.allowDNS
	if f.duration < 0 {
		errs = append(errs, fmt.Errorf("--for %s: must be positive", f.duration))
	} else if f.duration > 0 {
		q.Spec.ExpireAfter = &metav1.Duration{Duration: f.duration}
	}
	cut := !f.noCut
	q.Spec.CutConnections = &cut
	if err := errors.Join(errs...); err != nil {
		return nil, usageError{err}
	}
	return q, nil
}

// generateBase is the generateName prefix for a pod's quarantine.
func generateBase(pod string) string {
	const max = 40
	if len(pod) > max {
		pod = strings.TrimRight(pod[:max], "-.")
	}
	return "q-" + pod + "-"
}

var portSpec = regexp.MustCompile(`^(?i)(TCP|UDP|SCTP)/([0-9]+)(?:-([0-9]+))?$`)

// parsePeer parses the PEER syntax (see the command's help and
// docs/quarantine.md).
func parseForensicsPeer(s string) (v1alpha1.ForensicsPeer, error) {
	var p v1alpha1.ForensicsPeer
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return p, errors.New("want cidr:PREFIX, zone:NAME or pod:[NS/]KEY=VALUE, each optionally followed by :PROTO/PORT")
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && portSpec.MatchString(rest[i+1:]) {
		port, err := parsePort(rest[i+1:])
		if err != nil {
			return p, err
		}
		p.Ports = []v1alpha1.PolicyPort{port}
		rest = rest[:i]
	}
	switch kind {
	case "cidr":
		pfx, err := netip.ParsePrefix(rest)
		if err != nil {
			return p, fmt.Errorf("cidr: %w", err)
		}
		if pfx.Masked() != pfx {
			return p, fmt.Errorf("cidr %s has host bits set; did you mean %s?", rest, pfx.Masked())
		}
		p.CIDR = pfx.String()
	case "zone":
		if !zoneName.MatchString(rest) || len(rest) > 63 {
			return p, fmt.Errorf("zone %q: want a lower-case DNS label (or unzoned, world)", rest)
		}
		p.Zone = rest
	case "pod", "pods":
		ns, sel, hasNS := strings.Cut(rest, "/")
		if !hasNS {
			ns, sel = "", rest
		}
		if hasNS && ns == "" {
			return p, errors.New("pod: empty namespace before /")
		}
		if sel == "" {
			return p, errors.New("pod: want KEY=VALUE labels after the namespace")
		}
		ls, err := labels.ConvertSelectorToLabelsMap(sel)
		if err != nil {
			return p, fmt.Errorf("pod labels %q: %w", sel, err)
		}
		zp := &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: ls}}
		if ns != "" {
			zp.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
		}
		p.Pods = zp
	default:
		return p, fmt.Errorf("unknown peer kind %q: want cidr, zone or pod", kind)
	}
	return p, nil
}

var zoneName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func parsePort(s string) (v1alpha1.PolicyPort, error) {
	m := portSpec.FindStringSubmatch(s)
	if m == nil {
		return v1alpha1.PolicyPort{}, fmt.Errorf("port %q: want PROTO/PORT or PROTO/PORT-END", s)
	}
	pp := v1alpha1.PolicyPort{Protocol: v1alpha1.Protocol(strings.ToUpper(m[1]))}
	port, err := strconv.Atoi(m[2])
	if err != nil || port < 1 || port > 65535 {
		return pp, fmt.Errorf("port %q: %s is out of range 1..65535", s, m[2])
	}
	v := intstr.FromInt32(int32(port))
	pp.Port = &v
	if m[3] != "" {
		end, err := strconv.Atoi(m[3])
		if err != nil || end < port || end > 65535 {
			return pp, fmt.Errorf("port %q: end %s must be in %d..65535", s, m[3], port)
		}
		e := int32(end)
		pp.EndPort = &e
	}
	return pp, nil
}

func runQuarantine(ctx context.Context, w io.Writer, f quarantineFlags, args []string) error {
	if f.wait && f.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: must be positive", f.timeout)}
	}
	// Validate before connecting, so that flag errors come first.
	if _, err := buildQuarantine(f, args, "x"); err != nil {
		return err
	}
	s, err := f.kube.connect()
	if err != nil {
		return err
	}
	q, err := buildQuarantine(f, args, s.namespace)
	if err != nil {
		return err
	}
	if q.Spec.PodName != "" {
		var pod corev1.Pod
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: q.Spec.PodName}, &pod); err != nil {
			return fmt.Errorf("pod/%s in namespace %s: %w", q.Spec.PodName, s.namespace, err)
		}
	}
	q.Spec.RequestedBy = s.whoami(ctx)
	if err := s.c.Create(ctx, q); err != nil {
		return fmt.Errorf("creating quarantine in namespace %s: %w", s.namespace, err)
	}
	created := time.Now()
	fmt.Fprintf(w, "quarantine %s/%s created (requested by %s)\n", q.Namespace, q.Name, q.Spec.RequestedBy)
	if !f.wait {
		return nil
	}
	got, err := waitActive(ctx, s.c, client.ObjectKeyFromObject(q), f.timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Active after %s (observed by the CLI)\n", time.Since(created).Round(time.Millisecond))
	return writeNodes(w, got)
}

// waitActive polls until the quarantine is Active, or fails with what its
// status says.
func waitActive(ctx context.Context, c client.Client, key client.ObjectKey, timeout time.Duration) (*v1alpha1.Quarantine, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var q v1alpha1.Quarantine
	for {
		err := c.Get(ctx, key, &q)
		if err == nil {
			switch q.Status.Phase {
			case v1alpha1.QuarantineActive:
				return &q, nil
			case v1alpha1.QuarantineExpired, v1alpha1.QuarantineReleased:
				return &q, fmt.Errorf("quarantine %s ended (%s) before it was active", key, q.Status.Phase)
			}
		}
		select {
		case <-ctx.Done():
			why := "phase " + string(q.Status.Phase)
			if q.Status.Phase == "" {
				why = "no status yet (is the controller running?)"
			}
			for _, n := range q.Status.Nodes {
				if n.Error != "" {
					why += fmt.Sprintf("; node %s: %s", n.Node, n.Error)
				}
			}
			for _, cond := range q.Status.Conditions {
				if cond.Status != metav1.ConditionTrue && cond.Message != "" {
					why += "; " + cond.Type + ": " + cond.Message
				}
			}
			return nil, fmt.Errorf("--wait: quarantine %s not active within %s: %s", key, timeout, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeNodes(w io.Writer, q *v1alpha1.Quarantine) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tENFORCED AT\tAFTER CREATE\tERROR")
	for _, n := range q.Status.Nodes {
		at, after := "-", "-"
		if n.EnforcedAt != nil {
			at = n.EnforcedAt.UTC().Format(metav1.RFC3339Micro)
			// creationTimestamp has 1s resolution: "after" may be up to
			// 1s too long.
			after = n.EnforcedAt.Sub(q.CreationTimestamp.Time).Round(time.Millisecond).String()
		}
		errText := n.Error
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, at, after, errText)
	}
	return tw.Flush()
}

func newReleaseCmd() *cobra.Command {
	var k kubeFlags
	cmd := &cobra.Command{
		Use:   "release NAME -n NS",
		Short: "End a quarantine; its pods get the policy that is current now (the object stays for the audit trail)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := k.connect()
			if err != nil {
				return err
			}
			q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: args[0]}}
			patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"released":true}}`))
			if err := s.c.Patch(cmd.Context(), q, patch); err != nil {
				return fmt.Errorf("releasing quarantine %s/%s: %w", s.namespace, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "quarantine %s/%s released\n", s.namespace, args[0])
			return nil
		},
	}
	k.add(cmd)
	return cmd
}

func newQuarantineListCmd() *cobra.Command {
	var k kubeFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "list [-n NS | -A]",
		Short: "List quarantines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := k.connect()
			if err != nil {
				return err
			}
			var l v1alpha1.QuarantineList
			var opts []client.ListOption
			if !all {
				opts = append(opts, client.InNamespace(s.namespace))
			}
			if err := s.c.List(cmd.Context(), &l, opts...); err != nil {
				return fmt.Errorf("listing quarantines: %w", err)
			}
			return writeList(cmd.OutOrStdout(), l.Items, time.Now())
		},
	}
	k.add(cmd)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list every namespace")
	return cmd
}

func target(q *v1alpha1.Quarantine) string {
	if q.Spec.PodName != "" {
		return "pod/" + q.Spec.PodName
	}
	if q.Spec.PodSelector != nil {
		if sel, err := metav1.LabelSelectorAsSelector(q.Spec.PodSelector); err == nil {
			return "-l " + sel.String()
		}
	}
	return "?"
}

func writeList(w io.Writer, items []v1alpha1.Quarantine, now time.Time) error {
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tPHASE\tTARGET\tPODS\tREQUESTED BY\tAGE\tREASON")
	for i := range items {
		q := &items[i]
		phase := string(q.Status.Phase)
		if phase == "" {
			phase = "-"
		}
		reqBy := q.Spec.RequestedBy
		if reqBy == "" {
			reqBy = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", q.Namespace, q.Name, phase, target(q),
			len(q.Status.MatchedPods), reqBy, now.Sub(q.CreationTimestamp.Time).Round(time.Second), oneLine(q.Spec.Reason, 60))
	}
	return tw.Flush()
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}

func newQuarantineShowCmd() *cobra.Command {
	var k kubeFlags
	cmd := &cobra.Command{
		Use:   "show NAME -n NS",
		Short: "Show a quarantine's audit trail: phase, reason, requester, pods, per-node enforcement, events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := k.connect()
			if err != nil {
				return err
			}
			var q v1alpha1.Quarantine
			if err := s.c.Get(cmd.Context(), client.ObjectKey{Namespace: s.namespace, Name: args[0]}, &q); err != nil {
				return fmt.Errorf("quarantine %s/%s: %w", s.namespace, args[0], err)
			}
			evs, err := s.cs.CoreV1().Events(s.namespace).List(cmd.Context(), metav1.ListOptions{
				FieldSelector: fields.AndSelectors(
					fields.OneTermEqualSelector("involvedObject.name", q.Name),
					fields.OneTermEqualSelector("involvedObject.kind", "Quarantine")).String(),
			})
			if err != nil {
				return fmt.Errorf("listing events of quarantine %s/%s: %w", s.namespace, args[0], err)
			}
			return writeShow(cmd.OutOrStdout(), &q, evs.Items)
		},
	}
	k.add(cmd)
	return cmd
}

func writeShow(w io.Writer, q *v1alpha1.Quarantine, events []corev1.Event) error {
	ts := func(t *metav1.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tsMicro := func(t *metav1.MicroTime) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(metav1.RFC3339Micro)
	}
	or := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(w, "Name:          %s/%s\n", q.Namespace, q.Name)
	fmt.Fprintf(w, "Phase:         %s\n", or(string(q.Status.Phase)))
	fmt.Fprintf(w, "Target:        %s\n", target(q))
	fmt.Fprintf(w, "Reason:        %s\n", q.Spec.Reason)
	fmt.Fprintf(w, "Requested by:  %s (authenticated: %s)\n", or(q.Spec.RequestedBy), or(q.Status.AuthenticatedRequester))
	created := q.CreationTimestamp
	fmt.Fprintf(w, "Created:       %s\n", ts(&created))
	fmt.Fprintf(w, "Enforced:      %s\n", tsMicro(q.Status.EnforcedAt))
	expiry := controllers.QuarantineExpiry(q)
	if expiry.IsZero() {
		fmt.Fprintf(w, "Expires:       never (until released)\n")
	} else {
		fmt.Fprintf(w, "Expires:       %s\n", expiry.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Ended:         %s\n", tsMicro(q.Status.EndedAt))
	cut := q.Spec.CutConnections == nil || *q.Spec.CutConnections
	fmt.Fprintf(w, "Cut conns:     %t\n", cut)
	fmt.Fprintf(w, "Allow DNS:     %t\n", q.Spec.AllowDNS)
	fmt.Fprintf(w, "Allow from:    %s\n", peersString(q.Spec.Allow.Ingress))
	fmt.Fprintf(w, "Allow to:      %s\n", peersString(q.Spec.Allow.Egress))
	pods := "-"
	if len(q.Status.MatchedPods) > 0 {
		pods = strings.Join(q.Status.MatchedPods, ", ")
	}
	fmt.Fprintf(w, "Matched pods:  %s\n", pods)
	fmt.Fprintln(w, "Nodes:")
	if len(q.Status.Nodes) == 0 {
		fmt.Fprintln(w, "  (none)")
	} else {
		var b strings.Builder
		if err := writeNodes(&b, q); err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if err := writeBlocked(w, q); err != nil {
		return err
	}
	fmt.Fprintln(w, "Events:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  (none)")
		return nil
	}
	sort.SliceStable(events, func(i, j int) bool { return eventTime(events[i]).Before(eventTime(events[j])) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tTYPE\tREASON\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", eventTime(e).UTC().Format(time.RFC3339), e.Type, e.Reason, e.Message)
	}
	return tw.Flush()
}

// writeBlocked prints the refused attempts kept in status.blockedFlows.
func writeBlocked(w io.Writer, q *v1alpha1.Quarantine) error {
	fl := q.Status.BlockedFlows
	if len(fl) == 0 {
		fmt.Fprintf(w, "Blocked flows: none recorded\n")
		return nil
	}
	fmt.Fprintf(w, "Blocked flows: %d recorded, latest %d:\n", q.Status.BlockedFlowsTotal, len(fl))
	pod := func(addr, p string) string {
		if p == "" {
			return addr
		}
		return addr + " (" + p + ")"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tNODE\tDIR\tPROTO\tSOURCE\tDESTINATION")
	for _, f := range fl {
		dir := f.Direction
		if dir == "" {
			dir = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", f.Time.UTC().Format(metav1.RFC3339Micro), f.Node, dir, f.Protocol,
			pod(f.Source, f.SourcePod), pod(f.Destination, f.DestinationPod))
	}
	return tw.Flush()
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// peersString renders peers back in the PEER syntax.
func peersString(ps []v1alpha1.ForensicsPeer) string {
	if len(ps) == 0 {
		return "-"
	}
	var out []string
	for _, p := range ps {
		var s string
		switch {
		case p.CIDR != "":
			s = "cidr:" + p.CIDR
		case p.Zone != "":
			s = "zone:" + p.Zone
		case p.Pods != nil:
			s = "pod:"
			if p.Pods.NamespaceSelector != nil {
				if ns, ok := p.Pods.NamespaceSelector.MatchLabels[corev1.LabelMetadataName]; ok && len(p.Pods.NamespaceSelector.MatchLabels) == 1 && len(p.Pods.NamespaceSelector.MatchExpressions) == 0 {
					s += ns + "/"
				} else if sel, err := metav1.LabelSelectorAsSelector(p.Pods.NamespaceSelector); err == nil {
					s += "{" + sel.String() + "}/"
				}
			}
			if sel, err := metav1.LabelSelectorAsSelector(p.Pods.PodSelector); err == nil {
				s += sel.String()
			}
		}
		for _, pp := range p.Ports {
			proto := string(pp.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			s += ":" + proto
			if pp.Port != nil {
				s += "/" + pp.Port.String()
				if pp.EndPort != nil {
					s += "-" + strconv.Itoa(int(*pp.EndPort))
				}
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}
