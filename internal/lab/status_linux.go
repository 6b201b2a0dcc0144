package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// ProbeLab measures the lab's matrix: probes default to the declared
// container ports; ports the probe server does not serve are listened on
// for the duration of the run.
func ProbeLab(ctx context.Context, dir string, probes []Probe, opts ProbeOptions) ([]Entry, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	if len(probes) == 0 {
		probes = st.Plan.DeclaredProbes()
	}
	if len(probes) == 0 {
		return nil, fmt.Errorf("no probes: the pods declare no container ports; pass --probes")
	}
	if p, ok := st.Processes["probes"]; ok && p.Alive() {
		opts.Served = st.ServedPorts
	} else {
		// Without the server, listen on everything for this run.
		opts.Served = nil
	}
	for _, pod := range st.Plan.Pods {
		if !netns.Exists(pod.Netns) {
			return nil, fmt.Errorf("pod %s: netns %s is gone; run `bulkhead lab down` and `lab up` again", pod.Key(), pod.Netns)
		}
	}
	return ProbeMatrix(ctx, st.Plan.Pods, probes, opts)
}

// WriteStatus prints the lab's processes, API server, nodes and pods.
func WriteStatus(ctx context.Context, w io.Writer, dir string) error {
	st, err := LoadState(dir)
	if err != nil {
		return fmt.Errorf("no lab in %s: %w", dir, err)
	}
	fmt.Fprintf(w, "lab %q, state %s, backend %s\n", st.Plan.Name, dir, st.Backend)
	if st.NoEnforcement != "" {
		fmt.Fprintf(w, "no enforcement: %s\n", st.NoEnforcement)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tPID\tSTATE\tREADY\tLOG")
	hc := &http.Client{Timeout: time.Second}
	for _, role := range stopOrder(st.Processes) {
		p := st.Processes[role]
		state := "running"
		if !p.Alive() {
			state = "gone"
		}
		ready := "-"
		if p.Health != "" {
			ready = "no"
			if resp, err := hc.Get(p.Health + "/readyz"); err == nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
				resp.Body.Close()
				ready = strings.TrimSpace(string(b))
				if resp.StatusCode != http.StatusOK {
					ready = "no: " + ready
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", role, p.PID, state, ready, p.Log)
	}
	_ = tw.Flush()
	api := "unreachable"
	if cfg, err := RESTConfig(dir); err == nil {
		if cs, err := kubernetes.NewForConfig(cfg); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(cctx)
			cancel()
			if err == nil {
				api = cfg.Host + " " + strings.TrimSpace(string(body))
			} else {
				api = cfg.Host + " " + err.Error()
			}
		}
	}
	fmt.Fprintf(w, "api server: %s\nkubeconfig: %s\n", api, Layout{dir}.Kubeconfig())
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIP\tPOD CIDRS\tNETNS")
	for _, n := range st.Plan.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s,%s\t%s\n", n.Name, n.IP, n.PodCIDR, n.PodCIDR6, existsWord(n.Name))
	}
	_ = tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP\tIPV6\tNETNS")
	for _, p := range st.Plan.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s (%s)\n", p.Key(), p.NodeName, p.IP, p.IP6, p.Netns, existsWord(p.Netns))
	}
	return tw.Flush()
}

func existsWord(ns string) string {
	if netns.Exists(ns) {
		return "present"
	}
	return "missing"
}
