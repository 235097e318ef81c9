// Tests of the run against the fake central: happy path, invalid rows, quoted names, the
// pipelining window, a recorded FIN, DUPLICATE_FIN, fatal answers, a missing bets file and no
// TLS configuration.

package agency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

func TestHappyPath(t *testing.T) {
	tests := []struct {
		name      string
		rows      int
		maxAmount int
		window    int
		winners   []string
		pageSize  int
		level     logs.Level
	}{
		{"several batches", 95, 10, 4, []string{"30000001", "30000002"}, 0, logs.Info},
		{"one page per winner", 30, 7, 1, []string{"1", "2", "3"}, 1, logs.Debug},
		{"no bets", 0, 10, 4, nil, 0, logs.Info},
		{"big window", 1000, 100, 64, []string{"5"}, 0, logs.Info},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.winners, srv.pageSize = tt.winners, tt.pageSize
			srv.start()
			path, want := csvFile(t, tt.rows)
			cfg := srv.config(path)
			cfg.BatchMaxAmount, cfg.BatchWindow, cfg.LogLevel = tt.maxAmount, tt.window, tt.level
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if got := srv.allStored(); !bytes.Equal(got, want) {
				t.Fatalf("server stored %d bytes, want %d", len(got), len(want))
			}
			srv.checkSentOnce(t, 1, uint32(tt.rows))
			batches := (tt.rows + tt.maxAmount - 1) / tt.maxAmount
			st := a.stats
			if st.bets != tt.rows || st.batches != batches {
				t.Fatalf("stats %+v, want %d bets %d batches", st, tt.rows, batches)
			}
			// The FIN announces the last position and the chain of every bet.
			if f := srv.recordedFin(); f == nil || f.Bets != uint32(tt.rows) || f.Chain != protocol.Chain(0, want) {
				t.Fatalf("FIN %+v, want %d bets with chain %08x", f, tt.rows, protocol.Chain(0, want))
			}
			if len(st.winners) != len(tt.winners) {
				t.Fatalf("winners %v, want %v", st.winners, tt.winners)
			}
			for _, line := range []string{
				"INFO action: connect | result: success | server_address: " + srv.addr() + "\n",
				fmt.Sprintf("INFO action: apuestas_enviadas | result: success | cantidad: %d | batches: %d | invalid_rows: 0\n", tt.rows, batches),
				fmt.Sprintf("INFO action: fin | result: success | batches: %d\n", batches),
				fmt.Sprintf("INFO action: consulta_ganadores | result: success | cant_ganadores: %d\n", len(tt.winners)),
				"INFO action: close_connection | result: success\n",
				"INFO action: close_file | result: success | path: " + path + "\n",
			} {
				if !strings.Contains(log, line) {
					t.Errorf("log lacks %q:\n%s", line, log)
				}
			}
			if strings.Contains(log, "verificar_apuestas") {
				t.Errorf("a fresh start logs verificar_apuestas:\n%s", log)
			}
			if tt.level == logs.Debug {
				if n := strings.Count(log, "action: apuesta_enviada | result: success | dni: "); n != tt.rows {
					t.Errorf("%d apuesta_enviada lines, want %d", n, tt.rows)
				}
				for _, line := range []string{
					"DEBUG action: apuesta_enviada | result: success | dni: 30000000 | numero: 0\n",
					"DEBUG action: batch_ack | result: success | seq: 1 | cantidad: 7 | stored: 7\n",
					"DEBUG action: batch_ack | result: success | seq: 5 | cantidad: 2 | stored: 30\n",
				} {
					if !strings.Contains(log, line) {
						t.Errorf("log lacks %q:\n%s", line, log)
					}
				}
			} else if n := strings.Count(log, "\n") - strings.Count(log, "action: progreso | "); n > 8 {
				t.Errorf("%d log lines at INFO, want a handful:\n%s", n, log)
			}
		})
	}
}

func TestInvalidRowsAreSkipped(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	path, want := csvFile(t, 12, "Ana,Lopez,1,2001-02-29,5", `Ana,Lo"pez,1,2000-01-01,5`, "Ana,Lopez,1,2000-01-01")
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) || a.src.invalidRows != 3 {
		t.Fatalf("stored/invalid mismatch: %+v", a.stats)
	}
	for _, line := range []string{
		"WARNING action: leer_apuesta | result: fail | line: 13 | reason: birthdate\n",
		"WARNING action: leer_apuesta | result: fail | line: 14 | reason: quoting\n",
		"WARNING action: leer_apuesta | result: fail | line: 15 | reason: fields\n",
		"action: apuestas_enviadas | result: success | cantidad: 12 | batches: 2 | invalid_rows: 3\n",
	} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

// TestQuotedNamesTravelCanonical checks that names with a comma or a double quote reach the
// central in their one canonical encoding (needless quotes in the file dropped), that the FIN
// chain is theirs, and that the DEBUG lines still name each bet's document and number.
func TestQuotedNamesTravelCanonical(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	rows := strings.Join([]string{
		`"Pérez, Juan",Gómez,20111222,1985-06-01,7574`,
		`"Ana ""la Tana""",O'Neill,20111223,1990-01-01,12`,
		`"Ana","Lopez",20111224,"1990-01-01",13`,
		`José; María,"D'Alessandro, ""Pepe""",20111225,1970-12-31,99`,
	}, "\r\n")
	want := strings.Join([]string{
		`"Pérez, Juan",Gómez,20111222,1985-06-01,7574`,
		`"Ana ""la Tana""",O'Neill,20111223,1990-01-01,12`,
		`Ana,Lopez,20111224,1990-01-01,13`,
		`José; María,"D'Alessandro, ""Pepe""",20111225,1970-12-31,99`,
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(path, []byte(rows), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := srv.config(path)
	cfg.LogLevel, cfg.BatchMaxAmount = logs.Debug, 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if got := string(srv.allStored()); got != want {
		t.Fatalf("stored\n%s\nwant\n%s", got, want)
	}
	if f := srv.recordedFin(); f == nil || f.Bets != 4 || f.Chain != protocol.Chain(0, []byte(want)) {
		t.Fatalf("FIN %+v", f)
	}
	for _, bet := range [][2]string{{"20111222", "7574"}, {"20111223", "12"}, {"20111224", "13"}, {"20111225", "99"}} {
		line := fmt.Sprintf("DEBUG action: apuesta_enviada | result: success | dni: %s | numero: %s\n", bet[0], bet[1])
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

func TestPipelineWindow(t *testing.T) {
	for _, window := range []int{1, 3, 8} {
		t.Run(fmt.Sprint(window), func(t *testing.T) {
			srv := newFakeServer(t)
			srv.windowCheck = window
			srv.start()
			path, want := csvFile(t, window*10*3) // three full windows of batches
			cfg := srv.config(path)
			cfg.BatchWindow = window
			_, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if srv.windowViolation != "" {
				t.Fatal(srv.windowViolation)
			}
			if !bytes.Equal(srv.allStored(), want) {
				t.Fatal("stored bets differ")
			}
		})
	}
}

// TestFinFollowsTheLastBatch: once every bet is in a batch in flight, the FIN goes out behind the
// last one without waiting for their ACKs, announcing every bet and its chain; the central
// (here one that answers no batch before the FIN arrives) records it with them and answers it
// after their ACKs. The last batch is cut at the end of the file or, at a full batch, found to
// be the last by the next read.
func TestFinFollowsTheLastBatch(t *testing.T) {
	for _, rows := range []int{25, 30, 1} {
		t.Run(fmt.Sprint(rows), func(t *testing.T) {
			srv := newFakeServer(t)
			srv.acksAfterFin = true
			srv.start()
			path, want := csvFile(t, rows)
			_, log, err := runAgency(t, context.Background(), srv.config(path)) // 10 bets a batch, window 4
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if f := srv.recordedFin(); f == nil || f.Bets != uint32(rows) || f.Chain != protocol.Chain(0, want) {
				t.Fatalf("FIN %+v, want %d bets with chain %08x", f, rows, protocol.Chain(0, want))
			}
			types := srv.connTypes(1)
			batches := (rows + 9) / 10
			if len(types) != batches+3 || types[batches+1] != protocol.TypeFin || srv.connCount() != 1 {
				t.Fatalf("messages %v on %d connections, want HELLO, %d BETs, FIN, WINNERS_QUERY on one", types, srv.connCount(), batches)
			}
			if !strings.Contains(log, fmt.Sprintf("INFO action: fin | result: success | batches: %d\n", batches)) {
				t.Fatalf("no fin line:\n%s", log)
			}
		})
	}
}

// TestFinishedGoesStraightToWinners starts an agency whose FIN is already recorded: it checks
// the file and asks for its winners, sending no bet and no FIN.
func TestFinishedGoesStraightToWinners(t *testing.T) {
	srv := newFakeServer(t)
	srv.winners = []string{"30000003"}
	path, want := csvFile(t, 25, "Ana,Lopez,1,2001-02-29,5")
	srv.preload(want, true)
	srv.start()
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	types := srv.connTypes(1)
	if len(types) != 2 || types[0] != protocol.TypeHello || types[1] != protocol.TypeWinnersQuery {
		t.Fatalf("messages %v, want HELLO and WINNERS_QUERY", types)
	}
	if len(a.stats.winners) != 1 {
		t.Fatalf("winners %v", a.stats.winners)
	}
	for _, line := range []string{
		"INFO action: verificar_apuestas | result: success | stored: 25\n",
		"INFO action: apuestas_enviadas | result: success | cantidad: 0 | batches: 0 | invalid_rows: 1\n",
		"INFO action: fin | result: success | batches: 0 | detail: already recorded\n",
		"INFO action: consulta_ganadores | result: success | cant_ganadores: 1\n",
	} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

// TestFinRecordedBeforeItsAnswer breaks the connection right after the FIN is recorded, before
// its FIN_ACK: the RESUME of the reconnection says so, and the agency goes on to its winners.
func TestFinRecordedBeforeItsAnswer(t *testing.T) {
	srv := newFakeServer(t)
	srv.dropAfterFin = 1
	srv.start()
	path, _ := csvFile(t, 15)
	_, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if types := srv.connTypes(2); len(types) != 2 || types[1] != protocol.TypeWinnersQuery {
		t.Fatalf("second connection got %v, want HELLO and WINNERS_QUERY", types)
	}
	if !strings.Contains(log, "INFO action: fin | result: success | batches: 2 | detail: already recorded\n") {
		t.Fatalf("no fin line:\n%s", log)
	}
}

func TestDuplicateFinIsSuccess(t *testing.T) {
	srv := newFakeServer(t)
	srv.alwaysDupFin = true
	srv.start()
	path, _ := csvFile(t, 15)
	_, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !strings.Contains(log, "action: fin | result: success | batches: 2") {
		t.Fatalf("no fin line:\n%s", log)
	}
}

// TestFatalAnswers has the central refuse in ways resending cannot fix: the run stops at once.
// A BET refused with BETS_MISMATCH or SEQUENCE_GAP is not among them (TestStoredMoved).
func TestFatalAnswers(t *testing.T) {
	roundClosed := &protocol.Error{Code: protocol.CodeRoundClosed, Reason: "the draw has already happened"}
	tests := []struct {
		name  string
		setup func(*fakeServer)
		check func(error) bool
	}{
		{"INVALID_BET", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeInvalidBet, Reason: "bet 1: birthdate"}
		}, refusedWith(protocol.CodeInvalidBet)},
		{"UNKNOWN_AGENCY", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeUnknownAgency}
		}, refusedWith(protocol.CodeUnknownAgency)},
		{"AGENCY_MISMATCH on a batch", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeAgencyMismatch, Reason: "the certificate is agency-2's, the message names agency 3"}
		}, refusedWith(protocol.CodeAgencyMismatch)},
		{"AGENCY_FINISHED", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeAgencyFinished}
		}, refusedWith(protocol.CodeAgencyFinished)},
		{"ROUND_CLOSED on a batch", func(s *fakeServer) { s.betError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"ROUND_CLOSED on FIN", func(s *fakeServer) { s.finError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"BETS_MISMATCH on FIN", func(s *fakeServer) {
			s.finError = &protocol.Error{Code: protocol.CodeBetsMismatch, Reason: "another chain"}
		}, refusedWith(protocol.CodeBetsMismatch)},
		{"ACK for another position", func(s *fakeServer) { s.badAck = true }, func(err error) bool {
			return errors.Is(err, ErrProtocol)
		}},
		{"RESUME for another agency", func(s *fakeServer) {
			s.resume = func(_ int, r protocol.Resume) protocol.Resume { r.Agency++; return r }
		}, func(err error) bool { return errors.Is(err, ErrProtocol) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			tt.setup(srv)
			srv.start()
			path, _ := csvFile(t, 30)
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !tt.check(err) {
				t.Fatalf("Run error %v\n%s", err, log)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if conns != 1 {
				t.Fatalf("%d connections: a fatal answer must not be retried", conns)
			}
		})
	}
}

func TestMissingDataFile(t *testing.T) {
	cfg := testConfig(credentials(t), "127.0.0.1:1", "/nonexistent/agency.csv")
	_, err := New(cfg, clientTLS(t, cfg), logs.New(&bytes.Buffer{}, logs.Info))
	if err == nil || !strings.HasPrefix(err.Error(), "data.path: ") {
		t.Fatalf("New error %v", err)
	}
}

// TestNoPlaintext checks an agency cannot be made without a TLS configuration.
func TestNoPlaintext(t *testing.T) {
	path, _ := csvFile(t, 1)
	if _, err := New(testConfig(credentials(t), "127.0.0.1:1", path), nil, logs.New(&bytes.Buffer{}, logs.Info)); err == nil {
		t.Fatal("New without a TLS configuration succeeded")
	}
}
