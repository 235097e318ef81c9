// This file owns the messages of each step of the run on a connection: HELLO and its RESUME
// (the file checked at stepHello, the window brought in line on a reconnection, the batches
// in flight resent), the pipelined BET batches and their ACKs, the FIN, and the winners
// query.

package agency

import (
	"context"
	"fmt"
	"log/slog"
	"math"

	"lottery/client/internal/bets"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

// hello says HELLO on a fresh connection, reads the RESUME answer, brings the session in line
// with it (check the file at stepHello, resync the window afterwards) and resends the batches
// still in flight.
func (a *Agency) hello() error {
	if err := a.conn.send(protocol.Hello{Agency: a.cfg.ID}, "HELLO"); err != nil {
		return err
	}
	m, err := a.conn.read(a.cfg.IOTimeout)
	if err != nil {
		return err
	}
	r, ok := m.(protocol.Resume)
	if !ok {
		return fmt.Errorf("%w: got %s while waiting for RESUME", ErrProtocol, describe(m))
	}
	if r.Agency != a.cfg.ID {
		return fmt.Errorf("%w: RESUME for agency %d", ErrProtocol, r.Agency)
	}
	a.resume = r
	switch a.step {
	case stepHello:
		if err := a.check.verify(a.src, r); err != nil {
			return err
		}
		// The bets from r.Stored+1 on are numbered from there, however this run cuts them.
		a.win = newWindow(a.cfg.BatchWindow, bets.NewBuilder(a.cfg.ID, a.cfg.BatchMaxAmount, r.Stored, r.Chain), r.Stored, r.Chain)
		a.step = stepSend
	default: // a reconnection
		if err := a.resync(r); err != nil {
			return err
		}
		if r.Finished && a.step == stepFin {
			a.finRecorded()
		}
	}
	return a.resend()
}

// resync runs at the RESUME of a reconnection: the window drops the batches in flight the
// central stored without acknowledging them; a RESUME the window cannot explain means the
// stored bets are not this run's. A recorded FIN with bets of this run still to store is not
// this run's either.
func (a *Agency) resync(r protocol.Resume) error {
	covered, ok := a.win.resync(r.Stored, r.Chain)
	if !ok {
		chain, err := a.check.fileChain(r.Stored)
		if err != nil {
			return err
		}
		return a.check.mismatch(r, chain, a.check.reasonDiffers())
	}
	if covered > 0 {
		a.progress() // stored bets are progress, acknowledged or not
	}
	if !r.Finished {
		return nil
	}
	// This run sends its FIN only once all its bets are stored.
	if a.win.empty() && !a.src.eof {
		bt, err := a.src.nextBatch(a.win.builder)
		if err != nil {
			return err
		}
		if bt != nil {
			a.win.push(bt)
		}
	}
	if !a.win.empty() {
		chain, err := a.check.fileChain(math.MaxUint32)
		if err != nil {
			return err
		}
		return a.check.mismatch(r, chain, a.check.reasonAfterFin())
	}
	return nil
}

// resend writes every batch in flight again, in order, on a fresh connection.
func (a *Agency) resend() error {
	if a.win == nil || a.win.empty() {
		return nil
	}
	a.conn.writeDeadline()
	for _, bt := range a.win.batches {
		if err := a.conn.write(bt.Frame); err != nil {
			return a.conn.writeError(broken("resend batch of bets %d..%d: %w", bt.First, bt.Last(), err))
		}
	}
	return a.conn.flush()
}

// sendBets keeps up to batch.window batches in flight until the file is exhausted and every
// batch is acknowledged. Batches are written in groups with one Flush per group; the FIN goes
// out with the group of the last batch.
func (a *Agency) sendBets() error {
	for {
		wrote := false
		for !a.win.full() && !a.src.eof {
			bt, err := a.src.nextBatch(a.win.builder)
			if err != nil {
				return err
			}
			if bt == nil {
				break
			}
			if !wrote {
				a.conn.writeDeadline()
				wrote = true
			}
			a.win.push(bt)
			a.count(bt)
			if err := a.conn.write(bt.Frame); err != nil {
				return a.conn.writeError(broken("send batch of bets %d..%d: %w", bt.First, bt.Last(), err))
			}
			if a.log.Enabled(context.Background(), slog.LevelDebug) {
				bt.EachBet(func(f protocol.BetFields) {
					a.log.Debug("apuesta_enviada", logs.Success, "dni", f.Document, "numero", f.Number)
				})
			}
		}
		if a.src.eof && !a.win.empty() && !a.conn.finSent && !a.resume.Finished {
			// Every bet is in flight: the FIN follows the last batch in the same flush, so the
			// central records it in the same group commit and its answer follows their ACKs,
			// instead of costing one more round trip and one more sync once they are in.
			if !wrote {
				a.conn.writeDeadline()
				wrote = true
			}
			stored, chain := a.win.head()
			if err := a.conn.writeMessage(protocol.Fin{Agency: a.cfg.ID, Bets: stored, Chain: chain}, "FIN"); err != nil {
				return err
			}
			a.conn.finSent = true
		}
		if wrote {
			if err := a.conn.flush(); err != nil {
				return err
			}
		}
		if a.win.empty() {
			return nil // eof and everything acknowledged
		}
		if err := a.readAck(); err != nil {
			return err
		}
		// Read every answer that has already arrived before refilling the window: the central
		// answers a group commit at once, and the batches those answers free then leave
		// together (one flush, one TLS record, one syscall on each side) instead of one by one.
		for !a.win.empty() && a.conn.frameBuffered() {
			if err := a.readAck(); err != nil {
				return err
			}
		}
	}
}

// count adds a batch sent to the run's statistics: each bet once, however often it is sent
// again (a resend, or a new cut after the file was checked again).
func (a *Agency) count(bt *bets.Batch) {
	if bt.Last() <= a.sentUpTo {
		return
	}
	a.stats.batches++
	a.stats.bets += int(bt.Last() - max(a.sentUpTo, bt.First-1))
	a.sentUpTo = bt.Last()
}

// readAck reads the answer to the oldest batch in flight. A refusal with BETS_MISMATCH or
// SEQUENCE_GAP is errStoredMoved: the stored bets are not where this connection left them.
func (a *Agency) readAck() error {
	oldest := a.win.oldest()
	m, err := a.conn.read(a.cfg.IOTimeout)
	if err != nil {
		if re := refusal(err); re != nil && (re.Answer.Code == protocol.CodeBetsMismatch || re.Answer.Code == protocol.CodeSequenceGap) {
			return fmt.Errorf("%w: bets %d..%d: %w", errStoredMoved, oldest.First, oldest.Last(), err)
		}
		return err
	}
	ack, ok := m.(protocol.Ack)
	if !ok {
		return fmt.Errorf("%w: got %s while waiting for ACK of bets %d..%d", ErrProtocol, describe(m), oldest.First, oldest.Last())
	}
	last := oldest.Last()
	if ack.Agency != a.cfg.ID {
		return fmt.Errorf("%w: ACK agency %d stored %d, expected agency %d stored %d", ErrProtocol, ack.Agency, ack.Stored, a.cfg.ID, last)
	}
	seq, count, ok := a.win.ack(ack.Stored)
	if !ok {
		return fmt.Errorf("%w: ACK agency %d stored %d, expected agency %d stored %d", ErrProtocol, ack.Agency, ack.Stored, a.cfg.ID, last)
	}
	a.progress()
	a.log.Debug("batch_ack", logs.Success, "seq", seq, "cantidad", count, "stored", ack.Stored)
	return nil
}

// fin sends FIN, announcing the agency's bets (all acknowledged: the last position) and their
// chain, unless it went out behind the last batch on this connection, and waits for FIN_ACK;
// DUPLICATE_FIN means an earlier FIN was recorded.
func (a *Agency) fin() error {
	if !a.conn.finSent {
		if err := a.conn.send(protocol.Fin{Agency: a.cfg.ID, Bets: a.win.stored, Chain: a.win.chain}, "FIN"); err != nil {
			return err
		}
	}
	m, err := a.conn.read(a.cfg.IOTimeout)
	if err != nil {
		return err
	}
	switch v := m.(type) {
	case protocol.FinAck:
		if v.Agency != a.cfg.ID {
			return fmt.Errorf("%w: FIN_ACK for agency %d", ErrProtocol, v.Agency)
		}
	case protocol.Error: // DUPLICATE_FIN: read lets no other code through
		a.log.Debug("fin", logs.InProgress, "detail", "FIN already recorded (DUPLICATE_FIN)")
	default:
		return fmt.Errorf("%w: got %s while waiting for FIN_ACK", ErrProtocol, describe(m))
	}
	a.progress()
	return nil
}

// winners sends WINNERS_QUERY and collects the WINNERS pages until the last one. The first
// page may take up to winners.timeout (the central holds it until the draw).
func (a *Agency) winners() ([]string, error) {
	if err := a.conn.send(protocol.WinnersQuery{Agency: a.cfg.ID}, "WINNERS_QUERY"); err != nil {
		return nil, err
	}
	docs := []string{}
	wait := a.cfg.WinnersTimeout
	for {
		m, err := a.conn.read(wait)
		if err != nil {
			return nil, err
		}
		w, ok := m.(protocol.Winners)
		if !ok {
			return nil, fmt.Errorf("%w: got %s while waiting for WINNERS", ErrProtocol, describe(m))
		}
		if w.Agency != a.cfg.ID {
			return nil, fmt.Errorf("%w: WINNERS for agency %d", ErrProtocol, w.Agency)
		}
		a.progress()
		docs = append(docs, w.Documents...)
		if w.Last {
			return docs, nil
		}
		wait = a.cfg.IOTimeout
	}
}
