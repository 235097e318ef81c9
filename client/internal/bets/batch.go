// This file owns the batch builder: it packs valid bet lines into whole BET frames, cutting a
// batch when it holds batch.maxAmount bets or when the next bet would push the frame past
// protocol.MaxFrame (8192) bytes.

package bets

import (
	"bytes"
	"encoding/binary"

	"lottery/client/internal/protocol"
)

const betsOffset = protocol.HeaderSize + protocol.BetHeaderSize // 16

// Batch is one BET message, already encoded: it is kept until acknowledged and resent as is.
type Batch struct {
	Seq   uint32
	Count int
	Frame []byte // the whole BET frame, header included
}

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

// Builder accumulates bet lines into batches with consecutive sequence numbers from 1.
type Builder struct {
	agency    uint32
	maxAmount int
	nextSeq   uint32
	cur       []byte // frame being built; nil when no bet is pending
	count     int
	free      [][]byte
}

// NewBuilder returns a builder for agency's batches of at most maxAmount (1..65535) bets.
func NewBuilder(agency uint32, maxAmount int) *Builder {
	if maxAmount < 1 || maxAmount > 0xFFFF {
		panic("bets: maxAmount out of range")
	}
	return &Builder{agency: agency, maxAmount: maxAmount, nextSeq: 1}
}

// Add appends one valid bet line (without its line terminator; at most
// protocol.MaxBetLineSize bytes). When the line does not fit in the pending batch, that batch
// is returned complete and the line starts the next one; when the line fills the batch to
// maxAmount, the batch is returned at once. Otherwise Add returns nil.
func (b *Builder) Add(line []byte) *Batch {
	var full *Batch
	if b.count > 0 && len(b.cur)-betsOffset+len(line)+1 > protocol.MaxBetsBytes {
		full = b.cut()
	}
	if b.cur == nil {
		b.start()
	}
	b.cur = append(b.cur, line...)
	b.cur = append(b.cur, '\n')
	b.count++
	// A batch full by count is cut here, so the cut by size above only ever happens with
	// count < maxAmount and at most one batch completes per Add (with maxAmount 1, count is 0
	// on entry and the size cut never happens).
	if b.count == b.maxAmount {
		full = b.cut()
	}
	return full
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
	// Header and BET head; length, seq and count are patched by cut.
	b.cur = protocol.AppendHeader(b.cur, protocol.TypeBet, 0)
	b.cur = binary.BigEndian.AppendUint32(b.cur, b.agency)
	b.cur = append(b.cur, 0, 0, 0, 0, 0, 0)
}

func (b *Builder) cut() *Batch {
	f := b.cur
	binary.BigEndian.PutUint32(f[2:6], uint32(len(f)-protocol.HeaderSize))
	binary.BigEndian.PutUint32(f[10:14], b.nextSeq)
	binary.BigEndian.PutUint16(f[14:16], uint16(b.count))
	bt := &Batch{Seq: b.nextSeq, Count: b.count, Frame: f}
	b.nextSeq++
	b.cur, b.count = nil, 0
	return bt
}
