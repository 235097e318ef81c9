// Helpers of the agency tests: credentials, bets files, configurations, and running an agency
// against a fake central with its log captured.

package agency

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"lottery/client/internal/certs"
	"lottery/client/internal/certs/certstest"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
	"lottery/client/internal/transport"
)

const testTimeout = 10 * time.Second

// credentials issues a CA, a central certificate for 127.0.0.1 and localhost, and agencies
// 1..3 into a new temporary directory.
func credentials(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	req := certs.Request{Dir: dir, Agencies: 3, ServerNames: []string{"127.0.0.1", "localhost"}, Days: 1, CADays: 2}
	if _, err := certs.Issue(req); err != nil {
		t.Fatal(err)
	}
	return dir
}

// credentialsOfCA issues a central certificate for serverNames (and agencies 1..3) signed by
// the CA of caDir into a new temporary directory.
func credentialsOfCA(t *testing.T, caDir string, serverNames ...string) string {
	t.Helper()
	dir := certstest.WithCA(t, caDir)
	req := certs.Request{Dir: dir, Agencies: 3, ServerNames: serverNames, Days: 1, CADays: 2}
	if _, err := certs.Issue(req); err != nil {
		t.Fatal(err)
	}
	return dir
}

// csvFile writes n valid rows (plus the extra lines) and returns its path and the expected
// bet lines block.
func csvFile(t *testing.T, n int, extra ...string) (string, []byte) {
	t.Helper()
	var file, want bytes.Buffer
	for i := 0; i < n; i++ {
		line := fmt.Sprintf("Nombre%d,Apellido Núñez,%d,1990-01-%02d,%d", i, 30000000+i, i%28+1, i%10000)
		file.WriteString(line + "\r\n")
		want.WriteString(line + "\n")
	}
	for _, l := range extra {
		file.WriteString(l + "\n")
	}
	p := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(p, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, want.Bytes()
}

// firstLines returns the first n lines of a lines block.
func firstLines(lines []byte, n int) []byte {
	end := 0
	for ; n > 0; n-- {
		end += bytes.IndexByte(lines[end:], '\n') + 1
	}
	return lines[:end:end]
}

// testConfig is agency 3's configuration with the credentials of dir, the central at addr (its
// certificate checked for addr's host, as config does by default) and the bets file data.
func testConfig(dir, addr, data string) config.Config {
	host, _, _ := net.SplitHostPort(addr)
	return config.Config{
		ID: 3, ServerAddress: addr, LogLevel: logs.Info, BatchMaxAmount: 10, BatchWindow: 4,
		DataPath: data, RetryAttempts: 5, RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff: 20 * time.Millisecond, IOTimeout: 2 * time.Second, WinnersTimeout: 5 * time.Second,
		TLSCA: filepath.Join(dir, certs.CAFile), TLSCert: filepath.Join(dir, certs.AgencyFile(3)),
		TLSKey: filepath.Join(dir, certs.AgencyKeyFile(3)), TLSServerName: host,
	}
}

// clientTLS builds cfg's TLS configuration as the program does at start.
func clientTLS(t *testing.T, cfg config.Config) *tls.Config {
	t.Helper()
	c, err := transport.Client(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runAgency runs an agency with cfg (its TLS configuration built from cfg, as at start) under
// ctx and returns the agency, its log and Run's error.
func runAgency(t *testing.T, ctx context.Context, cfg config.Config) (*Agency, string, error) {
	t.Helper()
	return runAgencyTLS(t, ctx, cfg, clientTLS(t, cfg))
}

// runAgencyTLS runs an agency with cfg and the TLS configuration tlsConfig.
func runAgencyTLS(t *testing.T, ctx context.Context, cfg config.Config, tlsConfig *tls.Config) (*Agency, string, error) {
	t.Helper()
	var out syncBuffer
	a, err := New(cfg, tlsConfig, logs.New(&out, cfg.LogLevel))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err = <-done:
	case <-time.After(testTimeout):
		t.Fatal("Run did not return in time")
	}
	a.Close()
	return a, out.String(), err
}

// refusedWith reports whether err is a RefusedError for an ERROR with code.
func refusedWith(code protocol.ErrorCode) func(error) bool {
	return func(err error) bool {
		var re *RefusedError
		return errors.As(err, &re) && re.Answer.Code == code
	}
}

// unusedAddr returns an address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
