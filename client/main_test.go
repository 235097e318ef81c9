// Tests of the program: the signal plumbing (a signal cancels signal.NotifyContext's context
// with a cause signalName names, and stops the program with exit code 0 and a shutdown line
// naming it), a bad TLS file stopping it at start with one config line naming the key, an
// AGENCY_MISMATCH refusal ending it with exit code 1, and the central's ERROR and reason
// reaching the exit line.

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"lottery/client/internal/certs"
	"lottery/client/internal/certs/certstest"
	"lottery/client/internal/protocol"
)

// TestNotifyContextNamesTheSignal checks the context the program runs under: a stop signal
// cancels it with a cause signalName names.
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
			ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
			defer stop()
			if err := syscall.Kill(os.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			<-ctx.Done() // the test binary's -timeout catches a signal that never arrives
			cause := context.Cause(ctx)
			if got := signalName(cause); got != tt.name {
				t.Fatalf("signalName(%q) = %q, want %q", cause, got, tt.name)
			}
			if !errors.Is(ctx.Err(), context.Canceled) || !errors.Is(cause, context.Canceled) {
				t.Fatalf("ctx.Err() = %v, cause %v: want both context.Canceled", ctx.Err(), cause)
			}
		})
	}
}

func TestNotifyContextStop(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
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
		{errors.New(syscall.SIGTERM.String() + " signal received"), "SIGTERM"},
		{errors.New(os.Interrupt.String() + " signal received"), "SIGINT"},
		{fmt.Errorf("run: %w", errors.New(syscall.SIGINT.String()+" signal received")), "SIGINT"},
		{errors.New(syscall.SIGHUP.String() + " signal received"), "none"}, // not a stop signal
		{errors.New(syscall.SIGTERM.String()), "none"},
		{context.Canceled, "none"},
		{nil, "none"},
	}
	for _, tt := range tests {
		if got := signalName(tt.cause); got != tt.want {
			t.Errorf("signalName(%v) = %q, want %q", tt.cause, got, tt.want)
		}
	}
}

// credentials issues a CA, a central certificate for 127.0.0.1 and agencies 1..3 into a new
// temporary directory.
func credentials(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Issue(certs.Request{Dir: dir, Agencies: 3, ServerNames: []string{"127.0.0.1"}, Days: 1, CADays: 2}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// agencyEnv is agency 3's environment: the credentials of dir, the central at addr, a bets
// file of one bet.
func agencyEnv(t *testing.T, dir, addr string) map[string]string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(data, []byte("Ana,Lopez,1,1990-01-01,7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"CLI_ID":               "3",
		"CLI_SERVER_ADDRESS":   addr,
		"CLI_DATA_PATH":        data,
		"CLI_RETRY_ATTEMPTS":   "2",
		"CLI_IO_TIMEOUT":       "5s",
		"CLI_TLS_CA":           filepath.Join(dir, certs.CAFile),
		"CLI_TLS_CERT":         filepath.Join(dir, certs.AgencyFile(3)),
		"CLI_TLS_KEY":          filepath.Join(dir, certs.AgencyKeyFile(3)),
		"CLI_RETRY_MAXBACKOFF": "100ms",
	}
}

// runProgram runs the program with env (and no config file) and returns its exit code and
// its log lines.
func runProgram(env map[string]string) (int, []string) {
	var out bytes.Buffer
	code := run([]string{"-config", os.DevNull}, func(k string) string { return env[k] }, &out)
	return code, strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
}

var line = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+) (.*)$`)

// TestBadTLSFileStopsAtStart checks a bad TLS file stops the program before it connects, with
// exit code 1 and one line naming the key.
func TestBadTLSFileStopsAtStart(t *testing.T) {
	dir := credentials(t)
	tests := []struct {
		name   string
		env    map[string]string
		prefix string
	}{
		{"missing CA", map[string]string{"CLI_TLS_CA": filepath.Join(dir, "missing.pem")}, "error: tls.ca: open "},
		{"key of another certificate", map[string]string{"CLI_TLS_KEY": filepath.Join(dir, certs.AgencyKeyFile(1))}, "error: tls.key: "},
		{"certificate of agency 2 as agency 3", map[string]string{
			"CLI_TLS_CERT": filepath.Join(dir, certs.AgencyFile(2)), "CLI_TLS_KEY": filepath.Join(dir, certs.AgencyKeyFile(2)),
		}, `error: tls.cert: ` + filepath.Join(dir, certs.AgencyFile(2)) + ` is the certificate of "agency-2", but this agency is id 3`},
		{"a bad server name", map[string]string{"CLI_TLS_SERVERNAME": "server:12345"}, "error: tls.serverName: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := agencyEnv(t, dir, "127.0.0.1:1") // nothing may dial it
			for k, v := range tt.env {
				env[k] = v
			}
			code, lines := runProgram(env)
			if code != 1 || len(lines) != 1 {
				t.Fatalf("exit %d with %d lines, want 1 with one line:\n%s", code, len(lines), strings.Join(lines, "\n"))
			}
			m := line.FindStringSubmatch(lines[0])
			if m == nil || m[1] != "ERROR" || !strings.HasPrefix(m[2], "action: config | result: fail | "+tt.prefix) {
				t.Fatalf("line %q, want ERROR action: config | result: fail | %s...", lines[0], tt.prefix)
			}
		})
	}
}

// TestAgencyMismatchExitsWithOne runs the program against a central that refuses its HELLO
// with AGENCY_MISMATCH: it stops at once with exit code 1 and the refusal on its exit line.
func TestAgencyMismatchExitsWithOne(t *testing.T) {
	dir := credentials(t)
	const reason = "the certificate is agency-2's, the message names agency 3"
	ln, served := centralOnce(t, dir, func(_ net.Listener, br *bufio.Reader, bw *bufio.Writer) error {
		if err := protocol.Send(bw, protocol.Error{Code: protocol.CodeAgencyMismatch, Reason: reason}); err != nil {
			return err
		}
		_, err := protocol.ReadFrame(br) // until the agency closes
		if !errors.Is(err, net.ErrClosed) && !strings.Contains(fmt.Sprint(err), "EOF") {
			return fmt.Errorf("after the refusal: %v, want the agency to close", err)
		}
		return nil
	})
	code, lines := runProgram(agencyEnv(t, dir, ln.Addr().String()))
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ERROR action: exit | result: fail | error: server refused: code AGENCY_MISMATCH, position 0, reason %q", reason)
	last := lines[len(lines)-1]
	if code != 1 || !strings.HasSuffix(last, want) {
		t.Fatalf("exit %d, last line %q; want 1 and %q\n%s", code, last, want, strings.Join(lines, "\n"))
	}
	if log := strings.Join(lines, "\n"); strings.Contains(log, "attempt: ") || !strings.Contains(log, "INFO action: connect | result: success | server_address: ") {
		t.Fatalf("want one connection, not retried:\n%s", log)
	}
}

// centralOnce accepts one connection on a mutual TLS listener of dir's credentials and runs
// script on it (after reading the agency's HELLO; ln is the listener), in a goroutine; the
// returned channel gets its error.
func centralOnce(t *testing.T, dir string, script func(ln net.Listener, br *bufio.Reader, bw *bufio.Writer) error) (net.Listener, <-chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", certstest.CentralTLS(t, dir, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			br, bw := bufio.NewReader(c), bufio.NewWriter(c)
			m, err := protocol.ReadFrame(br)
			if err != nil {
				return err
			}
			if _, ok := m.(protocol.Hello); !ok {
				return fmt.Errorf("got %s, want HELLO", m.Type())
			}
			return script(ln, br, bw)
		}()
	}()
	return ln, served
}

// TestSignalStopsTheProgram sends SIGTERM or SIGINT to the program while it waits for its
// winners: it closes its connection and file, names the signal on its shutdown line and exits
// 0.
func TestSignalStopsTheProgram(t *testing.T) {
	dir := credentials(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		name := conventionalName(sig)
		t.Run(name, func(t *testing.T) {
			ln, served := centralOnce(t, dir, func(_ net.Listener, br *bufio.Reader, bw *bufio.Writer) error {
				answers := []protocol.Message{protocol.Resume{Agency: 3}, protocol.Ack{Agency: 3, Stored: 1}, protocol.FinAck{Agency: 3}}
				for i, want := range []protocol.Type{protocol.TypeBet, protocol.TypeFin, protocol.TypeWinnersQuery} {
					if err := protocol.Send(bw, answers[i]); err != nil {
						return err
					}
					m, err := protocol.ReadFrame(br)
					if err != nil {
						return err
					}
					if m.Type() != want {
						return fmt.Errorf("got %s, want %s", m.Type(), want)
					}
				}
				// The winners query is held: stop the program.
				if err := syscall.Kill(os.Getpid(), sig); err != nil {
					return err
				}
				_, _ = protocol.ReadFrame(br) // until the agency closes
				return nil
			})
			code, lines := runProgram(agencyEnv(t, dir, ln.Addr().String()))
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			log := strings.Join(lines, "\n")
			if code != 0 {
				t.Fatalf("exit %d, want 0:\n%s", code, log)
			}
			for _, want := range []string{
				"INFO action: shutdown | result: in_progress | signal: " + name,
				"INFO action: close_connection | result: success",
				"INFO action: exit | result: success",
			} {
				if !strings.Contains(log, want) {
					t.Fatalf("log lacks %q:\n%s", want, log)
				}
			}
		})
	}
}

// TestCentralsReasonReachesTheExitLine has the central answer HELLO with INTERNAL_ERROR and a
// reason, then stop (its listener closed): the attempt's line carries the code and the reason,
// and so do the next attempt's line (a refused dial) and the exit line.
func TestCentralsReasonReachesTheExitLine(t *testing.T) {
	dir := credentials(t)
	const cause = "INTERNAL_ERROR: storage failure: No space left on device"
	ln, served := centralOnce(t, dir, func(ln net.Listener, br *bufio.Reader, bw *bufio.Writer) error {
		ln.Close() // the central stops: the next dial is refused
		return protocol.Send(bw, protocol.Error{Code: protocol.CodeInternalError, Reason: "storage failure: No space left on device"})
	})
	code, lines := runProgram(agencyEnv(t, dir, ln.Addr().String()))
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	log := strings.Join(lines, "\n")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`WARNING action: connect \| result: fail \| attempt: 1 \| error: server closed the session: ` + cause + `\n`),
		regexp.MustCompile(`WARNING action: connect \| result: fail \| attempt: 2 \| error: dial tcp .*\(the central's last answer: ` + cause + `\)\n`),
		regexp.MustCompile(`ERROR action: exit \| result: fail \| error: giving up after 2 failed attempts: dial tcp .*\(the central's last answer: ` + cause + `\)$`),
	} {
		if !want.MatchString(log) {
			t.Fatalf("log lacks %s:\n%s", want, log)
		}
	}
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
}
