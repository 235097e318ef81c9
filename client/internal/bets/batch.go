// This file owns the batch builder: it numbers the agency's valid bets by position, keeps their
// checksum chain, and packs their lines into whole BET frames, cutting a batch when it holds
// batch.maxAmount bets or when the next bet would push the frame past protocol.MaxFrame (8192)
// bytes.

package bets

import (
	"bytes"
	"encoding/binary"
	"errors"

	"lottery/client/internal/protocol"
)

// ErrTooManyBets is returned for a bet past position protocol.MaxPosition: positions are u32.
var ErrTooManyBets = errors.New("more bets than the protocol can number (4294967295)")

const betsOffset = protocol.HeaderSize + protocol.BetHeaderSize // 20

// Batch is one BET message, already encoded: it is kept until acknowledged and resent as is.
type Batch struct {
	First      uint32 // position of its first bet
	Count      int
	Chain      uint32 // chain of the agency's bets before First
	ChainAfter uint32 // chain of the agency's bets up to its last
	Frame      []byte // the whole BET frame, header included
}

// Last is the position of the batch's last bet.
func (b *Batch) Last() uint32 { return b.First + uint32(b.Count) - 1 }

// Lines returns the bets block of the batch: Count lines, each ending with '\n'.
func (b *Batch) Lines() []byte { return b.Frame[betsOffset:] }

// EachBet calls fn with the fields of every bet of the batch, in order.
func (b *Batch) EachBet(fn func(protocol.BetFields)) {
	lines := b.Lines()
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		f, _ := protocol.ParseBetLine(lines[:i])
		fn(f)
		lines = lines[i+1:]
	}
}

// Builder accumulates bet lines into batches of consecutive positions.
type Builder struct {
	agency    uint32
	maxAmount int
	first     uint64 // position of the pending batch's first bet
	chain     uint32 // chain of the bets before it
	cur       []byte // frame being built; nil when no bet is pending
	count     int
	free      [][]byte
}

// NewBuilder returns a builder for agency's batches of at most maxAmount (1..65535) bets,
// numbering its bets from stored+1 on: the bets 1..stored, whose chain is chain, are already
// stored (0 and 0 for a fresh start).
func NewBuilder(agency uint32, maxAmount int, stored, chain uint32) *Builder {
	if maxAmount < 1 || maxAmount > 0xFFFF {
		panic("bets: maxAmount out of range")
	}
	return &Builder{agency: agency, maxAmount: maxAmount, first: uint64(stored) + 1, chain: chain}
}

// Add appends one canonical bet line, '\n' included (at most protocol.MaxBetLineSize+1
// bytes). When the line does not fit in the pending batch, that batch is returned complete and
// the line starts the next one; when the line fills the batch to maxAmount, the batch is
// returned at once. Otherwise Add returns nil.
func (b *Builder) Add(line []byte) (*Batch, error) {
	if b.first+uint64(b.count) > protocol.MaxPosition {
		return nil, ErrTooManyBets
	}
	var full *Batch
	if b.count > 0 && len(b.cur)-betsOffset+len(line) > protocol.MaxBetsBytes {
		full = b.cut()
	}
	if b.cur == nil {
		b.start()
	}
	b.cur = append(b.cur, line...)
	b.count++
	// A batch full by count is cut here, so the cut by size above only ever happens with
	// count < maxAmount and at most one batch completes per Add (with maxAmount 1, count is 0
	// on entry and the size cut never happens).
	if b.count == b.maxAmount {
		full = b.cut()
	}
	return full, nil
}

// Flush returns the pending batch, or nil if no bet is pending.
func (b *Builder) Flush() *Batch {
	if b.count == 0 {
		return nil
	}
	return b.cut()
}

// Recycle hands back the frame of an acknowledged batch for reuse.
func (b *Builder) Recycle(bt *Batch) {
	if bt != nil && cap(bt.Frame) >= protocol.MaxFrame && len(b.free) < 64 {
		b.free = append(b.free, bt.Frame[:0])
		bt.Frame = nil
	}
}

func (b *Builder) start() {
	if n := len(b.free); n > 0 {
		b.cur = b.free[n-1]
		b.free = b.free[:n-1]
	} else {
		b.cur = make([]byte, 0, protocol.MaxFrame)
	}
	// Header and BET head; length, first, count and chain are patched by cut.
	b.cur = protocol.AppendHeader(b.cur, protocol.TypeBet, 0)
	b.cur = binary.BigEndian.AppendUint32(b.cur, b.agency)
	b.cur = append(b.cur, make([]byte, protocol.BetHeaderSize-4)...)
}

func (b *Builder) cut() *Batch {
	f := b.cur
	be := binary.BigEndian
	be.PutUint32(f[2:6], uint32(len(f)-protocol.HeaderSize))
	be.PutUint32(f[10:14], uint32(b.first))
	be.PutUint16(f[14:16], uint16(b.count))
	be.PutUint32(f[16:20], b.chain)
	bt := &Batch{First: uint32(b.first), Count: b.count, Chain: b.chain, Frame: f}
	bt.ChainAfter = protocol.Chain(b.chain, bt.Lines())
	b.first += uint64(b.count)
	b.chain = bt.ChainAfter
	b.cur, b.count = nil, 0
	return bt
}
