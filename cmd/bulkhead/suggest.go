package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/suggest"
)

func init() { addCommand(newSuggestCmd) }

// labelSuggestion marks objects that `suggest apply` wrote.
const labelSuggestion = "bulkhead.dev/suggestion"

func newSuggestCmd() *cobra.Command {
	var kf kubeFlags
	cmd := &cobra.Command{
		Use:   "suggest list|show NAME|diff NAME|apply NAME [--enforce]",
		Short: "Review and apply learned policy suggestions (see docs/learning.md)",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&kf.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	withSession := func(fn func(ctx context.Context, s *kubeSession, w io.Writer, args []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			s, err := kf.connect()
			if err != nil {
				return err
			}
			return fn(c.Context(), s, c.OutOrStdout(), args)
		}
	}
	cmd.AddCommand(&cobra.Command{Use: "list", Short: "List suggestions", Args: usageArgs(cobra.NoArgs),
		RunE: withSession(func(ctx context.Context, s *kubeSession, w io.Writer, _ []string) error {
			return suggestList(ctx, s.c, w)
		})})
	cmd.AddCommand(&cobra.Command{Use: "show NAME", Short: "Show a suggestion's policies and evidence", Args: usageArgs(cobra.ExactArgs(1)),
		RunE: withSession(func(ctx context.Context, s *kubeSession, w io.Writer, a []string) error {
			return suggestShow(ctx, s.c, w, a[0])
		})})
	cmd.AddCommand(&cobra.Command{Use: "diff NAME", Short: "Show what apply would change in the cluster", Args: usageArgs(cobra.ExactArgs(1)),
		RunE: withSession(func(ctx context.Context, s *kubeSession, w io.Writer, a []string) error {
			return suggestDiff(ctx, s.c, w, a[0], true)
		})})
	var enforce bool
	apply := &cobra.Command{Use: "apply NAME [--enforce]", Short: "Stage a suggestion in Audit, or enforce a staged one", Args: usageArgs(cobra.ExactArgs(1)),
		RunE: withSession(func(ctx context.Context, s *kubeSession, w io.Writer, a []string) error {
			return suggestApply(ctx, s.c, w, a[0], enforce, time.Now())
		})}
	apply.Flags().BoolVar(&enforce, "enforce", false, "promote a Staged suggestion to Enforce")
	cmd.AddCommand(apply)
	return cmd
}

func usageArgs(f cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := f(c, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func getSuggestion(ctx context.Context, c client.Client, name string) (*v1alpha1.PolicySuggestion, error) {
	var ps v1alpha1.PolicySuggestion
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &ps); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, usageError{fmt.Errorf("policysuggestion %q not found", name)}
		}
		return nil, fmt.Errorf("reading policysuggestion %s: %w", name, err)
	}
	return &ps, nil
}

func suggestList(ctx context.Context, c client.Client, w io.Writer) error {
	var l v1alpha1.PolicySuggestionList
	if err := c.List(ctx, &l); err != nil {
		return fmt.Errorf("listing policysuggestions: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tSTATE\tRULES\tLAST CHANGE")
	for _, ps := range l.Items {
		scope := "namespace/" + ps.Spec.Scope.Namespace
		if ps.Spec.Scope.Zone != "" {
			scope = "zone/" + ps.Spec.Scope.Zone
		}
		lc := "-"
		if ps.Status.LastChange != nil {
			lc = ps.Status.LastChange.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ps.Name, scope, ps.Spec.State, len(ps.Spec.Rules), lc)
	}
	return tw.Flush()
}

func suggestShow(ctx context.Context, c client.Client, w io.Writer, name string) error {
	ps, err := getSuggestion(ctx, c, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Name:   %s\nState:  %s\n", ps.Name, ps.Spec.State)
	for _, cnd := range ps.Status.Conditions {
		fmt.Fprintf(w, "%s: %s (%s) %s\n", cnd.Type, cnd.Status, cnd.Reason, cnd.Message)
	}
	fmt.Fprintln(w, "\nRules:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tRULE\tFLOWS\tPODS\tFIRST SEEN\tLAST SEEN")
	for _, r := range ps.Spec.Rules {
		e := r.Evidence
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Policy, r.Description, e.Flows, e.SourcePods,
			e.FirstSeen.UTC().Format(time.RFC3339), e.LastSeen.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ps.Spec.ZonePolicies != "" {
		fmt.Fprintf(w, "\nZonePolicies:\n%s", ps.Spec.ZonePolicies)
	}
	if ps.Spec.NetworkPolicies != "" {
		fmt.Fprintf(w, "\nNetworkPolicies:\n%s", ps.Spec.NetworkPolicies)
	}
	return nil
}

// desired is what applying a suggestion writes.
type desired struct {
	zps []v1alpha1.ZonePolicy
	nps []networkingv1.NetworkPolicy
}

func parseSuggestion(ps *v1alpha1.PolicySuggestion) (desired, error) {
	var d desired
	var err error
	if d.zps, err = suggest.ParseZonePolicies(ps.Spec.ZonePolicies); err != nil {
		return d, usageError{fmt.Errorf("policysuggestion %s: %w", ps.Name, err)}
	}
	if d.nps, err = suggest.ParseNetworkPolicies(ps.Spec.NetworkPolicies); err != nil {
		return d, usageError{fmt.Errorf("policysuggestion %s: %w", ps.Name, err)}
	}
	return d, nil
}

func specYAML(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// lineDiff prints old and new with -/+ for lines that differ, keyed on
// line equality in order (enough for small spec documents).
func lineDiff(w io.Writer, old, cur string) {
	a, b := strings.Split(strings.TrimSuffix(old, "\n"), "\n"), strings.Split(strings.TrimSuffix(cur, "\n"), "\n")
	inB := map[string]int{}
	for _, l := range b {
		inB[l]++
	}
	inA := map[string]int{}
	for _, l := range a {
		inA[l]++
	}
	for _, l := range a {
		if inB[l] == 0 {
			fmt.Fprintf(w, "    - %s\n", l)
		} else {
			inB[l]--
		}
	}
	for _, l := range b {
		if inA[l] == 0 {
			fmt.Fprintf(w, "    + %s\n", l)
		} else {
			inA[l]--
		}
	}
}

// suggestDiff prints, per object, whether apply would create, update or
// leave it; withNPs includes the NetworkPolicies (which only --enforce
// writes).
func suggestDiff(ctx context.Context, c client.Client, w io.Writer, name string, withNPs bool) error {
	ps, err := getSuggestion(ctx, c, name)
	if err != nil {
		return err
	}
	d, err := parseSuggestion(ps)
	if err != nil {
		return err
	}
	changes := 0
	for _, zp := range d.zps {
		var cur v1alpha1.ZonePolicy
		err := c.Get(ctx, client.ObjectKey{Name: zp.Name}, &cur)
		switch {
		case apierrors.IsNotFound(err):
			changes++
			fmt.Fprintf(w, "create ZonePolicy/%s\n", zp.Name)
			lineDiff(w, "", specYAML(zp.Spec))
		case err != nil:
			return fmt.Errorf("reading zonepolicy %s: %w", zp.Name, err)
		case specYAML(cur.Spec) != specYAML(zp.Spec):
			changes++
			fmt.Fprintf(w, "update ZonePolicy/%s\n", zp.Name)
			lineDiff(w, specYAML(cur.Spec), specYAML(zp.Spec))
		default:
			fmt.Fprintf(w, "unchanged ZonePolicy/%s\n", zp.Name)
		}
	}
	if withNPs {
		for _, np := range d.nps {
			var cur networkingv1.NetworkPolicy
			err := c.Get(ctx, client.ObjectKey{Namespace: np.Namespace, Name: np.Name}, &cur)
			switch {
			case apierrors.IsNotFound(err):
				changes++
				fmt.Fprintf(w, "create NetworkPolicy/%s/%s (written by apply --enforce)\n", np.Namespace, np.Name)
				lineDiff(w, "", specYAML(np.Spec))
			case err != nil:
				return fmt.Errorf("reading networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
			case specYAML(cur.Spec) != specYAML(np.Spec):
				changes++
				fmt.Fprintf(w, "update NetworkPolicy/%s/%s (written by apply --enforce)\n", np.Namespace, np.Name)
				lineDiff(w, specYAML(cur.Spec), specYAML(np.Spec))
			default:
				fmt.Fprintf(w, "unchanged NetworkPolicy/%s/%s\n", np.Namespace, np.Name)
			}
		}
	}
	if z := ps.Spec.Scope.Zone; z != "" {
		var zone v1alpha1.Zone
		if err := c.Get(ctx, client.ObjectKey{Name: z}, &zone); err != nil {
			return fmt.Errorf("reading zone %s: %w", z, err)
		}
		fmt.Fprintf(w, "zone %s mode %s: apply stages Audit, apply --enforce sets Enforce\n", z, modeOf(&zone))
	}
	fmt.Fprintf(w, "%d change(s)\n", changes)
	return nil
}

func modeOf(z *v1alpha1.Zone) v1alpha1.ZoneMode {
	if z.Spec.Mode == "" {
		return v1alpha1.ZoneModeEnforce
	}
	return z.Spec.Mode
}

func upsertZonePolicy(ctx context.Context, c client.Client, name string, zp v1alpha1.ZonePolicy) error {
	var cur v1alpha1.ZonePolicy
	err := c.Get(ctx, client.ObjectKey{Name: zp.Name}, &cur)
	if apierrors.IsNotFound(err) {
		zp.Labels = map[string]string{labelSuggestion: name}
		zp.ResourceVersion = ""
		if err := c.Create(ctx, &zp); err != nil {
			return fmt.Errorf("creating zonepolicy %s: %w", zp.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading zonepolicy %s: %w", zp.Name, err)
	}
	cur.Spec = zp.Spec
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	cur.Labels[labelSuggestion] = name
	if err := c.Update(ctx, &cur); err != nil {
		return fmt.Errorf("updating zonepolicy %s: %w", zp.Name, err)
	}
	return nil
}

func upsertNetworkPolicy(ctx context.Context, c client.Client, name string, np networkingv1.NetworkPolicy) error {
	var cur networkingv1.NetworkPolicy
	err := c.Get(ctx, client.ObjectKey{Namespace: np.Namespace, Name: np.Name}, &cur)
	if apierrors.IsNotFound(err) {
		np.Labels = map[string]string{labelSuggestion: name}
		if err := c.Create(ctx, &np); err != nil {
			return fmt.Errorf("creating networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	cur.Spec = np.Spec
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	cur.Labels[labelSuggestion] = name
	if err := c.Update(ctx, &cur); err != nil {
		return fmt.Errorf("updating networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	return nil
}

func setZoneMode(ctx context.Context, c client.Client, zone string, mode v1alpha1.ZoneMode, onlyFrom ...v1alpha1.ZoneMode) (v1alpha1.ZoneMode, error) {
	var z v1alpha1.Zone
	if err := c.Get(ctx, client.ObjectKey{Name: zone}, &z); err != nil {
		return "", fmt.Errorf("reading zone %s: %w", zone, err)
	}
	old := modeOf(&z)
	if old == mode {
		return old, nil
	}
	if len(onlyFrom) > 0 {
		ok := false
		for _, m := range onlyFrom {
			ok = ok || m == old
		}
		if !ok {
			return old, nil
		}
	}
	z.Spec.Mode = mode
	if err := c.Update(ctx, &z); err != nil {
		return old, fmt.Errorf("setting zone %s mode %s: %w", zone, mode, err)
	}
	return old, nil
}

// suggestApply stages a suggestion (ZonePolicies written, its zone from
// Learn to Audit, state Staged) or, with enforce, promotes a Staged one
// (NetworkPolicies written, zone Enforce, state Enforced).
func suggestApply(ctx context.Context, c client.Client, w io.Writer, name string, enforce bool, now time.Time) error {
	ps, err := getSuggestion(ctx, c, name)
	if err != nil {
		return err
	}
	d, err := parseSuggestion(ps)
	if err != nil {
		return err
	}
	if len(d.zps) == 0 && len(d.nps) == 0 {
		return usageError{fmt.Errorf("policysuggestion %s suggests no policy yet", name)}
	}
	switch {
	case ps.Spec.State == v1alpha1.SuggestionRejected:
		return usageError{fmt.Errorf("policysuggestion %s is Rejected", name)}
	case enforce && ps.Spec.State != v1alpha1.SuggestionStaged && ps.Spec.State != v1alpha1.SuggestionEnforced:
		return usageError{fmt.Errorf("policysuggestion %s is %s: stage it first with `bulkhead suggest apply %s`", name, ps.Spec.State, name)}
	case !enforce && ps.Spec.State == v1alpha1.SuggestionEnforced:
		return usageError{errors.New("policysuggestion " + name + " is already Enforced")}
	}
	for _, zp := range d.zps {
		if err := upsertZonePolicy(ctx, c, name, zp); err != nil {
			return err
		}
		fmt.Fprintf(w, "zonepolicy/%s applied\n", zp.Name)
	}
	state := v1alpha1.SuggestionStaged
	if enforce {
		for _, np := range d.nps {
			if err := upsertNetworkPolicy(ctx, c, name, np); err != nil {
				return err
			}
			fmt.Fprintf(w, "networkpolicy/%s/%s applied\n", np.Namespace, np.Name)
		}
		state = v1alpha1.SuggestionEnforced
	} else if len(d.nps) > 0 {
		fmt.Fprintf(w, "%d NetworkPolicies are not written while staged (NetworkPolicy has no audit mode); apply --enforce writes them\n", len(d.nps))
	}
	if z := ps.Spec.Scope.Zone; z != "" {
		if enforce {
			if old, err := setZoneMode(ctx, c, z, v1alpha1.ZoneModeEnforce); err != nil {
				return err
			} else if old != v1alpha1.ZoneModeEnforce {
				fmt.Fprintf(w, "zone/%s mode %s -> Enforce\n", z, old)
			}
		} else {
			if old, err := setZoneMode(ctx, c, z, v1alpha1.ZoneModeAudit, v1alpha1.ZoneModeLearn); err != nil {
				return err
			} else if old == v1alpha1.ZoneModeLearn {
				fmt.Fprintf(w, "zone/%s mode Learn -> Audit\n", z)
			}
		}
	}
	ps.Spec.State = state
	if ps.Annotations == nil {
		ps.Annotations = map[string]string{}
	}
	if !enforce || ps.Annotations[controllers.AnnotationStagedAt] == "" {
		ps.Annotations[controllers.AnnotationStagedAt] = now.UTC().Format(time.RFC3339)
	}
	if err := c.Update(ctx, ps); err != nil {
		return fmt.Errorf("marking policysuggestion %s %s: %w", name, state, err)
	}
	fmt.Fprintf(w, "policysuggestion/%s %s\n", name, state)
	return nil
}
