package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Dialer opens a connection to one controller address.
type Dialer func(addr string) (*grpc.ClientConn, error)

// Config configures an Agent.
type Config struct {
	Node string
	// Controllers are tried in turn; a failed or ended session moves on to
	// the next address after a backoff.
	Controllers []string
	Dial        Dialer
	Backend     dataplane.Dataplane
	// StateDir keeps state.json with the last applied epoch and
	// generation. Empty keeps nothing.
	StateDir string
	// ResyncInterval re-syncs the current policy to repair drift; 0
	// disables it.
	ResyncInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 200ms
	// and 10s).
	MinBackoff, MaxBackoff time.Duration
	Metrics                *Metrics
	Log                    logr.Logger
	// Flows, when set, is read for flow records; the agent reduces them
	// to address-level edges and reports them every FlowInterval (default
	// 5s) with up to MaxRecordsPerReport records (default 2000). At most
	// MaxPendingEdges (default 10000) edges are pending per interval.
	Flows               FlowSource
	FlowInterval        time.Duration
	MaxPendingEdges     int
	MaxRecordsPerReport int
	// FlowLog, when set, receives every record.
	FlowLog *FlowLog
}

// Validate returns every problem with the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if len(c.Controllers) == 0 {
		errs = append(errs, errors.New("at least one controller address is required"))
	}
	if c.Dial == nil {
		errs = append(errs, errors.New("a dialer is required"))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("a dataplane backend is required"))
	}
	if c.ResyncInterval < 0 {
		errs = append(errs, fmt.Errorf("resync interval %s is negative", c.ResyncInterval))
	}
	return errors.Join(errs...)
}

// State is what the agent persists.
type State struct {
	Epoch      string `json:"epoch"`
	Generation uint64 `json:"generation"`
}

// Agent enforces one node's policy as served by the controllers.
type Agent struct {
	cfg Config
	log logr.Logger
	m   *Metrics

	mu sync.Mutex // serializes Sync, Ack and the fields below
	// desired is the policy of (epoch, gen) as received.
	epoch   string
	gen     uint64
	desired *ir.NodePolicy
	// applied is the last (epoch, gen) enforced successfully.
	applied State
	// failed is set while desired could not be enforced.
	failed bool
	sess   *stream.Session
	// waits are pending Admit calls.
	waits []*admitWait

	flows *flowPipe

	ready atomic.Bool
}

// New returns an agent; it loads the persisted state but touches nothing.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.FlowInterval <= 0 {
		cfg.FlowInterval = DefaultFlowInterval
	}
	if cfg.MaxPendingEdges <= 0 {
		cfg.MaxPendingEdges = DefaultMaxPendingEdges
	}
	if cfg.MaxRecordsPerReport <= 0 {
		cfg.MaxRecordsPerReport = DefaultMaxRecordsPerReport
	}
	a := &Agent{cfg: cfg, log: cfg.Log.WithName("agent").WithValues("node", cfg.Node), m: cfg.Metrics}
	a.flows = newFlowPipe(&a.cfg)
	if cfg.StateDir != "" {
		b, err := os.ReadFile(filepath.Join(cfg.StateDir, "state.json"))
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading agent state: %w", err)
		default:
			if err := json.Unmarshal(b, &a.applied); err != nil {
				return nil, fmt.Errorf("agent state %s: %w", filepath.Join(cfg.StateDir, "state.json"), err)
			}
		}
	}
	return a, nil
}

type irEndpoint = ir.Endpoint

// Ready reports whether a snapshot has been enforced since start.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Applied returns the last (epoch, generation) enforced successfully.
func (a *Agent) Applied() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// Run keeps sessions open until ctx ends. It returns nil on cancellation.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.ResyncInterval > 0 {
		go a.resyncLoop(ctx)
	}
	if a.cfg.Flows != nil {
		go a.flowLoop(ctx)
	}
	backoff := a.cfg.MinBackoff
	for i := 0; ; i++ {
		addr := a.cfg.Controllers[i%len(a.cfg.Controllers)]
		got, err := a.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		a.m.Reconnects.Inc()
		if got {
			backoff = a.cfg.MinBackoff
		}
		a.log.Info("watch ended; reconnecting", "controller", addr, "reason", errString(err), "backoff", backoff)
		// Full jitter between backoff/2 and backoff.
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		backoff = min(backoff*2, a.cfg.MaxBackoff)
	}
}

func errString(err error) string {
	if err == nil {
		return "closed by controller"
	}
	return err.Error()
}

// session runs one Watch; got reports whether a snapshot arrived.
func (a *Agent) session(ctx context.Context, addr string) (got bool, err error) {
	conn, err := a.cfg.Dial(addr)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	held := a.Applied()
	sess, err := stream.Open(ctx, conn, a.cfg.Node, held.Epoch, held.Generation)
	if err != nil {
		return false, err
	}
	a.m.Connected.Set(1)
	a.mu.Lock()
	a.sess = sess
	a.hintPendingLocked(sess.Hint)
	a.mu.Unlock()
	defer a.m.Connected.Set(0)
	defer func() {
		a.mu.Lock()
		a.sess = nil
		a.mu.Unlock()
	}()
	snapshot := false
	for {
		msg, err := sess.Recv()
		if err != nil {
			return snapshot, fmt.Errorf("receiving from %s: %w", addr, err)
		}
		if msg.GetSnapshot() == nil && !snapshot {
			return false, fmt.Errorf("controller %s sent a delta before the snapshot", addr)
		}
		if msg.GetSnapshot() != nil {
			snapshot = true
		}
		if err := a.handle(ctx, sess, msg); err != nil {
			return snapshot, err
		}
	}
}

// handle applies one message. An error ends the session.
func (a *Agent) handle(ctx context.Context, sess *stream.Session, msg *pb.ControllerMessage) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sess = sess
	epoch, gen := msg.GetEpoch(), msg.GetGeneration()
	var next *ir.NodePolicy
	var trigger string
	switch {
	case msg.GetSnapshot() != nil:
		trigger = "snapshot"
		if epoch == a.epoch && gen < a.gen {
			a.m.StaleUpdates.Inc()
			return fmt.Errorf("snapshot of generation %d is older than the %d held in epoch %s", gen, a.gen, epoch)
		}
		np, err := stream.FromProto(msg.GetSnapshot())
		if err != nil {
			_ = sess.Ack(epoch, gen, fmt.Errorf("decoding snapshot: %w", err))
			return fmt.Errorf("decoding snapshot: %w", err)
		}
		if np.Node != a.cfg.Node {
			return fmt.Errorf("snapshot is for node %q, not %q", np.Node, a.cfg.Node)
		}
		if epoch == a.epoch && gen == a.gen && !a.failed && a.desired != nil && a.applied.Epoch == epoch && a.applied.Generation == gen {
			// Same policy as held and enforced: ack without touching the kernel.
			return sess.Ack(epoch, gen, nil)
		}
		next = np
	case msg.GetDelta() != nil:
		trigger = "delta"
		if epoch != a.epoch {
			return fmt.Errorf("delta of epoch %s while holding epoch %s: a new epoch must start with a snapshot", epoch, a.epoch)
		}
		if gen <= a.gen {
			a.m.StaleUpdates.Inc()
			a.log.Info("ignored stale delta", "generation", gen, "held", a.gen)
			return nil
		}
		if b := msg.GetDelta().GetBaseGeneration(); b != a.gen {
			return fmt.Errorf("delta from generation %d while holding %d: resynchronizing", b, a.gen)
		}
		np, err := stream.Apply(a.desired, msg.GetDelta())
		if err != nil {
			return fmt.Errorf("applying delta %d: %w", gen, err)
		}
		next = np
	default:
		return errors.New("controller message without a body")
	}
	a.epoch, a.gen, a.desired = epoch, gen, next
	err := a.syncLocked(ctx, trigger)
	if err := sess.Ack(epoch, gen, err); err != nil {
		return fmt.Errorf("sending ack: %w", err)
	}
	if err == nil && trigger == "snapshot" {
		a.ready.Store(true)
	}
	return nil
}

// syncLocked enforces a.desired and records the outcome.
func (a *Agent) syncLocked(ctx context.Context, trigger string) error {
	start := time.Now()
	err := a.cfg.Backend.Sync(ctx, a.desired)
	a.m.SyncSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.failed = true
		a.m.Syncs.WithLabelValues(trigger, "error").Inc()
		a.log.Error(err, "sync failed", "trigger", trigger, "epoch", a.epoch, "generation", a.gen)
		return err
	}
	a.failed = false
	a.m.Syncs.WithLabelValues(trigger, "ok").Inc()
	a.m.Generation.Set(float64(a.gen))
	a.m.LastAppliedTS.SetToCurrentTime()
	a.log.V(1).Info("synced", "trigger", trigger, "epoch", a.epoch, "generation", a.gen, "took", time.Since(start))
	a.applied = State{Epoch: a.epoch, Generation: a.gen}
	a.flows.setEndpoints(a.desired)
	a.admitLocked()
	if err := a.persist(); err != nil {
		a.log.Error(err, "persisting agent state")
	}
	return nil
}

func (a *Agent) persist() error {
	if a.cfg.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	b, _ := json.Marshal(a.applied)
	tmp := filepath.Join(a.cfg.StateDir, ".state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing agent state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(a.cfg.StateDir, "state.json")); err != nil {
		return fmt.Errorf("writing agent state: %w", err)
	}
	return nil
}

// Resync re-enforces the current policy (repairing drift). Before the
// first snapshot it does nothing. After a failed generation succeeds on
// resync, the success is acked on the open session.
func (a *Agent) Resync(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.desired == nil {
		return nil
	}
	wasFailed := a.failed
	err := a.syncLocked(ctx, "resync")
	if a.sess != nil && (wasFailed || err != nil) {
		_ = a.sess.Ack(a.epoch, a.gen, err)
	}
	return err
}

func (a *Agent) resyncLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = a.Resync(ctx)
		}
	}
}
