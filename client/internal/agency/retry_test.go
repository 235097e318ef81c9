// Tests of what the run retries and how it stops: INTERNAL_ERROR and SHUTTING_DOWN answers,
// a winners wait that times out, a server that is never up, and cancellation while waiting.

package agency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"lottery/client/internal/protocol"
)

func TestInternalErrorIsRetried(t *testing.T) {
	srv := newFakeServer(t)
	srv.internalErrors = 2
	srv.start()
	path, want := csvFile(t, 35)
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) || a.stats.bets != 35 {
		t.Fatalf("stored/stats mismatch: %+v", a.stats)
	}
	srv.mu.Lock()
	conns := srv.conns
	srv.mu.Unlock()
	if conns != 3 {
		t.Fatalf("%d connections, want 3", conns)
	}
	if n := strings.Count(log, "result: fail | attempt: "); n != 2 || !strings.Contains(log, "INTERNAL_ERROR: disk full") {
		t.Fatalf("%d retries logged, want 2 naming INTERNAL_ERROR:\n%s", n, log)
	}
}

func TestShuttingDownDuringWinnersRetriesQuery(t *testing.T) {
	srv := newFakeServer(t)
	srv.shutdownQueries = 2
	srv.winners = []string{"1", "2"}
	srv.start()
	path, _ := csvFile(t, 15)
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	srv.mu.Lock()
	conns, fins := srv.conns, srv.finCount
	srv.mu.Unlock()
	if conns != 3 || fins != 1 || len(a.stats.winners) != 2 {
		t.Fatalf("conns %d fins %d winners %v", conns, fins, a.stats.winners)
	}
	// After the FIN was recorded, a reconnect goes straight from HELLO to the query.
	for conn := 2; conn <= 3; conn++ {
		if types := srv.connTypes(conn); len(types) != 2 || types[1] != protocol.TypeWinnersQuery {
			t.Fatalf("connection %d got %v", conn, types)
		}
	}
}

func TestCancelWhileWaitingForWinners(t *testing.T) {
	srv := newFakeServer(t)
	srv.holdWinners = true
	srv.start()
	path, _ := csvFile(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-srv.queried:
			cancel()
		case <-time.After(testTimeout):
		}
	}()
	start := time.Now()
	_, log, err := runAgency(t, ctx, srv.config(path))
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run error %v, want ErrStopped\n%s", err, log)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	if !strings.Contains(log, "action: close_connection | result: success") {
		t.Fatalf("no close_connection line:\n%s", log)
	}
}

func TestWinnersTimeoutReconnects(t *testing.T) {
	srv := newFakeServer(t)
	srv.holdWinners = true
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := srv.config(path)
	cfg.WinnersTimeout, cfg.RetryAttempts = 50*time.Millisecond, 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "giving up after 3") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	if n := len(srv.queried); n != 3 {
		t.Fatalf("%d queries, want 3", n)
	}
}

func TestServerNeverUp(t *testing.T) {
	path, _ := csvFile(t, 5)
	cfg := testConfig(credentials(t), unusedAddr(t), path)
	cfg.RetryAttempts = 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "giving up after 3 failed attempts") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	for k := 1; k <= 3; k++ {
		if !strings.Contains(log, fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: dial tcp ", k)) {
			t.Fatalf("no line for attempt %d:\n%s", k, log)
		}
	}
	if strings.Contains(log, "attempt: 4") || strings.Contains(log, "close_connection") {
		t.Fatalf("unexpected lines:\n%s", log)
	}
}
