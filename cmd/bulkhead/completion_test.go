package main

import (
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool
		want  []string // substrings of stdout
	}{
		{"bash script registers the bulkhead completion function", []string{"completion", "bash"}, false,
			[]string{"complete -o default -F __start_bulkhead bulkhead", "__complete"}},
		{"zsh script is a compdef for bulkhead", []string{"completion", "zsh"}, false, []string{"#compdef bulkhead", "__complete"}},
		{"fish script completes the bulkhead command", []string{"completion", "fish"}, false, []string{"complete -c bulkhead", "__complete"}},
		{"powershell script registers an argument completer", []string{"completion", "powershell"}, false, []string{"Register-ArgumentCompleter", "bulkhead"}},
		{"an unknown shell is a usage error", []string{"completion", "tcsh"}, true, nil},
		{"a missing shell is a usage error", []string{"completion"}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCLI(t, tc.args...)
			if tc.usage {
				var ue usageError
				if !asUsage(err, &ue) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%.400s", w, out)
				}
			}
		})
	}
}

// TestCompletionCompletesSubcommands runs the hidden __complete command the
// scripts (and kubectl_complete-bulkhead) call, as a shell would.
func TestCompletionCompletesSubcommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"subcommands complete from a prefix", []string{"__complete", "ver"}, []string{"version"}},
		{"completion completes its shells", []string{"__complete", "completion", ""}, []string{"bash", "zsh", "fish", "powershell"}},
		{"analyze completes its --kubeconfig flag", []string{"__complete", "analyze", "--kube"}, []string{"--kubeconfig"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCLI(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(out, "\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					if l == w || strings.HasPrefix(l, w+"\t") {
						found = true
					}
				}
				if !found {
					t.Errorf("completions lack %q:\n%s", w, out)
				}
			}
		})
	}
}
