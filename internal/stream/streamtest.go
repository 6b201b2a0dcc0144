package stream

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/bulkhead-dev/bulkhead/internal/certs"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// StaticAuthenticator maps tokens to identities; for tests and the lab's
// offline tools. Users not in Users are refused for AuthorizeUser.
type StaticAuthenticator struct {
	Agents map[string]Identity
	Users  map[string]Identity
}

// AuthenticateAgent implements Authenticator.
func (s StaticAuthenticator) AuthenticateAgent(_ context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	id, ok := s.Agents[token]
	if !ok {
		return Identity{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return id, nil
}

// AuthorizeUser implements Authenticator.
func (s StaticAuthenticator) AuthorizeUser(_ context.Context, token, verb, resource string) (Identity, error) {
	id, ok := s.Users[token]
	if !ok {
		return Identity{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return id, nil
}

// Serve starts a TLS gRPC server for srv on lis and returns a stop
// function that ends it at once, closing open streams (as a crashed or
// restarted controller would).
func Serve(lis net.Listener, b *certs.Bundle, srv *Server, opts ...grpc.ServerOption) (stop func(), err error) {
	tc, err := b.TLSConfig()
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(append(append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, ServerOptions()...), opts...)...)
	pb.RegisterPolicyStreamServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gs.Serve(lis); err != nil {
			srv.Log.Error(err, "stream server stopped")
		}
	}()
	return func() {
		gs.Stop()
		<-done
	}, nil
}
