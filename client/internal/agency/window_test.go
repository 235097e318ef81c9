// Tests of the window of batches in flight: its unit behaviour, and reconnections that resend
// exactly the batches the central did not store.

package agency

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestReconnect drops the first connection while batches are in flight (batches of 10 bets,
// window 4): the agency reconnects, says HELLO, and resends exactly the batches the central
// did not store, whether or not it acknowledged the ones it did.
func TestReconnect(t *testing.T) {
	tests := []struct {
		name       string
		dropAfter  int // the server closes on reading this BET
		ackFirst   int // having acknowledged only this many
		storeFirst int // and stored this many (the ACKs of the others lost)
		resent     []int
	}{
		{"drop at first batch, none acked", 1, 0, 0, []int{1}},
		{"drop with the window full, none acked", 4, 0, 0, []int{1, 2, 3, 4}},
		{"drop mid-stream after some acks", 7, 5, 5, []int{6, 7}},
		{"stored without ACK", 7, 3, 5, []int{6, 7}},
		{"every batch in flight stored", 8, 4, 7, []int{8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = tt.dropAfter, tt.ackFirst, tt.storeFirst
			srv.winners = []string{"30000004"}
			srv.start()
			path, want := csvFile(t, 100)
			a, log, err := runAgency(t, context.Background(), srv.config(path))
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if got := srv.allStored(); !bytes.Equal(got, want) {
				t.Fatal("bets lost or altered across the reconnect")
			}
			srv.mu.Lock()
			conns := srv.conns
			count := map[int]int{} // BETs received per batch number
			for p, n := range srv.received {
				if (p-1)%10 == 0 {
					count[int(p-1)/10+1] = n
				}
			}
			srv.mu.Unlock()
			if conns != 2 {
				t.Fatalf("%d connections, want 2", conns)
			}
			for batch := 1; batch <= 10; batch++ {
				want := 1
				for _, r := range tt.resent {
					if r == batch {
						want = 2 // received on the first connection, not stored, resent
					}
				}
				if count[batch] != want {
					t.Fatalf("batch %d sent %d times, want %d (%v)", batch, count[batch], want, count)
				}
			}
			if f := srv.recordedFin(); a.stats.batches != 10 || a.stats.bets != 100 || f == nil || f.Bets != 100 || len(a.stats.winners) != 1 {
				t.Fatalf("stats %+v fin %+v", a.stats, f)
			}
			if !strings.Contains(log, "WARNING action: connect | result: fail | attempt: 1 | error: ") {
				t.Fatalf("no connect fail line:\n%s", log)
			}
			if n := strings.Count(log, "action: connect | result: success"); n != 2 {
				t.Fatalf("%d connect success lines, want 2", n)
			}
			if strings.Contains(log, "verificar_apuestas") {
				t.Fatalf("a reconnection logs verificar_apuestas:\n%s", log)
			}
		})
	}
}
