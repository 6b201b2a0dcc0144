package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// OneByteServer accepts TCP connections inside a network namespace, reads
// one byte from each, answers with one byte and closes. It is the server
// side of ConnRate.
type OneByteServer struct {
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
}

// ListenOneByte listens on 0.0.0.0:port inside the namespace at nsPath.
func ListenOneByte(nsPath string, port int) (*OneByteServer, error) {
	s := &OneByteServer{}
	err := netns.Do(nsPath, func() error {
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		s.ln = ln
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on TCP/%d in %s: %w", port, nsPath, err)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *OneByteServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			_, _ = c.Write(b[:])
		}()
	}
}

// Accepted counts the connections accepted so far.
func (s *OneByteServer) Accepted() int64 { return s.accepted.Load() }

// Close stops accepting.
func (s *OneByteServer) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// ConnRateResult is what one ConnRate window measured.
type ConnRateResult struct {
	// Completed counts connections that did connect, send one byte, get
	// one byte back and close, all within the window.
	Completed int64
	// Failed counts attempts that got an error (refused, timed out,
	// reset, short reply) within the window.
	Failed int64
	// FirstError is the first failure seen, for diagnostics.
	FirstError error
	Window     time.Duration
}

// PerSecond is Completed divided by the window.
func (r ConnRateResult) PerSecond() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Completed) / r.Window.Seconds()
}

// ConnRate opens many short TCP connections in parallel from inside the
// namespace at nsPath to addr (ip:port, served by a OneByteServer):
// workers loops of connect, write one byte, read one byte, close. It
// counts the exchanges that completed within window. An attempt still in
// flight when the window ends is not counted either way.
func ConnRate(nsPath, addr string, workers int, window, timeout time.Duration) (ConnRateResult, error) {
	if workers < 1 {
		return ConnRateResult{}, fmt.Errorf("conn rate: workers %d: want at least 1", workers)
	}
	var done, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	start := time.Now()
	end := start.Add(window)
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The worker's goroutine stays in the namespace for the
			// whole window: every socket it opens belongs there.
			errc <- netns.Do(nsPath, func() error {
				d := net.Dialer{Timeout: timeout}
				var b [1]byte
				for time.Now().Before(end) {
					err := oneExchange(&d, addr, &b, timeout)
					if time.Now().After(end) {
						return nil
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						continue
					}
					done.Add(1)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return ConnRateResult{}, fmt.Errorf("conn rate: %w", err)
		}
	}
	r := ConnRateResult{Completed: done.Load(), Failed: failed.Load(), Window: window}
	if p := firstErr.Load(); p != nil {
		r.FirstError = *p
	}
	return r, nil
}

func oneExchange(d *net.Dialer, addr string, b *[1]byte, timeout time.Duration) error {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b[0] = 'x'
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	return nil
}
