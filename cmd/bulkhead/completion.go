package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

func init() { addCommand(newCompletionCmd) }

// completionShells are the shells `bulkhead completion` writes scripts
// for.
var completionShells = []string{"bash", "zsh", "fish", "powershell"}

// newCompletionCmd replaces cobra's default completion command, so that a
// missing or unknown shell is a usage error (exit 2) like every other bad
// argument, and the help says how to use the scripts, also for
// "kubectl bulkhead".
func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `completion prints a script that completes bulkhead's subcommands, flags and
arguments in your shell. Load it for the current shell, or install it:

  bash:  source <(bulkhead completion bash)
         bulkhead completion bash > /etc/bash_completion.d/bulkhead
  zsh:   source <(bulkhead completion zsh)
         bulkhead completion zsh > "${fpath[1]}/_bulkhead"
  fish:  bulkhead completion fish > ~/.config/fish/completions/bulkhead.fish
  powershell:
         bulkhead completion powershell | Out-String | Invoke-Expression

bash completion needs the bash-completion package. For "kubectl bulkhead",
kubectl (1.26 or newer) completes plugin arguments by running an executable
named kubectl_complete-bulkhead; see docs/install.md.`,
		ValidArgs:             completionShells,
		DisableFlagsInUseLine: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("completion takes one shell (%s), got %d arguments", strings.Join(completionShells, ", "), len(args))}
			}
			if !slices.Contains(completionShells, args[0]) {
				return usageError{fmt.Errorf("completion: unknown shell %q (want %s)", args[0], strings.Join(completionShells, ", "))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), cmd.OutOrStdout()
			var err error
			switch args[0] {
			case "bash":
				err = root.GenBashCompletionV2(w, true)
			case "zsh":
				err = root.GenZshCompletion(w)
			case "fish":
				err = root.GenFishCompletion(w, true)
			case "powershell":
				err = root.GenPowerShellCompletionWithDesc(w)
			default:
				err = errors.New("unreachable: shell checked by Args")
			}
			if err != nil {
				return fmt.Errorf("writing %s completion: %w", args[0], err)
			}
			return nil
		},
	}
}
