package lab

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// diagMetrics are the metric families Diagnostics prints: what a
// controller published and what each agent applied, acknowledged and
// failed, so a stalled realization shows on which side it stopped.
var diagMetrics = []string{
	"bulkhead_controller_node_",
	"bulkhead_controller_connected_agents",
	"bulkhead_controller_queue_depth",
	"bulkhead_controller_status_writes_total",
	"bulkhead_controller_status_conflicts_total",
	"bulkhead_agent_applied_generation",
	"bulkhead_agent_connected",
	"bulkhead_agent_syncs_total",
	"bulkhead_agent_stale_updates_total",
	"bulkhead_agent_reconnects_total",
}

// Diagnostics describes the lab in dir for a failure report: for every
// recorded process whether it runs, its generation and lag metrics, and
// the last lines of its log. It never fails; what it cannot read it says.
func Diagnostics(dir string, lines int) string {
	st, err := LoadState(dir)
	if err != nil {
		return fmt.Sprintf("no lab state in %s: %v", dir, err)
	}
	var b strings.Builder
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, role := range stopOrder(st.Processes) {
		p := st.Processes[role]
		state := "running"
		if !p.Alive() {
			state = "gone"
		}
		fmt.Fprintf(&b, "=== %s (pid %d, %s)\n", role, p.PID, state)
		if addr := argValue(p.Args, "--metrics-addr"); addr != "" && state == "running" {
			b.WriteString(scrape(hc, "http://"+addr+"/metrics"))
		}
		if p.Log != "" {
			fmt.Fprintf(&b, "--- last %d lines of %s\n%s\n", lines, p.Log, tailFile(p.Log, lines))
		}
	}
	return b.String()
}

// argValue returns the value of flag in args ("--flag value" or
// "--flag=value"), or "".
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// scrape returns the diagMetrics samples of a Prometheus endpoint.
func scrape(hc *http.Client, url string) string {
	resp, err := hc.Get(url)
	if err != nil {
		return fmt.Sprintf("metrics: %v\n", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, m := range diagMetrics {
			if strings.HasPrefix(line, m) {
				b.WriteString("  " + line + "\n")
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(&b, "metrics: reading %s: %v\n", url, err)
	}
	return b.String()
}
