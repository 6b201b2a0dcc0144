// Command bulkhead-cni is a chained CNI plugin: a pod's ADD succeeds only
// once the node's bulkhead agent enforces policy for the pod's addresses.
// See package internal/cni and docs/quarantine.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead-dev/bulkhead/internal/cni"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cni.Run(ctx, cni.EnvFrom(os.Getenv), os.Stdin, os.Stdout); err != nil {
		var ce *cni.Error
		if !errors.As(err, &ce) {
			ce = &cni.Error{CNIVersion: cni.SupportedVersions[len(cni.SupportedVersions)-1], Code: cni.CodeIOFailure, Msg: err.Error()}
		}
		_ = json.NewEncoder(os.Stdout).Encode(ce)
		fmt.Fprintln(os.Stderr, "bulkhead-cni:", ce.Error())
		os.Exit(1)
	}
}
