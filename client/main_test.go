// Tests of the signal plumbing: a signal cancels the context with a cause that names it.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestNotifyContextNamesTheSignal(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		name string
	}{
		{syscall.SIGTERM, "SIGTERM"},
		{syscall.SIGINT, "SIGINT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, stop := notifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := syscall.Kill(os.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			<-ctx.Done() // the test binary's -timeout catches a signal that never arrives
			cause := context.Cause(ctx)
			var s stopSignal
			if !errors.As(cause, &s) || s.sig != tt.sig {
				t.Fatalf("cause %v (%T), want a stopSignal for %v", cause, cause, tt.sig)
			}
			if got := signalName(cause); got != tt.name {
				t.Fatalf("signalName = %q, want %q", got, tt.name)
			}
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.Fatalf("ctx.Err() = %v, want context.Canceled", ctx.Err())
			}
		})
	}
}

func TestNotifyContextStop(t *testing.T) {
	ctx, stop := notifyContext(context.Background(), syscall.SIGTERM)
	if ctx.Err() != nil {
		t.Fatalf("context done before any signal: %v", context.Cause(ctx))
	}
	stop()
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) || signalName(cause) != "none" {
		t.Fatalf("cause after stop %v, named %q", cause, signalName(cause))
	}
}

func TestSignalName(t *testing.T) {
	tests := []struct {
		cause error
		want  string
	}{
		{stopSignal{syscall.SIGTERM}, "SIGTERM"},
		{stopSignal{os.Interrupt}, "SIGINT"},
		{fmt.Errorf("run: %w", stopSignal{syscall.SIGINT}), "SIGINT"},
		{stopSignal{syscall.SIGHUP}, syscall.SIGHUP.String()},
		{context.Canceled, "none"},
		{errors.New("terminated signal received"), "none"}, // no parsing of messages
		{nil, "none"},
	}
	for _, tt := range tests {
		if got := signalName(tt.cause); got != tt.want {
			t.Errorf("signalName(%v) = %q, want %q", tt.cause, got, tt.want)
		}
	}
}
