// Tests of the connection: mutual TLS 1.3 on every connection, a central whose certificate the
// agency refuses (another CA, another name), a central that refuses the agency's certificate or
// closes without answering, AGENCY_MISMATCH, and the hints that name the central's reason.

package agency

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"lottery/client/internal/certs"
	"lottery/client/internal/protocol"
)

// TestHappyPathOverMutualTLS checks every connection, a reconnection's included, is TLS 1.3
// carrying agency 3's verified certificate, and that the central's certificate is checked for
// tls.serverName, whatever host is dialled.
func TestHappyPathOverMutualTLS(t *testing.T) {
	for _, serverName := range []string{"127.0.0.1", "localhost"} {
		t.Run(serverName, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 2, 1, 1 // two connections
			srv.winners = []string{"30000001"}
			srv.start()
			path, want := csvFile(t, 25)
			cfg := srv.config(path)
			cfg.TLSServerName = serverName
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if !bytes.Equal(srv.allStored(), want) || len(a.stats.winners) != 1 {
				t.Fatalf("stored %d bytes, winners %v", len(srv.allStored()), a.stats.winners)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.conns != 2 || len(srv.handshakeErrs) != 0 {
				t.Fatalf("%d connections, failed handshakes %v", srv.conns, srv.handshakeErrs)
			}
			for conn := 1; conn <= 2; conn++ {
				if srv.peers[conn] != "agency-3" || srv.versions[conn] != tls.VersionTLS13 {
					t.Fatalf("connection %d: peer %q, version %x; want agency-3 over TLS 1.3", conn, srv.peers[conn], srv.versions[conn])
				}
			}
			if n := strings.Count(log, "INFO action: connect | result: success | server_address: "+srv.addr()+"\n"); n != 2 {
				t.Fatalf("%d connect lines, want 2:\n%s", n, log)
			}
		})
	}
}

// TestRefusesTheCentralsCertificate has a central present a certificate of another CA, or of
// the project CA for another name: every handshake fails on the agency's side, so not a byte
// of protocol is sent; each is logged as a TLS failure with its reason and retried within
// retry.attempts.
func TestRefusesTheCentralsCertificate(t *testing.T) {
	tests := []struct {
		name       string
		serverDir  func(t *testing.T, agencyDir string) string
		serverName string
		reason     string
	}{
		{"another CA", func(t *testing.T, _ string) string { return credentials(t) }, "",
			"failed to verify certificate: x509: certificate signed by unknown authority"},
		{"another name", func(t *testing.T, dir string) string { return credentialsOfCA(t, dir, "central.example") }, "server",
			"failed to verify certificate: x509: certificate is valid for central.example, not server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := credentials(t)
			srv := newFakeServerTLS(t, tt.serverDir(t, dir), dir)
			srv.start()
			path, _ := csvFile(t, 5)
			cfg := srv.config(path)
			cfg.RetryAttempts = 2
			if tt.serverName != "" {
				cfg.TLSServerName = tt.serverName
			}
			_, log, err := runAgency(t, context.Background(), cfg)
			var te *tlsError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
				t.Fatalf("Run error %v, want giving up on a TLS failure\n%s", err, log)
			}
			for k := 1; k <= 2; k++ {
				line := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: tls: handshake with %s: %s", k, srv.addr(), tt.reason)
				if !strings.Contains(log, line) {
					t.Fatalf("log lacks %q:\n%s", line, log)
				}
			}
			if strings.Contains(log, "action: connect | result: success") || strings.Contains(log, "close_connection") {
				t.Fatalf("a connection counted as established:\n%s", log)
			}
			srv.stop()
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.conns != 2 || len(srv.handshakeErrs) != 2 || len(srv.types) != 0 || len(srv.peers) != 0 {
				t.Fatalf("%d connections, failed handshakes %v, messages %v: want 2 failed handshakes and no message",
					srv.conns, srv.handshakeErrs, srv.types)
			}
		})
	}
}

// TestCentralRefusesTheAgencysCertificate has a central that trusts another CA's agencies:
// with TLS 1.3 the agency learns it when it reads the answer to its HELLO (an alert). It is
// logged as a TLS failure and retried; the central never reads a message.
func TestCentralRefusesTheAgencysCertificate(t *testing.T) {
	dir := credentials(t)
	srv := newFakeServerTLS(t, dir, credentials(t))
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := testConfig(dir, srv.addr(), path)
	cfg.RetryAttempts = 2
	_, log, err := runAgency(t, context.Background(), cfg)
	var te *tlsError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
		t.Fatalf("Run error %v, want giving up on a TLS failure\n%s", err, log)
	}
	for k := 1; k <= 2; k++ {
		line := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: tls: refused by the central: remote error: tls: unknown certificate authority\n", k)
		if !strings.Contains(log, line) {
			t.Fatalf("log lacks %q:\n%s", line, log)
		}
	}
	if strings.Contains(log, "action: connect | result: success") {
		t.Fatalf("a refused connection counted as established:\n%s", log)
	}
	srv.stop()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.conns != 2 || len(srv.handshakeErrs) != 2 || len(srv.types) != 0 {
		t.Fatalf("%d connections, failed handshakes %v, messages %v", srv.conns, srv.handshakeErrs, srv.types)
	}
}

// TestCentralClosesAfterTheHandshake has a central that closes every connection after the
// handshake without answering, as the central does with a verified certificate that is not an
// agency of its round: each attempt fails with a line that says so, and is retried.
func TestCentralClosesAfterTheHandshake(t *testing.T) {
	srv := newFakeServer(t)
	srv.closeUnanswered = true
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := srv.config(path)
	cfg.RetryAttempts = 2
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	for k := 1; k <= 2; k++ {
		prefix := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: read: ", k)
		if !strings.Contains(log, prefix) {
			t.Fatalf("log lacks %q:\n%s", prefix, log)
		}
	}
	if n := strings.Count(log, "(the central closed the connection before answering HELLO: it refuses certificates of agencies outside its round, or it failed; see its log)\n"); n != 2 {
		t.Fatalf("%d lines say the central closed before answering, want 2:\n%s", n, log)
	}
	if strings.Contains(log, "action: connect | result: success") {
		t.Fatalf("an unanswered connection counted as established:\n%s", log)
	}
}

// TestAgencyMismatchEndsTheRun runs an agency whose messages name agency 3 on a connection
// whose certificate is agency 2's (the check at start makes that impossible with one
// configuration: here the TLS configuration is agency 2's): the central refuses its HELLO
// with AGENCY_MISMATCH, and the run stops with that refusal, without retrying.
func TestAgencyMismatchEndsTheRun(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	path, _ := csvFile(t, 10)
	cfg := srv.config(path)
	agency2 := cfg
	agency2.ID = 2
	agency2.TLSCert, agency2.TLSKey = filepath.Join(srv.dir, certs.AgencyFile(2)), filepath.Join(srv.dir, certs.AgencyKeyFile(2))
	_, log, err := runAgencyTLS(t, context.Background(), cfg, clientTLS(t, agency2))
	const reason = "the certificate is agency-2's, the message names agency 3"
	if !refusedWith(protocol.CodeAgencyMismatch)(err) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("Run error %v, want the AGENCY_MISMATCH refusal\n%s", err, log)
	}
	if types := srv.connTypes(1); len(types) != 1 || types[0] != protocol.TypeHello {
		t.Fatalf("messages %v, want only HELLO", types)
	}
	srv.mu.Lock()
	conns, peer := srv.conns, srv.peers[1]
	srv.mu.Unlock()
	if conns != 1 || peer != "agency-2" {
		t.Fatalf("%d connections of %q: a refusal must not be retried", conns, peer)
	}
	if strings.Contains(log, "result: fail | attempt: ") {
		t.Fatalf("the refusal was retried:\n%s", log)
	}
}

// TestCentralsReasonOnEveryLine has the central answer HELLO with an ERROR that closes the
// session, or close without answering: every connect line and the final error carry the
// code and reason of the last ERROR the central gave, and a silent close says it may be the
// certificate or a failure.
func TestCentralsReasonOnEveryLine(t *testing.T) {
	storage := &protocol.Error{Code: protocol.CodeInternalError, Reason: "storage failure: No space left on device"}
	shutting := &protocol.Error{Code: protocol.CodeShuttingDown, Reason: "server shutting down"}
	const silent = "(the central closed the connection before answering HELLO: it refuses certificates of agencies outside its round, or it failed; see its log)"
	tests := []struct {
		name  string
		hello func(conn int) (*protocol.Error, bool)
		lines []string // the connect lines, from "error: "
		exit  string   // the end of the final error
	}{
		{"the same ERROR every time", func(int) (*protocol.Error, bool) { return shutting, true },
			[]string{"server closed the session: SHUTTING_DOWN: server shutting down\n", "server closed the session: SHUTTING_DOWN: server shutting down\n"},
			"giving up after 2 failed attempts: server closed the session: SHUTTING_DOWN: server shutting down"},
		{"an ERROR, then silence", func(conn int) (*protocol.Error, bool) {
			if conn == 1 {
				return storage, true
			}
			return nil, false
		}, []string{"server closed the session: INTERNAL_ERROR: storage failure: No space left on device\n",
			"read: proto: read header: EOF " + silent + " (the central's last answer: INTERNAL_ERROR: storage failure: No space left on device)\n"},
			silent + " (the central's last answer: INTERNAL_ERROR: storage failure: No space left on device)"},
		{"silence only", func(int) (*protocol.Error, bool) { return nil, false },
			[]string{"read: proto: read header: EOF " + silent + "\n", "read: proto: read header: EOF " + silent + "\n"},
			"giving up after 2 failed attempts: read: proto: read header: EOF " + silent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.helloError = tt.hello
			srv.start()
			path, _ := csvFile(t, 5)
			cfg := srv.config(path)
			cfg.RetryAttempts = 2
			_, log, err := runAgency(t, context.Background(), cfg)
			if err == nil || !strings.HasSuffix(err.Error(), tt.exit) {
				t.Fatalf("Run error %v, want it to end with %q\n%s", err, tt.exit, log)
			}
			for k, line := range tt.lines {
				want := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: %s", k+1, line)
				if !strings.Contains(log, want) {
					t.Fatalf("log lacks %q:\n%s", want, log)
				}
			}
		})
	}
}

// TestCentralsReasonAfterAFailedWrite has the central answer the first BET of a big window
// with INTERNAL_ERROR and close while the agency is still writing the window: the write fails,
// and the attempt's line names the central's answer, which the agency reads after it.
func TestCentralsReasonAfterAFailedWrite(t *testing.T) {
	srv := newFakeServer(t)
	srv.internalErrors = 1
	srv.start()
	path, want := csvFile(t, 12000)
	cfg := srv.config(path)
	cfg.BatchMaxAmount, cfg.BatchWindow = 200, 64 // about 8 kB a batch: 512 kB in flight
	_, log, err := runAgency(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) {
		t.Fatal("stored bets differ from the file's")
	}
	line := "WARNING action: connect | result: fail | attempt: 1 | error: server closed the session: INTERNAL_ERROR: disk full"
	if !strings.Contains(log, line) {
		t.Fatalf("log lacks %q:\n%s", line, log)
	}
}
