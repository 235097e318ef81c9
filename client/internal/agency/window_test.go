// Tests of the window of batches in flight: its unit behaviour, and reconnections that resend
// exactly the batches the central did not store.

package agency

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"lottery/client/internal/bets"
	"lottery/client/internal/protocol"
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

// inFlight returns a window of size 4 whose bets 1..stored are acknowledged and which holds
// n batches of 3 bets from stored+1 on, and those batches.
func inFlight(t *testing.T, stored uint32, n int) (*window, []*bets.Batch) {
	t.Helper()
	chain := protocol.Chain(0, betLines(1, stored))
	b := bets.NewBuilder(3, 3, stored, chain)
	w := newWindow(4, b, stored, chain)
	var out []*bets.Batch
	for p := stored + 1; len(out) < n; p++ {
		bt, err := b.Add(betLines(p, p))
		if err != nil {
			t.Fatal(err)
		}
		if bt != nil {
			w.push(bt)
			out = append(out, bt)
		}
	}
	return w, out
}

// betLines returns the canonical lines of the test bets from..to.
func betLines(from, to uint32) []byte {
	var b []byte
	for p := from; p <= to; p++ {
		b = fmt.Appendf(b, "Nombre%d,Apellido,%d,1990-01-01,%d\n", p, 30000000+p, p)
	}
	return b
}

func TestWindowAck(t *testing.T) {
	tests := []struct {
		name     string
		inFlight int
		acks     []uint32 // the ACKs, in order
		ok       []bool
		left     int    // batches still in flight
		stored   uint32 // acknowledged
	}{
		{"the oldest", 3, []uint32{13}, []bool{true}, 2, 13},
		{"every batch", 3, []uint32{13, 16, 19}, []bool{true, true, true}, 0, 19},
		{"not the oldest", 3, []uint32{16}, []bool{false}, 3, 10},
		{"inside the oldest", 2, []uint32{12}, []bool{false}, 2, 10},
		{"the same twice", 2, []uint32{13, 13}, []bool{true, false}, 1, 13},
		{"none in flight", 0, []uint32{10}, []bool{false}, 0, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, batches := inFlight(t, 10, tt.inFlight)
			seqs := 0
			for i, stored := range tt.acks {
				seq, count, ok := w.ack(stored)
				if ok != tt.ok[i] {
					t.Fatalf("ack(%d) ok = %v, want %v", stored, ok, tt.ok[i])
				}
				if ok {
					seqs++
					if seq != seqs || count != 3 {
						t.Fatalf("ack(%d) = seq %d count %d, want seq %d count 3", stored, seq, count, seqs)
					}
					if batches[seqs-1].Frame != nil {
						t.Fatalf("the frame of the acknowledged batch %d was not recycled", seqs)
					}
				}
			}
			if len(w.batches) != tt.left || w.stored != tt.stored || w.chain != protocol.Chain(0, betLines(1, tt.stored)) {
				t.Fatalf("%d in flight, stored %d chain %08x; want %d, %d", len(w.batches), w.stored, w.chain, tt.left, tt.stored)
			}
			if w.empty() != (tt.left == 0) || w.full() {
				t.Fatalf("empty %v full %v with %d in flight of 4", w.empty(), w.full(), tt.left)
			}
		})
	}
}

func TestWindowResync(t *testing.T) {
	chainOf := func(stored uint32) uint32 { return protocol.Chain(0, betLines(1, stored)) }
	tests := []struct {
		name    string
		stored  uint32
		chain   uint32
		covered int
		ok      bool
	}{
		// Bets 1..10 acknowledged, 11..22 in flight in 4 batches of 3.
		{"only the acknowledged bets", 10, chainOf(10), 0, true},
		{"the first batch in flight", 13, chainOf(13), 1, true},
		{"three batches in flight", 19, chainOf(19), 3, true},
		{"every batch in flight", 22, chainOf(22), 4, true},
		{"fewer bets than acknowledged", 7, chainOf(7), 0, false},
		{"inside a batch in flight", 14, chainOf(14), 0, false},
		{"past the batches in flight", 25, chainOf(25), 0, false},
		{"the acknowledged bets with another chain", 10, chainOf(10) ^ 1, 0, false},
		{"a batch in flight with another chain", 16, chainOf(16) ^ 1, 0, false},
		{"nothing stored", 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, batches := inFlight(t, 10, 4)
			if !w.full() {
				t.Fatal("4 batches in flight of 4: not full")
			}
			covered, ok := w.resync(tt.stored, tt.chain)
			if covered != tt.covered || ok != tt.ok {
				t.Fatalf("resync(%d, %08x) = %d, %v; want %d, %v", tt.stored, tt.chain, covered, ok, tt.covered, tt.ok)
			}
			wantStored := uint32(10)
			if ok {
				wantStored = tt.stored
			}
			if len(w.batches) != 4-tt.covered || w.stored != wantStored || w.chain != chainOf(wantStored) || w.left != tt.covered {
				t.Fatalf("%d in flight, stored %d, %d left; want %d, %d, %d", len(w.batches), w.stored, w.left, 4-tt.covered, wantStored, tt.covered)
			}
			for i, bt := range batches {
				if dropped := i < tt.covered; dropped != (bt.Frame == nil) {
					t.Fatalf("batch %d: frame recycled %v, want %v", i+1, bt.Frame == nil, dropped)
				}
			}
			if tt.covered < 4 && w.oldest() != batches[tt.covered] {
				t.Fatalf("oldest is bets %d.., want %d..", w.oldest().First, batches[tt.covered].First)
			}
		})
	}
}
