//go:build !linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
)

// ErrNotSupported is returned on systems without network namespaces.
var ErrNotSupported = fmt.Errorf("the lab needs Linux network namespaces; %s is not supported: %w", runtime.GOOS, errors.ErrUnsupported)

// Up is not supported here.
func Up(context.Context, Options) (*State, error) { return nil, ErrNotSupported }

// Down is not supported here.
func Down(string, string, io.Writer) error { return ErrNotSupported }

// ProbeLab is not supported here.
func ProbeLab(context.Context, string, []Probe, ProbeOptions) ([]Entry, error) {
	return nil, ErrNotSupported
}

// WriteStatus is not supported here.
func WriteStatus(context.Context, io.Writer, string) error { return ErrNotSupported }

// ServeProbes is not supported here.
func ServeProbes(context.Context, string) error { return ErrNotSupported }

// LabNetns is not supported here.
func LabNetns(string) ([]string, error) { return nil, ErrNotSupported }

func childrenOf(int) []Proc { return nil }

// Diagnostics describes a lab for a failure report; labs run on Linux only.
func Diagnostics(string, int) string { return "labs run on Linux only" }
