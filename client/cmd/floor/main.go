// Command floor is the benchmark's bare agency (tools/bench.py --floor): what any agency of
// this design does besides its session, and nothing more. It starts the Go runtime, catches the
// stop signals, reads its credentials (tls.ca, tls.cert, tls.key, from the agency's own CLI_
// variables) and makes a mutual TLS 1.3 handshake with the central. Then it writes one byte,
// reads it back and exits.
//
// Run by the thousand against the bare central of tools/bench_floor.py, it measures the floor
// under an agency's fixed cost: a Go process and a verified handshake on each side.
// docs/benchmarks.md compares that floor with the real run.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// timeout bounds the whole exchange: the bare central answers at once, so a longer wait is a fault.
const timeout = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ca, err := os.ReadFile(os.Getenv("CLI_TLS_CA"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return errors.New("CLI_TLS_CA holds no PEM certificate")
	}
	pair, err := tls.LoadX509KeyPair(os.Getenv("CLI_TLS_CERT"), os.Getenv("CLI_TLS_KEY"))
	if err != nil {
		return err
	}
	// The agency's own settings (internal/transport): TLS 1.3 only, the default key exchanges.
	dialer := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: timeout},
		Config: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			MaxVersion:   tls.VersionTLS13,
			RootCAs:      roots,
			Certificates: []tls.Certificate{pair},
			ServerName:   os.Getenv("CLI_TLS_SERVERNAME"),
		},
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialer.DialContext(ctx, "tcp", os.Getenv("CLI_SERVER_ADDRESS"))
	if err != nil {
		return err
	}
	defer conn.Close()
	stopRead := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stopRead()
	if _, err := conn.Write([]byte{'x'}); err != nil {
		return err
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(conn, answer); err != nil {
		return err
	}
	if answer[0] != 'x' {
		return fmt.Errorf("the central answered %q, not the byte sent", answer)
	}
	return nil
}
