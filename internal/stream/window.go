package stream

import "google.golang.org/grpc"

// Flow-control windows of the stream's HTTP/2 connections. Setting them
// makes the windows static: gRPC's default dynamic window sizing (BDP
// estimation) answers every burst of received data with a PING and its
// ack, i.e. two extra frames, two writes and two wake-ups per delta and
// per ack on each of the controller's agent connections, which at 100
// nodes cost more CPU per update than computing the deltas. Agents
// receive snapshots of a few MiB at most, so the agent's window is
// larger; the controller receives acks, hints and flow reports.
const (
	agentWindow      = 4 << 20
	controllerWindow = 1 << 20
)

// ServerOptions are the gRPC server options every PolicyStream server
// uses, besides its credentials.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(controllerWindow),
		grpc.InitialConnWindowSize(controllerWindow),
	}
}

func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(agentWindow),
		grpc.WithInitialConnWindowSize(agentWindow),
	}
}
