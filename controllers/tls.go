package controllers

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/certs"
)

// +kubebuilder:rbac:groups="",namespace=bulkhead-system,resources=secrets;configmaps,verbs=get;create;update
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=bulkhead-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Names of the objects holding the stream's TLS material.
const (
	TLSSecretName = "bulkhead-controller-tls"
	CAConfigMap   = "bulkhead-ca"
	CAKey         = "ca.crt"
)

// ServingHosts are the names the generated certificate covers: loopback
// and the controller Service's DNS names in namespace, plus extra.
func ServingHosts(namespace string, extra []string) []string {
	svc := "bulkhead-controller"
	return append([]string{"127.0.0.1", "::1", "localhost", svc, svc + "." + namespace, svc + "." + namespace + ".svc", svc + "." + namespace + ".svc.cluster.local"}, extra...)
}

// EnsureTLS returns the serving bundle: the one in Secret
// namespace/bulkhead-controller-tls when it is valid for hosts, else a
// newly generated one stored there. It publishes the CA in ConfigMap
// namespace/bulkhead-ca. Two replicas racing both end up with the bundle
// that won the create/update.
func EnsureTLS(ctx context.Context, c client.Client, namespace string, hosts []string) (*certs.Bundle, error) {
	for attempt := 0; attempt < 5; attempt++ {
		var sec corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: TLSSecretName}, &sec)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading secret %s/%s: %w", namespace, TLSSecretName, err)
		}
		exists := err == nil
		if exists {
			b := &certs.Bundle{CACert: sec.Data[CAKey], CAKey: sec.Data["ca.key"], Cert: sec.Data[corev1.TLSCertKey], Key: sec.Data[corev1.TLSPrivateKeyKey]}
			if err := b.Check(hosts, time.Now()); err == nil {
				return b, publishCA(ctx, c, namespace, b.CACert)
			}
		}
		b, err := certs.Generate(hosts, time.Now())
		if err != nil {
			return nil, err
		}
		sec.Namespace, sec.Name, sec.Type = namespace, TLSSecretName, corev1.SecretTypeTLS
		sec.Data = map[string][]byte{CAKey: b.CACert, "ca.key": b.CAKey, corev1.TLSCertKey: b.Cert, corev1.TLSPrivateKeyKey: b.Key}
		if exists {
			err = c.Update(ctx, &sec)
		} else {
			err = c.Create(ctx, &sec)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica won; use its bundle
		}
		if err != nil {
			return nil, fmt.Errorf("storing secret %s/%s: %w", namespace, TLSSecretName, err)
		}
		return b, publishCA(ctx, c, namespace, b.CACert)
	}
	return nil, fmt.Errorf("secret %s/%s kept changing while it was being written", namespace, TLSSecretName)
}

// LoadTLS reads a supplied certificate and key and, if caFile is set,
// publishes it as the CA bundle.
func LoadTLS(ctx context.Context, c client.Client, namespace, certFile, keyFile, caFile string) (*certs.Bundle, error) {
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file: %w", err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-key-file: %w", err)
	}
	b := &certs.Bundle{Cert: cert, Key: key}
	if _, err := b.TLSConfig(); err != nil {
		return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
	}
	if caFile != "" {
		if b.CACert, err = os.ReadFile(caFile); err != nil {
			return nil, fmt.Errorf("--tls-ca-file: %w", err)
		}
		if err := publishCA(ctx, c, namespace, b.CACert); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func publishCA(ctx context.Context, c client.Client, namespace string, ca []byte) error {
	var cm corev1.ConfigMap
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: CAConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CAConfigMap}, Data: map[string]string{CAKey: string(ca)}}
		err = c.Create(ctx, &cm)
		if apierrors.IsAlreadyExists(err) {
			return publishCA(ctx, c, namespace, ca)
		}
	case err != nil:
	case cm.Data[CAKey] == string(ca):
		return nil
	default:
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[CAKey] = string(ca)
		err = c.Update(ctx, &cm)
	}
	if err != nil {
		return fmt.Errorf("publishing configmap %s/%s: %w", namespace, CAConfigMap, err)
	}
	return nil
}
