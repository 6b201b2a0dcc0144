package endpointapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// SocketName is the socket's file name inside the agent's --state-dir.
const SocketName = "endpoint.sock"

// Path is the admission call's HTTP path.
const Path = "/v1/endpoints"

// DefaultTimeout bounds a request without TimeoutSeconds.
const DefaultTimeout = 10 * time.Second

// Request asks the agent to admit one endpoint.
type Request struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// IPs are the addresses the CNI assigned, textual IPv4 or IPv6.
	IPs []string `json:"ips"`
	// TimeoutSeconds bounds the wait; 0 means DefaultTimeout.
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
}

// Response reports the outcome. Error is empty when the endpoint's
// policy is enforced; Epoch and Generation name the policy version that
// first held it.
type Response struct {
	Epoch      string `json:"epoch,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	Error      string `json:"error,omitempty"`
}

// ErrNotAdmitted wraps every refusal the agent answers with.
var ErrNotAdmitted = errors.New("endpoint not admitted")

// Listen creates the unix socket at path (replacing a stale one) with
// mode 0600. Paths longer than a sockaddr_un holds are bound through the
// directory's /proc/self/fd entry.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	addr, done, err := shortPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	lis, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("restricting %s: %w", path, err)
	}
	return lis, nil
}

// shortPath returns an address for path that fits a sockaddr_un (107
// bytes), keeping a directory descriptor open until done is called.
func shortPath(path string) (string, func(), error) {
	if len(path) < 100 {
		return path, func() {}, nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, fmt.Errorf("opening socket directory: %w", err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)), func() { dir.Close() }, nil
}

// Dial connects to the agent socket at path, also when path is longer
// than a sockaddr_un holds.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	addr, done, err := shortPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	var d net.Dialer
	return d.DialContext(ctx, "unix", addr)
}

// Admit sends req to the agent socket at path and waits for the answer.
// It returns an error wrapping ErrNotAdmitted when the agent refused or
// timed out, and another error when the agent could not be reached.
func Admit(ctx context.Context, path string, req Request) (Response, error) {
	key := req.Namespace + "/" + req.Name
	timeout := DefaultTimeout
	if req.TimeoutSeconds > 0 {
		timeout = time.Duration(req.TimeoutSeconds * float64(time.Second))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+2*time.Second)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("encoding request for %s: %w", key, err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return Dial(ctx, path)
	}}
	defer tr.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+Path, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(hreq)
	if err != nil {
		return Response{}, fmt.Errorf("asking the agent at %s to admit %s: %w", path, key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Response{}, fmt.Errorf("reading the agent's answer for %s: %w", key, err)
	}
	var out Response
	if err := json.Unmarshal(b, &out); err != nil {
		return Response{}, fmt.Errorf("agent answer for %s (HTTP %d): %w: %q", key, resp.StatusCode, err, b)
	}
	if resp.StatusCode != http.StatusOK || out.Error != "" {
		return out, fmt.Errorf("%w: %s: %s", ErrNotAdmitted, key, out.Error)
	}
	return out, nil
}
