package stream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// ClientConfig is how an agent reaches a controller.
type ClientConfig struct {
	// Address is host:port.
	Address string
	// CAFile holds the PEM CA bundle that signed the controller's
	// certificate (ConfigMap bulkhead-ca, key ca.crt).
	CAFile string
	// CAPEM, when set, is used instead of CAFile.
	CAPEM []byte
	// TokenFile holds the agent's node-bound ServiceAccount token. It is
	// read on every RPC, so rotated tokens are picked up.
	TokenFile string
	// Token, when set, is used instead of TokenFile.
	Token string
}

// Validate reports every problem with the config.
func (c ClientConfig) Validate() error {
	var errs []string
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Sprintf("controller address %q: %v", c.Address, err))
	}
	if c.CAFile == "" && len(c.CAPEM) == 0 {
		errs = append(errs, "a CA file is required")
	}
	if c.TokenFile == "" && c.Token == "" {
		errs = append(errs, "a token file is required")
	}
	if len(errs) > 0 {
		return fmt.Errorf("stream client config: %s", strings.Join(errs, "; "))
	}
	return nil
}

type tokenCreds struct {
	file, token string
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok := t.token
	if tok == "" {
		b, err := os.ReadFile(t.file)
		if err != nil {
			return nil, fmt.Errorf("reading token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return true }

// Dial returns a client connection to the controller with TLS and
// per-RPC bearer tokens. The connection is lazy: errors surface on the
// first RPC.
func Dial(c ClientConfig, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ca := c.CAPEM
	if len(ca) == 0 {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		ca = b
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate found", c.CAFile)
	}
	host, _, _ := net.SplitHostPort(c.Address)
	tc := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(tokenCreds{file: c.TokenFile, token: c.Token}),
	}, append(dialOptions(), opts...)...)
	conn, err := grpc.NewClient(c.Address, all...)
	if err != nil {
		return nil, fmt.Errorf("dialing controller %s: %w", c.Address, err)
	}
	return conn, nil
}

// Session is one open Watch from the agent's side.
type Session struct {
	st pb.PolicyStream_WatchClient
}

// Open starts a Watch and sends the Hello.
func Open(ctx context.Context, conn grpc.ClientConnInterface, node, epoch string, generation uint64) (*Session, error) {
	st, err := pb.NewPolicyStreamClient(conn).Watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening watch: %w", err)
	}
	if err := st.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{Node: node, Epoch: epoch, Generation: generation}}}); err != nil {
		if errors.Is(err, io.EOF) {
			// The server ended the stream (e.g. refused the token); its
			// status comes with Recv.
			_, err = st.Recv()
		}
		return nil, fmt.Errorf("sending hello: %w", err)
	}
	return &Session{st: st}, nil
}

// Recv returns the next update.
func (s *Session) Recv() (*pb.ControllerMessage, error) { return s.st.Recv() }

// Ack reports the outcome of applying a generation; err nil means applied.
func (s *Session) Ack(epoch string, generation uint64, err error) error {
	a := &pb.Ack{Epoch: epoch, Generation: generation}
	if err != nil {
		a.Error = err.Error()
	}
	return s.st.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Ack{Ack: a}})
}

// Report sends one FlowReport. Like Ack, it must not be called
// concurrently with another send on the session.
func (s *Session) Report(r *pb.FlowReport) error {
	return s.st.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Flows{Flows: r}})
}

// Hint tells the controller the addresses just assigned to a local pod
// (see EndpointHint). Like Ack, it must not be called concurrently with
// another send on the session.
func (s *Session) Hint(namespace, name string, ips []netip.Addr) error {
	h := &pb.EndpointHint{Namespace: namespace, Name: name}
	for _, ip := range ips {
		h.Ips = append(h.Ips, ip.String())
	}
	return s.st.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Endpoint{Endpoint: h}})
}

// Close ends the session's sending side.
func (s *Session) Close() error { return s.st.CloseSend() }
