// This file owns the window of batches in flight: the batches sent and not acknowledged yet,
// oldest first, at most batch.window of them, with the position and chain the central is
// known to store (by an ACK or a RESUME). The oldest leaves it on its ACK; a RESUME after a
// reconnection drops those the central stored without acknowledging them. Frames of batches
// that left it go back to the builder for reuse.

package agency

import "lottery/client/internal/bets"

// window holds the batches in flight.
type window struct {
	size    int
	builder *bets.Builder // cuts the batches and takes their frames back
	batches []*bets.Batch // oldest first
	stored  uint32        // the agency's bets 1..stored are stored (RESUME or ACK)
	chain   uint32        // their chain
	left    int           // batches that left the window, acknowledged or covered by a RESUME
}

// newWindow returns an empty window of at most size batches cut by builder, the bets
// 1..stored (with chain) being stored.
func newWindow(size int, builder *bets.Builder, stored, chain uint32) *window {
	return &window{size: size, builder: builder, stored: stored, chain: chain}
}

func (w *window) full() bool  { return len(w.batches) >= w.size }
func (w *window) empty() bool { return len(w.batches) == 0 }

// oldest is the batch whose answer comes next; nil when none is in flight.
func (w *window) oldest() *bets.Batch {
	if w.empty() {
		return nil
	}
	return w.batches[0]
}

// head is the position and chain the central stores once every batch in flight is stored:
// the newest one's end, or what is stored when none is in flight.
func (w *window) head() (stored, chain uint32) {
	if w.empty() {
		return w.stored, w.chain
	}
	newest := w.batches[len(w.batches)-1]
	return newest.Last(), newest.ChainAfter
}

// push adds a batch just sent.
func (w *window) push(bt *bets.Batch) { w.batches = append(w.batches, bt) }

// ack takes the ACK of the oldest batch, which says the central stores the bets 1..stored.
// It reports false, changing nothing, when no batch is in flight or stored is not the oldest's
// last position. seq numbers the batch among those that left the window, from 1; count is its
// number of bets.
func (w *window) ack(stored uint32) (seq, count int, ok bool) {
	oldest := w.oldest()
	if oldest == nil || stored != oldest.Last() {
		return 0, 0, false
	}
	w.drop(1)
	return w.left, oldest.Count, true
}

// resync brings the window in line with the RESUME of a reconnection (stored bets, their
// chain). The central stores either exactly the acknowledged bets, and every batch in flight
// is to be resent, or also some of the batches in flight whose ACK was lost: RESUME then ends
// on one of them, with its chain, and those up to it are dropped. It returns how many were
// dropped; ok is false, changing nothing, for anything else (fewer bets than acknowledged, a
// position inside a batch, another chain), which means the stored bets are not this run's.
func (w *window) resync(stored, chain uint32) (covered int, ok bool) {
	covered = -1
	if stored == w.stored && chain == w.chain {
		covered = 0
	}
	for i, bt := range w.batches {
		if bt.Last() == stored && bt.ChainAfter == chain {
			covered = i + 1
		}
	}
	if covered < 0 {
		return 0, false
	}
	w.drop(covered)
	return covered, true
}

// drop removes the n oldest batches, stored by the central, and recycles their frames.
func (w *window) drop(n int) {
	if n == 0 {
		return
	}
	last := w.batches[n-1]
	w.stored, w.chain = last.Last(), last.ChainAfter
	for _, bt := range w.batches[:n] {
		w.builder.Recycle(bt)
	}
	clear(w.batches[:n])
	w.batches = w.batches[n:]
	w.left += n
}
