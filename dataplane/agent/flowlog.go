package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// FlowLog appends flow records as JSON lines to a file and rotates it by
// size: when a write would make the file larger than MaxBytes, the file
// is renamed to path + ".1" (replacing an older one) and a new one is
// started. At most 2*MaxBytes of disk is used.
type FlowLog struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	f        *os.File
	size     int64
}

// OpenFlowLog opens (appending) or creates the log at path.
func OpenFlowLog(path string, maxBytes int64) (*FlowLog, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("flow log %s: size limit must be positive, got %d", path, maxBytes)
	}
	l := &FlowLog{path: path, maxBytes: maxBytes}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *FlowLog) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening flow log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening flow log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends r as one JSON line.
func (l *FlowLog) Write(r dataplane.FlowRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding flow record: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("flow log %s is closed", l.path)
	}
	if l.size > 0 && l.size+int64(len(b)) > l.maxBytes {
		if err := l.f.Close(); err != nil {
			return fmt.Errorf("rotating flow log: %w", err)
		}
		l.f = nil
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return fmt.Errorf("rotating flow log: %w", err)
		}
		if err := l.open(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("writing flow log: %w", err)
	}
	return nil
}

// Close closes the file.
func (l *FlowLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
