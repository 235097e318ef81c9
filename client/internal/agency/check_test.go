// Tests of the check of the file against what the central stores: resume after a restart
// (with another batch size too), a file that does not match, a reconnection whose RESUME this
// run cannot explain, and the stored bets moving under a connection.

package agency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"lottery/client/internal/protocol"
)

// TestResume starts an agency against a central that already stores its first bets (as a
// previous run, with other batches, left them): it checks them, skips them, and sends every
// other bet exactly once, from the next position on.
func TestResume(t *testing.T) {
	tests := []struct {
		name      string
		stored    int
		maxAmount int
	}{
		{"a few bets", 23, 10},
		{"one bet", 1, 7},
		{"all but one", 94, 10},
		{"every bet, no FIN yet", 95, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			path, want := csvFile(t, 95, "Ana,Lopez,1,2001-02-29,5")
			srv.preload(firstLines(want, tt.stored), false)
			srv.start()
			cfg := srv.config(path)
			cfg.BatchMaxAmount = tt.maxAmount
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if !bytes.Equal(srv.allStored(), want) {
				t.Fatal("stored bets differ from the file's")
			}
			srv.checkSentOnce(t, uint32(tt.stored)+1, 95)
			sent := 95 - tt.stored
			batches := (sent + tt.maxAmount - 1) / tt.maxAmount
			if f := srv.recordedFin(); a.stats.bets != sent || a.stats.batches != batches || f == nil || f.Bets != 95 {
				t.Fatalf("stats %+v fin %+v", a.stats, f)
			}
			for _, line := range []string{
				fmt.Sprintf("INFO action: verificar_apuestas | result: success | stored: %d\n", tt.stored),
				fmt.Sprintf("INFO action: apuestas_enviadas | result: success | cantidad: %d | batches: %d | invalid_rows: 1\n", sent, batches),
				fmt.Sprintf("INFO action: fin | result: success | batches: %d\n", batches),
			} {
				if !strings.Contains(log, line) {
					t.Errorf("log lacks %q:\n%s", line, log)
				}
			}
		})
	}
}

// TestRestartWithAnotherBatchSize runs an agency with batches of 7 until its connection breaks
// for good, then a new run of it with batches of 10 against the same central: between them
// every bet is stored exactly once.
func TestRestartWithAnotherBatchSize(t *testing.T) {
	srv := newFakeServer(t)
	srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 6, 3, 4 // 28 bets stored
	srv.start()
	path, want := csvFile(t, 100)
	cfg := srv.config(path)
	cfg.BatchMaxAmount, cfg.RetryAttempts = 7, 1
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "giving up after 1 failed attempts") {
		t.Fatalf("first run: %v\n%s", err, log)
	}
	if got := srv.allStored(); !bytes.Equal(got, firstLines(want, 28)) {
		t.Fatalf("first run stored %d bytes, want the first 28 bets", len(got))
	}

	srv.mu.Lock()
	clear(srv.received) // the first run's BETs 5 and 6 (from 29) were received, not stored
	srv.mu.Unlock()
	cfg.BatchMaxAmount, cfg.RetryAttempts = 10, 5
	a, log, err := runAgency(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) {
		t.Fatal("stored bets differ from the file's")
	}
	srv.checkSentOnce(t, 29, 100)
	// The second run's batches start at 29 and are cut its own way.
	if f := srv.recordedFin(); a.stats.bets != 72 || a.stats.batches != 8 || f == nil || f.Bets != 100 || f.Chain != protocol.Chain(0, want) {
		t.Fatalf("stats %+v fin %+v", a.stats, f)
	}
	if !strings.Contains(log, "INFO action: verificar_apuestas | result: success | stored: 28\n") {
		t.Fatalf("no verificar_apuestas line:\n%s", log)
	}
}

// TestResumeMismatch starts an agency against a central whose stored bets are not the first
// bets of its file: it stops before sending anything, with one clear line.
func TestResumeMismatch(t *testing.T) {
	path, want := csvFile(t, 30)
	other := bytes.Replace(firstLines(want, 20), []byte("Nombre7,"), []byte("Nombre8,"), 1)
	tests := []struct {
		name     string
		stored   []byte
		finished bool
		chain    func(uint32) uint32 // alters the RESUME chain
		reason   string
	}{
		{"another chain", firstLines(want, 20), false, func(c uint32) uint32 { return c ^ 1 }, "differs"},
		{"another bet", other, false, nil, "differs"},
		{"more bets than the file", append(append([]byte(nil), want...), "Otro,Nombre,1,1990-01-01,1\n"...), false, nil, "differs"},
		{"nothing stored but a chain", nil, false, func(uint32) uint32 { return 7 }, "differs"},
		{"bets after the FIN", firstLines(want, 20), true, nil, "after the recorded FIN cannot be stored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.preload(tt.stored, tt.finished)
			if tt.chain != nil {
				srv.resume = func(_ int, r protocol.Resume) protocol.Resume { r.Chain = tt.chain(r.Chain); return r }
			}
			srv.start()
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !errors.Is(err, ErrBetsMismatch) {
				t.Fatalf("Run error %v, want ErrBetsMismatch\n%s", err, log)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if types := srv.connTypes(1); len(types) != 1 || conns != 1 {
				t.Fatalf("messages %v on %d connections, want only HELLO", types, conns)
			}
			stored := bytes.Count(tt.stored, []byte{'\n'})
			chain := protocol.Chain(0, tt.stored)
			if tt.chain != nil {
				chain = tt.chain(chain)
			}
			fileChain := protocol.Chain(0, firstLines(want, stored))
			if tt.finished {
				fileChain = protocol.Chain(0, want) // every bet of the file
			}
			line := fmt.Sprintf("ERROR action: verificar_apuestas | result: fail | stored: %d | chain: %08x | file_chain: %08x | reason: ", stored, chain, fileChain)
			if !strings.Contains(log, line) || !strings.Contains(log, tt.reason) || !strings.Contains(log, "another program claims agency 3)\n") {
				t.Fatalf("log lacks %q (%s):\n%s", line, tt.reason, log)
			}
		})
	}
}

// TestReconnectResumeMismatch has the central answer a reconnection with a RESUME that is not
// where this run left it: the run stops instead of resending.
func TestReconnectResumeMismatch(t *testing.T) {
	tests := []struct {
		name   string
		resume func(r protocol.Resume) protocol.Resume
	}{
		// On the first connection the bets 1..30 are acknowledged, 31..40 in flight.
		{"fewer bets than acknowledged", func(r protocol.Resume) protocol.Resume { r.Stored, r.Chain = 20, 0; return r }},
		{"inside a batch in flight", func(r protocol.Resume) protocol.Resume { r.Stored = 35; return r }},
		{"another chain", func(r protocol.Resume) protocol.Resume { r.Chain ^= 1; return r }},
		{"the FIN of another program", func(r protocol.Resume) protocol.Resume { r.Finished = true; return r }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 4, 3, 3
			srv.resume = func(conn int, r protocol.Resume) protocol.Resume {
				if conn == 1 {
					return r
				}
				return tt.resume(r)
			}
			srv.start()
			path, _ := csvFile(t, 100)
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !errors.Is(err, ErrBetsMismatch) {
				t.Fatalf("Run error %v, want ErrBetsMismatch\n%s", err, log)
			}
			if types := srv.connTypes(2); len(types) != 1 {
				t.Fatalf("second connection got %v, want only HELLO", types)
			}
			if !strings.Contains(log, "ERROR action: verificar_apuestas | result: fail | stored: ") {
				t.Fatalf("no verificar_apuestas line:\n%s", log)
			}
		})
	}
}

// TestStoredMoved has the stored bets move under the agency's first connection: an earlier
// connection of the agency (a killed process) still had a batch buffered at the central,
// stored after this run's RESUME (stored=0), so this run's first BET is refused. The agency
// says HELLO again, checks its file against the new RESUME from the start and sends every bet
// not stored yet exactly once; a new RESUME that the file does not match ends the run.
func TestStoredMoved(t *testing.T) {
	path, want := csvFile(t, 100)
	other := bytes.Replace(firstLines(want, 13), []byte("Nombre7,"), []byte("Nombre8,"), 1)
	tests := []struct {
		name     string
		stored   []byte          // stored by the earlier connection, after the first RESUME
		refuse   *protocol.Error // the answer to the first BET, if not the central's own
		mismatch bool            // the second RESUME is not the file's
	}{
		{"the earlier batch stored (BETS_MISMATCH)", firstLines(want, 13), nil, false},
		{"every bet stored by the earlier connection", want, nil, false},
		{"SEQUENCE_GAP", nil, &protocol.Error{Code: protocol.CodeSequenceGap, Reason: "bet 1 after 0 stored"}, false},
		{"another program's bets", other, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.preload(tt.stored, false)
			srv.refuseFirst, srv.countFrom = tt.refuse, 2
			srv.resume = func(conn int, r protocol.Resume) protocol.Resume {
				if conn == 1 { // before the earlier connection's batch was stored
					r.Stored, r.Chain = 0, 0
				}
				return r
			}
			srv.start()
			a, log, err := runAgency(t, context.Background(), srv.config(path))
			retried := "WARNING action: verificar_apuestas | result: in_progress | attempt: 1 | reason: "
			if !strings.Contains(log, retried) {
				t.Fatalf("log lacks %q:\n%s", retried, log)
			}
			if tt.mismatch {
				if !errors.Is(err, ErrBetsMismatch) || !strings.Contains(log, "ERROR action: verificar_apuestas | result: fail | stored: 13 | ") {
					t.Fatalf("Run error %v, want ErrBetsMismatch and its line\n%s", err, log)
				}
				if types := srv.connTypes(2); len(types) != 1 {
					t.Fatalf("second connection got %v, want only HELLO", types)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if !bytes.Equal(srv.allStored(), want) {
				t.Fatal("stored bets differ from the file's")
			}
			stored := bytes.Count(tt.stored, []byte{'\n'})
			srv.checkSentOnce(t, uint32(stored)+1, 100) // after the first connection
			if f := srv.recordedFin(); f == nil || f.Bets != 100 || f.Chain != protocol.Chain(0, want) {
				t.Fatalf("FIN %+v", f)
			}
			if stored > 0 && !strings.Contains(log, fmt.Sprintf("INFO action: verificar_apuestas | result: success | stored: %d\n", stored)) {
				t.Fatalf("no verificar_apuestas success line:\n%s", log)
			}
			// The first connection sent bets 1..40 (4 batches of 10), then the bets after the
			// stored ones were sent: each is counted once.
			sent := 100
			if stored == 100 {
				sent = 40
			}
			if a.stats.bets != sent {
				t.Fatalf("stats %+v, want %d bets, each counted once", a.stats, sent)
			}
		})
	}
}

// TestStoredMovedGivesUp has a central that refuses every BET with BETS_MISMATCH or
// SEQUENCE_GAP although its RESUME matches the file: every connection checks the file again,
// and the run gives up after retry.attempts, its error carrying the refusal and its reason.
func TestStoredMovedGivesUp(t *testing.T) {
	tests := []protocol.Error{
		{Code: protocol.CodeBetsMismatch, Reason: "chain before bet 1 is 00000000, the stored bets' is 4e5f6071"},
		{Code: protocol.CodeSequenceGap, Reason: "bet 11 after 0 stored"},
	}
	for _, refusal := range tests {
		t.Run(refusal.Code.String(), func(t *testing.T) {
			srv := newFakeServer(t)
			srv.betError = &refusal
			srv.start()
			path, _ := csvFile(t, 30)
			cfg := srv.config(path)
			cfg.RetryAttempts = 3
			_, log, err := runAgency(t, context.Background(), cfg)
			if !refusedWith(refusal.Code)(err) || !strings.Contains(err.Error(), "giving up after 3 failed attempts: ") ||
				!strings.Contains(err.Error(), refusal.Reason) {
				t.Fatalf("Run error %v, want giving up on the refusal\n%s", err, log)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if conns != 3 {
				t.Fatalf("%d connections, want 3", conns)
			}
			if n := strings.Count(log, "WARNING action: verificar_apuestas | result: in_progress | attempt: "); n != 3 {
				t.Fatalf("%d verificar_apuestas lines, want 3:\n%s", n, log)
			}
		})
	}
}
