package bench

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Echo is a TCP server inside a pod's network namespace that answers
// every line with the same line, for as long as the connection lives
// (the lab's probe server answers one line and closes).
type Echo struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn []net.Conn
}

// ListenEcho listens on 0.0.0.0:port inside the named network namespace.
func ListenEcho(netnsName string, port int) (*Echo, error) {
	e := &Echo{}
	err := netns.Do(netns.Path(netnsName), func() error {
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		e.ln = ln
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on TCP/%d in %s: %w", port, netnsName, err)
	}
	e.wg.Add(1)
	go e.serve()
	return e, nil
}

func (e *Echo) serve() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		e.mu.Lock()
		e.conn = append(e.conn, c)
		e.mu.Unlock()
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

// Close stops the server and closes its connections.
func (e *Echo) Close() error {
	err := e.ln.Close()
	e.mu.Lock()
	for _, c := range e.conn {
		_ = c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

// Stream is a long-lived TCP connection opened from inside a pod's
// network namespace to an Echo server.
type Stream struct {
	c net.Conn
	r *bufio.Reader
	n int
}

// DialStream connects from the named namespace to addr (ip:port).
func DialStream(netnsName, addr string, timeout time.Duration) (*Stream, error) {
	var c net.Conn
	err := netns.Do(netns.Path(netnsName), func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dialling %s from %s: %w", addr, netnsName, err)
	}
	return &Stream{c: c, r: bufio.NewReader(c)}, nil
}

// Exchange writes one line and waits up to timeout for its echo. Any
// error means the connection no longer carries data.
func (s *Stream) Exchange(timeout time.Duration) error {
	s.n++
	want := fmt.Sprintf("seq %d", s.n)
	_ = s.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(s.c, want); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading echo of %q: %w", want, err)
	}
	if strings.TrimSpace(line) != want {
		return fmt.Errorf("echo %q, want %q", strings.TrimSpace(line), want)
	}
	return nil
}

// lateEcho reports whether the echo of the last line still arrives
// within timeout.
func (s *Stream) lateEcho(timeout time.Duration) bool {
	_ = s.c.SetDeadline(time.Now().Add(timeout))
	line, err := s.r.ReadString('\n')
	return err == nil && strings.TrimSpace(line) == fmt.Sprintf("seq %d", s.n)
}

// Close closes the connection.
func (s *Stream) Close() error { return s.c.Close() }

// UntilDead exchanges a line every interval until one fails or max
// passes. It returns when the failing exchange was started, or an error
// if the connection stayed alive for max. An echo that misses timeout but
// arrives within a further second does not count as a failure.
func (s *Stream) UntilDead(interval, timeout, max time.Duration) (time.Time, error) {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		start := time.Now()
		if err := s.Exchange(timeout); err != nil {
			// A late echo (a slow machine) is not a dead connection:
			// give the pending line another second before deciding.
			if !s.lateEcho(time.Second) {
				return start, nil
			}
		}
		time.Sleep(time.Until(start.Add(interval)))
	}
	return time.Time{}, fmt.Errorf("connection still carried data after %s", max)
}

// ProbeTCP opens a new connection from the named namespace to addr, sends
// a line and reports whether the lab's probe server answered "ok
// <want>" within timeout.
func ProbeTCP(netnsName, addr, want string, timeout time.Duration) (bool, error) {
	var ok bool
	err := netns.Do(netns.Path(netnsName), func() error {
		deadline := time.Now().Add(timeout)
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		if _, err := fmt.Fprintln(c, "probe"); err != nil {
			return nil
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		ok = strings.TrimSpace(line) == "ok "+want
		return nil
	})
	return ok, err
}

// FirstRefused starts a probe every interval (each in its own goroutine,
// so a dropped probe does not delay the next) and returns the start time
// of the first refused probe after which every probe started within the
// following hold period was refused too. A probe that fails on its own
// (a timeout under load) and is followed by an allowed one is not
// counted. It fails after max.
func FirstRefused(netnsName, addr, want string, interval, timeout, max time.Duration) (time.Time, error) {
	const hold = 200 * time.Millisecond
	type result struct {
		start time.Time
		ok    bool
		err   error
	}
	results := make(chan result, 4096)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				go func(start time.Time) {
					ok, err := ProbeTCP(netnsName, addr, want, timeout)
					select {
					case results <- result{start, ok, err}:
					case <-stop:
					}
				}(time.Now())
			}
		}
	}()
	deadline := time.After(max)
	var lastOK time.Time
	var failed []time.Time
	check := time.NewTicker(10 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case r := <-results:
			if r.err != nil {
				return time.Time{}, r.err
			}
			if r.ok {
				if r.start.After(lastOK) {
					lastOK = r.start
				}
			} else {
				failed = append(failed, r.start)
			}
		case <-check.C:
			// The earliest refusal after the last allowed probe, once
			// every probe of the hold period after it has answered.
			var first time.Time
			for _, f := range failed {
				if f.After(lastOK) && (first.IsZero() || f.Before(first)) {
					first = f
				}
			}
			if !first.IsZero() && time.Since(first) > hold+timeout+interval {
				return first, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("no lasting refusal of probes from %s to %s within %s", netnsName, addr, max)
		}
	}
}
