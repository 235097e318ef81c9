// Package agency owns one agency's session with the central server: it streams the bets file
// in pipelined BET batches over one TCP connection, reconnects with bounded exponential
// backoff and resends what was not acknowledged, then sends FIN and asks for its winners.
//
// Every blocking call honours the context: the dial uses DialContext, the connection is closed
// by context.AfterFunc when the context is cancelled (interrupting a blocked read or write at
// once), and the backoff sleep selects on ctx.Done. A stop by the context returns ErrStopped.
package agency

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"lottery/client/internal/bets"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

// ErrStopped is returned by Run when its context was cancelled (e.g. SIGTERM): not a failure.
var ErrStopped = errors.New("agency: stopped")

// ErrProtocol marks a frame from the central that breaks the protocol session (an ACK for a
// batch not in flight, a message of the wrong type or agency, an undecodable frame).
var ErrProtocol = errors.New("protocol violation")

// RefusedError is an ERROR answer that resending cannot fix (every code but DUPLICATE_FIN,
// IDLE_TIMEOUT and SHUTTING_DOWN): the run stops with it.
type RefusedError struct {
	Answer protocol.Error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused: code %s, seq %d, reason %q", e.Answer.Code, e.Answer.Seq, e.Answer.Reason)
}

// connError is a broken connection (dial, read or write failure, EOF, timeout, or an ERROR
// asking to come back later): the session reconnects and carries on.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

func broken(format string, args ...any) error {
	return &connError{fmt.Errorf(format, args...)}
}

// runStats sums up a run for its log lines.
type runStats struct {
	bets        int      // valid bets sent (and acknowledged, once Run succeeds)
	batches     uint32   // batches sent: the last seq, announced by FIN
	invalidRows int      // rows of the file skipped as invalid
	winners     []string // the agency's winning documents
}

// Agency is one agency's run. Create it with New, call Run once, then Close.
type Agency struct {
	cfg  config.Config
	log  *logs.Logger
	dial func(ctx context.Context, network, address string) (net.Conn, error)

	file    *os.File
	reader  *bets.Reader
	builder *bets.Builder

	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	stopConn func() bool

	unacked  []*bets.Batch // in flight, oldest first; at most cfg.BatchWindow
	eof      bool          // the whole file has been read into batches
	sendDone bool          // every batch acknowledged
	finDone  bool
	failures int // consecutive failures since the last good answer

	stats runStats
}

// New opens the bets file (data.path); the file is read lazily, row by row, during Run.
func New(cfg config.Config, log *logs.Logger) (*Agency, error) {
	f, err := os.Open(cfg.DataPath)
	if err != nil {
		return nil, fmt.Errorf("data.path: %w", err)
	}
	d := &net.Dialer{Timeout: cfg.IOTimeout, KeepAlive: 30 * time.Second}
	return &Agency{
		cfg:     cfg,
		log:     log,
		dial:    d.DialContext,
		file:    f,
		reader:  bets.NewReader(f),
		builder: bets.NewBuilder(cfg.ID, cfg.BatchMaxAmount),
	}, nil
}

// Close closes the connection (if one is open) and the bets file, logging one line for each.
func (a *Agency) Close() {
	if a.conn != nil {
		a.dropConn()
		a.log.Info("close_connection", logs.Success)
	}
	if a.file != nil {
		if err := a.file.Close(); err != nil {
			a.log.Warning("close_file", logs.Fail, "path", a.cfg.DataPath, "error", err)
		} else {
			a.log.Info("close_file", logs.Success, "path", a.cfg.DataPath)
		}
		a.file = nil
	}
}

// Run sends every bet, the FIN and the winners query, reconnecting as needed. It returns nil
// once the winners are known, ErrStopped if ctx was cancelled, or the error that ended it.
func (a *Agency) Run(ctx context.Context) error {
	for {
		err := a.attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ErrStopped
		}
		var ce *connError
		if !errors.As(err, &ce) {
			return err
		}
		a.dropConn()
		a.failures++
		a.log.Warning("connect", logs.Fail, "attempt", a.failures, "error", err)
		if a.failures >= a.cfg.RetryAttempts {
			return fmt.Errorf("giving up after %d failed attempts: %w", a.failures, err)
		}
		if !a.sleep(ctx, a.backoff(a.failures)) {
			return ErrStopped
		}
	}
}

// backoff is the wait after the k-th consecutive failure: a random duration in [d/2, d] with
// d = backoffCeiling(k). The jitter spreads out agencies that lost the central at the same time.
func (a *Agency) backoff(k int) time.Duration {
	d := a.backoffCeiling(k)
	half := d / 2
	return half + rand.N(d-half+1)
}

// backoffCeiling is the longest wait after the k-th consecutive failure: initial * 2^(k-1)
// capped at the maximum.
func (a *Agency) backoffCeiling(k int) time.Duration {
	d := a.cfg.RetryInitialBackoff
	for i := 1; i < k && d < a.cfg.RetryMaxBackoff; i++ {
		d *= 2
	}
	return min(d, a.cfg.RetryMaxBackoff)
}

// sleep waits d or until ctx is done; it reports whether the whole wait elapsed.
func (a *Agency) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *Agency) dropConn() {
	if a.conn == nil {
		return
	}
	a.stopConn()
	_ = a.conn.Close() // may already be closed by the context
	a.conn, a.br, a.bw, a.stopConn = nil, nil, nil, nil
}

// attempt connects if needed and runs the session from wherever it stands.
func (a *Agency) attempt(ctx context.Context) error {
	if a.conn == nil {
		conn, err := a.dial(ctx, "tcp", a.cfg.ServerAddress)
		if err != nil {
			return broken("%w", err) // "dial tcp host:port: ..."
		}
		a.conn = conn
		a.br = bufio.NewReaderSize(conn, protocol.MaxFrame)
		a.bw = bufio.NewWriterSize(conn, 4*protocol.MaxFrame)
		a.stopConn = context.AfterFunc(ctx, func() { _ = conn.Close() })
		a.log.Info("connect", logs.Success, "server_address", a.cfg.ServerAddress)
		if err := a.resend(); err != nil {
			return err
		}
	}
	if !a.sendDone {
		if err := a.sendBets(); err != nil {
			return err
		}
		a.sendDone = true
		a.log.Info("apuestas_enviadas", logs.Success, "cantidad", a.stats.bets,
			"batches", a.stats.batches, "invalid_rows", a.stats.invalidRows)
	}
	if !a.finDone {
		if err := a.fin(); err != nil {
			return err
		}
		a.finDone = true
		a.log.Info("fin", logs.Success, "batches", a.stats.batches)
	}
	docs, err := a.winners()
	if err != nil {
		return err
	}
	a.stats.winners = docs
	a.log.Info("consulta_ganadores", logs.Success, "cant_ganadores", len(docs))
	return nil
}

// resend writes every unacknowledged batch again, in order, on a fresh connection.
func (a *Agency) resend() error {
	if len(a.unacked) == 0 {
		return nil
	}
	a.writeDeadline()
	for _, bt := range a.unacked {
		if _, err := a.bw.Write(bt.Frame); err != nil {
			return broken("resend batch %d: %w", bt.Seq, err)
		}
	}
	return a.flush()
}

func (a *Agency) writeDeadline() {
	_ = a.conn.SetWriteDeadline(time.Now().Add(a.cfg.IOTimeout))
}

func (a *Agency) flush() error {
	if err := a.bw.Flush(); err != nil {
		return broken("write: %w", err)
	}
	return nil
}

// sendBets keeps up to batch.window batches in flight until the file is exhausted and every
// batch is acknowledged. Batches are written in groups with one Flush per group.
func (a *Agency) sendBets() error {
	for {
		wrote := false
		for len(a.unacked) < a.cfg.BatchWindow && !a.eof {
			bt, err := a.nextBatch()
			if err != nil {
				return err
			}
			if bt == nil {
				break
			}
			if !wrote {
				a.writeDeadline()
				wrote = true
			}
			a.unacked = append(a.unacked, bt)
			a.stats.batches = bt.Seq
			if _, err := a.bw.Write(bt.Frame); err != nil {
				return broken("send batch %d: %w", bt.Seq, err)
			}
			if a.log.Enabled(logs.Debug) {
				bt.EachBet(func(f protocol.BetFields) {
					a.log.Debug("apuesta_enviada", logs.Success, "dni", f.Document, "numero", f.Number)
				})
			}
		}
		if wrote {
			if err := a.flush(); err != nil {
				return err
			}
		}
		if len(a.unacked) == 0 {
			return nil // eof and everything acknowledged
		}
		if err := a.readAck(); err != nil {
			return err
		}
	}
}

// nextBatch reads rows until a batch is complete; it returns nil at the end of the file when
// no bet is pending. Invalid rows are logged and skipped.
func (a *Agency) nextBatch() (*bets.Batch, error) {
	for {
		line, err := a.reader.Next()
		var rowErr *bets.RowError
		switch {
		case err == nil:
			a.stats.bets++
			if full := a.builder.Add(line); full != nil {
				return full, nil
			}
		case errors.As(err, &rowErr):
			a.stats.invalidRows++
			a.log.Warning("leer_apuesta", logs.Fail, "line", rowErr.Line, "reason", rowErr.Reason)
		case errors.Is(err, io.EOF):
			a.eof = true
			return a.builder.Flush(), nil
		default:
			return nil, fmt.Errorf("read %s: %w", a.cfg.DataPath, err)
		}
	}
}

// read reads one frame with a deadline of d. Framing violations are fatal; I/O errors and
// ERROR IDLE_TIMEOUT / SHUTTING_DOWN are broken connections; other ERRORs are refusals.
func (a *Agency) read(d time.Duration) (protocol.Message, error) {
	_ = a.conn.SetReadDeadline(time.Now().Add(d))
	m, err := protocol.ReadFrame(a.br)
	if err != nil {
		if _, ok := protocol.CodeOf(err); ok {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return nil, broken("read: %w", err)
	}
	if e, ok := m.(protocol.Error); ok {
		switch e.Code {
		case protocol.CodeIdleTimeout, protocol.CodeShuttingDown:
			return nil, broken("server closed the session: %s: %s", e.Code, e.Reason)
		case protocol.CodeDuplicateFin:
			return m, nil // the caller decides
		}
		return nil, &RefusedError{Answer: e}
	}
	return m, nil
}

func (a *Agency) readAck() error {
	m, err := a.read(a.cfg.IOTimeout)
	if err != nil {
		return err
	}
	ack, ok := m.(protocol.Ack)
	if !ok {
		return fmt.Errorf("%w: got %s while waiting for ACK of batch %d", ErrProtocol, describe(m), a.unacked[0].Seq)
	}
	oldest := a.unacked[0]
	if ack.Agency != a.cfg.ID || ack.Seq != oldest.Seq {
		return fmt.Errorf("%w: ACK agency %d seq %d, expected agency %d seq %d", ErrProtocol, ack.Agency, ack.Seq, a.cfg.ID, oldest.Seq)
	}
	a.unacked[0] = nil
	a.unacked = a.unacked[1:]
	a.failures = 0
	a.log.Debug("batch_ack", logs.Success, "seq", oldest.Seq, "cantidad", oldest.Count)
	a.builder.Recycle(oldest)
	return nil
}

func describe(m protocol.Message) string {
	if e, ok := m.(protocol.Error); ok {
		return fmt.Sprintf("ERROR %s (%s)", e.Code, e.Reason)
	}
	return m.Type().String()
}

// fin sends FIN and waits for FIN_ACK; DUPLICATE_FIN means an earlier FIN was recorded.
func (a *Agency) fin() error {
	a.writeDeadline()
	if err := protocol.Send(a.bw, protocol.Fin{Agency: a.cfg.ID, Batches: a.stats.batches}); err != nil {
		return broken("send FIN: %w", err)
	}
	m, err := a.read(a.cfg.IOTimeout)
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
	a.failures = 0
	return nil
}

// winners sends WINNERS_QUERY and collects the WINNERS pages until the last one. The first
// page may take up to winners.timeout (the central holds it until the draw).
func (a *Agency) winners() ([]string, error) {
	a.writeDeadline()
	if err := protocol.Send(a.bw, protocol.WinnersQuery{Agency: a.cfg.ID}); err != nil {
		return nil, broken("send WINNERS_QUERY: %w", err)
	}
	docs := []string{}
	wait := a.cfg.WinnersTimeout
	for {
		m, err := a.read(wait)
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
		a.failures = 0
		docs = append(docs, w.Documents...)
		if w.Last {
			return docs, nil
		}
		wait = a.cfg.IOTimeout
	}
}
