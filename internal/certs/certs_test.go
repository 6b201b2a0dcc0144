package certs

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	now := time.Now()
	b, err := Generate([]string{"127.0.0.1", "localhost", "bulkhead-controller.bulkhead-system.svc"}, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Generate([]string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		bundle  Bundle
		hosts   []string
		at      time.Time
		wantErr string
	}{
		{"a fresh bundle is reusable for its hosts", *b, []string{"127.0.0.1", "localhost"}, now, ""},
		{"a bundle is not reused for a host it lacks", *b, []string{"10.96.0.10"}, now, "10.96.0.10"},
		{"a bundle close to expiry is replaced", *b, []string{"localhost"}, now.Add(Validity - 24*time.Hour), "expires soon"},
		{"a certificate signed by another CA is refused", Bundle{CACert: other.CACert, Cert: b.Cert, Key: b.Key}, []string{"localhost"}, now, "does not verify"},
		{"a key that does not match is refused", Bundle{CACert: b.CACert, Cert: b.Cert, Key: other.Key}, nil, now, "key pair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.bundle.Check(tc.hosts, tc.at)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Check = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
