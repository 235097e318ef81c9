// What the fake central stores and answers (as the central does, docs/protocol.md), and what
// the tests read of it.

package agency

import (
	"bytes"
	"fmt"
	"testing"

	"lottery/client/internal/protocol"
)

// preload stores lines (count canonical bet lines) as if an earlier run had sent them.
func (s *fakeServer) preload(lines []byte, finished bool) {
	s.stored = append([]byte(nil), lines...)
	s.count = uint32(bytes.Count(lines, []byte{'\n'}))
	s.chain = protocol.Chain(0, lines)
	s.finished = finished
}

// answerBet stores a batch as the central does (docs/protocol.md, BET) and returns the answer.
func (s *fakeServer) answerBet(b protocol.Bet) protocol.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	refuse := func(code protocol.ErrorCode) protocol.Message {
		return protocol.Error{Code: code, Position: b.First, Reason: fmt.Sprintf("bets %d..: %s", b.First, code)}
	}
	last := b.First + uint32(b.Count) - 1
	switch {
	case s.finished:
		return refuse(protocol.CodeAgencyFinished)
	case b.First == s.count+1 && b.Chain != s.chain:
		return refuse(protocol.CodeBetsMismatch)
	case b.First == s.count+1:
		s.stored = append(s.stored, b.Bets...)
		s.count, s.chain = last, protocol.Chain(b.Chain, b.Bets)
		stored := b
		stored.Bets = append([]byte(nil), b.Bets...)
		s.lastBatch = &stored
	case b.First > s.count+1:
		return refuse(protocol.CodeSequenceGap)
	case s.lastBatch != nil && b.First == s.lastBatch.First && b.Count == s.lastBatch.Count &&
		b.Chain == s.lastBatch.Chain && protocol.Chain(b.Chain, b.Bets) == s.chain:
		// a resend of the last batch stored: acknowledged again
	default:
		return refuse(protocol.CodeBetsMismatch)
	}
	if s.badAck {
		last++
	}
	return protocol.Ack{Agency: b.Agency, Stored: last}
}

// answerFin records a FIN as the central does (docs/protocol.md, FIN) and returns the answer.
func (s *fakeServer) answerFin(f protocol.Fin) protocol.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finCount++
	switch {
	case s.finError != nil:
		return *s.finError
	case s.finished && f.Bets == s.count && f.Chain == s.chain:
		return protocol.Error{Code: protocol.CodeDuplicateFin, Reason: "FIN already recorded"}
	case s.finished:
		return protocol.Error{Code: protocol.CodeAgencyFinished}
	case f.Bets != s.count:
		return protocol.Error{Code: protocol.CodeSequenceGap, Reason: "another number of bets"}
	case f.Chain != s.chain:
		return protocol.Error{Code: protocol.CodeBetsMismatch, Reason: "another chain"}
	}
	s.finished, s.fin = true, &f
	if s.alwaysDupFin {
		return protocol.Error{Code: protocol.CodeDuplicateFin, Reason: "FIN already recorded"}
	}
	return protocol.FinAck{Agency: f.Agency}
}

func (s *fakeServer) pages(agency uint32) []protocol.Message {
	size := s.pageSize
	if size <= 0 {
		size = len(s.winners) + 1
	}
	var out []protocol.Message
	docs := s.winners
	for {
		n := min(size, len(docs))
		out = append(out, protocol.Winners{Agency: agency, Last: n == len(docs), Documents: docs[:n]})
		docs = docs[n:]
		if len(docs) == 0 {
			return out
		}
	}
}

// allStored returns the bet lines stored, in position order.
func (s *fakeServer) allStored() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.stored...)
}

// checkSentOnce checks that the positions from..to were each received in exactly one BET and
// no other position was received at all.
func (s *fakeServer) checkSentOnce(t *testing.T, from, to uint32) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, n := range s.received {
		if p < from || p > to {
			t.Fatalf("position %d sent %d times, want never (only %d..%d)", p, n, from, to)
		}
	}
	for p := uint64(from); p <= uint64(to); p++ {
		if n := s.received[uint32(p)]; n != 1 {
			t.Fatalf("position %d sent %d times, want once", p, n)
		}
	}
}

// recordedFin returns the FIN recorded, or nil.
func (s *fakeServer) recordedFin() *protocol.Fin {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fin
}

// connTypes returns the types of the messages received on connection n.
func (s *fakeServer) connTypes(n int) []protocol.Type {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.Type(nil), s.types[n]...)
}

// connCount is the number of connections accepted so far.
func (s *fakeServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}
