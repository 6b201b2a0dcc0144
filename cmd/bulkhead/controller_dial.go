package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

// controllerDial says how to reach the controller's stream server.
type controllerDial struct {
	address   string
	tokenFile string
	caFile    string
	// caNamespace holds the controller's CA ConfigMap, read when caFile
	// is empty.
	caNamespace string
}

// dialController connects to the controller's stream server with TLS,
// presenting the bearer token from d.tokenFile or, without one, from cfg.
func dialController(ctx context.Context, c client.Client, cfg *rest.Config, d controllerDial) (*grpc.ClientConn, error) {
	token := cfg.BearerToken
	if d.tokenFile != "" {
		b, err := os.ReadFile(d.tokenFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--token-file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usageError{errors.New("--controller needs a bearer token: the kubeconfig has none; pass --token-file")}
	}
	var ca []byte
	if d.caFile != "" {
		var err error
		if ca, err = os.ReadFile(d.caFile); err != nil {
			return nil, usageError{fmt.Errorf("--ca-file: %w", err)}
		}
	} else {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: d.caNamespace, Name: controllers.CAConfigMap}, &cm); err != nil {
			return nil, fmt.Errorf("reading the controller CA from configmap %s/%s: %w", d.caNamespace, controllers.CAConfigMap, err)
		}
		ca = []byte(cm.Data[controllers.CAKey])
	}
	return stream.Dial(stream.ClientConfig{Address: d.address, CAPEM: ca, Token: token})
}
