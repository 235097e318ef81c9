// Package agency owns one agency's session with the central server. On every connection it
// says HELLO and brings itself in line with the RESUME answer: the first time, it checks that
// the bets the central stores for it are the first bets of its file (their checksum chain) and
// skips them; on a reconnection, it drops the batches in flight that the central stored
// without acknowledging them. It then streams the rest of the file in pipelined BET batches,
// reconnecting with bounded exponential backoff and resending what was not stored, sends FIN
// and asks for its winners. Bets are numbered by their position among the file's valid bets,
// so every bet is stored exactly once however the batches are cut, from one run to the next.
//
// Every connection is mutual TLS 1.3 with the *tls.Config internal/transport built and checked
// at start: the central's certificate is verified against the project CA for tls.serverName
// and the agency presents its own certificate, whose verified name is its identity at the
// central. A failed handshake, or a TLS alert from the central (it refused the agency's
// certificate: with TLS 1.3 the agency learns it on its first read), is a connection failure
// like a refused dial, logged with "tls: " and its reason and retried within retry.attempts.
// The connection counts as established (action: connect | result: success) once the central
// has answered its HELLO.
//
// Every blocking call honours the context: the dial and the TLS handshake use DialContext
// (bounded by io.timeout), the connection is closed by context.AfterFunc when the context is
// cancelled (interrupting a blocked read or write at once), and the backoff sleep selects on
// ctx.Done. A stop by the context returns ErrStopped.
package agency

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
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

// ErrBetsMismatch marks a RESUME that does not match the bets file: the bets stored for the
// agency are not the file's (it changed, or another program claims the agency). Nothing more
// is sent.
var ErrBetsMismatch = errors.New("the bets file differs from the bets stored for this agency")

// RefusedError is an ERROR answer that resending cannot fix (every code but DUPLICATE_FIN,
// IDLE_TIMEOUT, SHUTTING_DOWN and INTERNAL_ERROR, so BETS_MISMATCH and AGENCY_MISMATCH among
// them): the run stops with it.
type RefusedError struct {
	Answer protocol.Error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused: code %s, position %d, reason %q", e.Answer.Code, e.Answer.Position, e.Answer.Reason)
}

// connError is a broken connection (dial, read or write failure, EOF, timeout, or an ERROR
// asking to come back later): the session reconnects and carries on.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

func broken(format string, args ...any) error {
	return &connError{fmt.Errorf(format, args...)}
}

// tlsError is a TLS failure on a connection: a failed handshake (the central's certificate is
// not the CA's or not for tls.serverName, the central refused the agency's certificate, a
// central that does not speak TLS 1.3) or a TLS alert from the central. Its message starts
// with "tls: " so the connect line says what failed; it is retried like any broken connection,
// since a central restarting may refuse for a moment.
type tlsError struct {
	stage string // "handshake with server:12345", "refused by the central", ...
	err   error
}

func (e *tlsError) Error() string {
	// crypto/tls's own messages start with "tls: " too: say it once.
	return "tls: " + e.stage + ": " + strings.TrimPrefix(e.err.Error(), "tls: ")
}

func (e *tlsError) Unwrap() error { return e.err }

// closedByPeer reports whether err says the peer closed the connection (EOF, or a reset).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// alertIn returns the TLS alert the peer sent that err holds, if any: crypto/tls returns it as
// a *net.OpError whose Op is "remote error" ("remote error: tls: bad certificate").
func alertIn(err error) (error, bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return op, true
	}
	return nil, false
}

// runStats sums up a run for its log lines.
type runStats struct {
	bets        int      // valid bets sent in this run, each counted once however often resent
	batches     int      // batches sent in this run, each counted once
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
	builder *bets.Builder // set once the first RESUME is verified

	conn        net.Conn
	br          *bufio.Reader
	bw          *bufio.Writer
	stopConn    func() bool
	established bool // the central has answered on this connection

	verified    bool          // the first RESUME was checked against the file
	acked       uint32        // the agency's bets 1..acked are stored (RESUME or ACK)
	ackedChain  uint32        // their chain
	unacked     []*bets.Batch // in flight, oldest first; at most cfg.BatchWindow
	eof         bool          // the whole file has been read into batches
	sendDone    bool          // every batch acknowledged
	finRecorded bool          // the last RESUME says the FIN is recorded: none to send
	finDone     bool
	failures    int // consecutive failures since the last good answer

	stats runStats
}

// TCP keepalive of the connection to the central: a silent peer is declared dead after about
// 5 + 3*2 = 11 seconds.
const (
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
)

// New opens the bets file (data.path); the file is read lazily, row by row, during Run. Every
// connection to the central is TLS with tlsConfig (internal/transport.Client): there is no
// plaintext mode, so a nil tlsConfig is an error.
func New(cfg config.Config, tlsConfig *tls.Config, log *logs.Logger) (*Agency, error) {
	if tlsConfig == nil {
		return nil, errors.New("agency: no TLS configuration")
	}
	f, err := os.Open(cfg.DataPath)
	if err != nil {
		return nil, fmt.Errorf("data.path: %w", err)
	}
	// The dialer's Timeout bounds the TCP connect and the TLS handshake together. TCP
	// keepalive probes find a connection that died silently (a network cut) within about
	// keepAliveIdle + keepAliveCount * keepAliveInterval, even while the agency waits minutes
	// for a held winners query: it then reconnects, and its new session supersedes the old one.
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: cfg.IOTimeout, KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
		}},
		Config: tlsConfig,
	}
	return &Agency{
		cfg:    cfg,
		log:    log,
		dial:   d.DialContext,
		file:   f,
		reader: bets.NewReader(f),
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

// Run sends every bet the central does not hold yet, the FIN and the winners query,
// reconnecting as needed. It returns nil once the winners are known, ErrStopped if ctx was
// cancelled, or the error that ended it.
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
	a.conn, a.br, a.bw, a.stopConn, a.established = nil, nil, nil, nil, false
}

// attempt connects if needed and runs the session from wherever it stands.
func (a *Agency) attempt(ctx context.Context) error {
	if a.conn == nil {
		conn, err := a.dial(ctx, "tcp", a.cfg.ServerAddress)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				return broken("%w", err) // "dial tcp host:port: ...": no TCP connection
			}
			return &connError{&tlsError{"handshake with " + a.cfg.ServerAddress, err}}
		}
		a.conn = conn
		a.br = bufio.NewReaderSize(conn, protocol.MaxFrame)
		a.bw = bufio.NewWriterSize(conn, 4*protocol.MaxFrame)
		a.stopConn = context.AfterFunc(ctx, func() { _ = conn.Close() })
		// "connect | result: success" is logged when the central answers the HELLO (read):
		// with TLS 1.3 the central's verdict on the agency's certificate arrives only then.
		if err := a.hello(); err != nil {
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
		if a.finRecorded {
			a.log.Info("fin", logs.Success, "batches", a.stats.batches, "detail", "already recorded")
		} else {
			if err := a.fin(); err != nil {
				return err
			}
			a.log.Info("fin", logs.Success, "batches", a.stats.batches)
		}
		a.finDone = true
	}
	docs, err := a.winners()
	if err != nil {
		return err
	}
	a.stats.winners = docs
	a.log.Info("consulta_ganadores", logs.Success, "cant_ganadores", len(docs))
	return nil
}

// hello says HELLO on a fresh connection, reads the RESUME answer, brings the session in line
// with it (verify the first time, resync afterwards) and resends the batches still in flight.
func (a *Agency) hello() error {
	a.writeDeadline()
	if err := protocol.Send(a.bw, protocol.Hello{Agency: a.cfg.ID}); err != nil {
		return broken("send HELLO: %w", err)
	}
	m, err := a.read(a.cfg.IOTimeout)
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
	if !a.verified {
		err = a.verify(r)
	} else {
		err = a.resync(r)
	}
	if err != nil {
		return err
	}
	if !a.finDone {
		a.finRecorded = r.Finished
	}
	return a.resend()
}

// verify runs at the first RESUME of a run, before any bet is sent: the file's first
// r.Stored bets must be the ones the central stores (same number, same chain). It skips them
// and numbers the next bets from r.Stored+1, however this run cuts its batches. With the FIN
// recorded, the file must hold no bet after them.
func (a *Agency) verify(r protocol.Resume) error {
	n, chain, err := skipBets(a.reader, r.Stored, 0, a.invalidRow)
	if err != nil {
		return fmt.Errorf("read %s: %w", a.cfg.DataPath, err)
	}
	if n < r.Stored || chain != r.Chain {
		return a.mismatch(r, chain, a.reasonDiffers())
	}
	if r.Finished {
		more, all, err := skipBets(a.reader, math.MaxUint32, chain, a.invalidRow)
		if err != nil {
			return fmt.Errorf("read %s: %w", a.cfg.DataPath, err)
		}
		if more > 0 {
			return a.mismatch(r, all, a.reasonAfterFin())
		}
		a.eof = true
	}
	a.verified = true
	a.acked, a.ackedChain = r.Stored, r.Chain
	a.builder = bets.NewBuilder(a.cfg.ID, a.cfg.BatchMaxAmount, r.Stored, r.Chain)
	if r.Stored > 0 {
		a.log.Info("verificar_apuestas", logs.Success, "stored", r.Stored)
	}
	return nil
}

// resync runs at the RESUME of a reconnection. The central stores either exactly the
// acknowledged bets, and every batch in flight is resent, or also some of the batches in
// flight whose ACK was lost: RESUME then ends on one of them, with its chain, and those up to
// it are dropped. Anything else (fewer bets than acknowledged, a position inside a batch,
// another chain) means the stored bets are not this run's.
func (a *Agency) resync(r protocol.Resume) error {
	covered := -1 // how many batches in flight the central stores
	if r.Stored == a.acked && r.Chain == a.ackedChain {
		covered = 0
	}
	for i, bt := range a.unacked {
		if bt.Last() == r.Stored && bt.ChainAfter == r.Chain {
			covered = i + 1
		}
	}
	if covered < 0 {
		chain, err := a.fileChain(r.Stored)
		if err != nil {
			return err
		}
		return a.mismatch(r, chain, a.reasonDiffers())
	}
	if covered > 0 {
		for _, bt := range a.unacked[:covered] {
			a.builder.Recycle(bt)
		}
		clear(a.unacked[:covered])
		a.unacked = a.unacked[covered:]
		a.acked, a.ackedChain = r.Stored, r.Chain
		a.failures = 0 // stored bets are progress, acknowledged or not
	}
	if r.Finished && !a.finDone {
		// This run sends its FIN only once all its bets are stored: with bets still to store,
		// the recorded FIN is not this run's.
		if len(a.unacked) == 0 && !a.eof {
			bt, err := a.nextBatch()
			if err != nil {
				return err
			}
			if bt != nil {
				a.unacked = append(a.unacked, bt)
			}
		}
		if len(a.unacked) > 0 {
			chain, err := a.fileChain(math.MaxUint32)
			if err != nil {
				return err
			}
			return a.mismatch(r, chain, a.reasonAfterFin())
		}
	}
	return nil
}

func (a *Agency) reasonDiffers() string {
	return fmt.Sprintf("the bets file differs from the bets stored for this agency (changed, or another program claims agency %d)", a.cfg.ID)
}

func (a *Agency) reasonAfterFin() string {
	return fmt.Sprintf("the bets file holds bets after the ones stored with this agency's FIN, and bets after the recorded FIN cannot be stored (changed, or another program claims agency %d)", a.cfg.ID)
}

// mismatch logs why the bets file does not match what the central stores and returns the
// error that ends the run. fileChain is the chain of the file's bets that should be the stored
// ones: its first r.Stored (all of them if it holds fewer), or all of them after a FIN.
func (a *Agency) mismatch(r protocol.Resume, fileChain uint32, reason string) error {
	a.log.Error("verificar_apuestas", logs.Fail, "stored", r.Stored, "chain", fmt.Sprintf("%08x", r.Chain),
		"file_chain", fmt.Sprintf("%08x", fileChain), "reason", reason)
	return fmt.Errorf("%w: stored %d bets with chain %08x, the file's chain is %08x", ErrBetsMismatch, r.Stored, r.Chain, fileChain)
}

// fileChain is the chain of the file's first n valid bets (of all of them if it holds fewer),
// read again from the start: a reconnection's check runs past them.
func (a *Agency) fileChain(n uint32) (uint32, error) {
	f, err := os.Open(a.cfg.DataPath)
	if err != nil {
		return 0, fmt.Errorf("data.path: %w", err)
	}
	defer f.Close()
	_, chain, err := skipBets(bets.NewReader(f), n, 0, func(*bets.RowError) {})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", a.cfg.DataPath, err)
	}
	return chain, nil
}

// skipBets reads up to n valid bets from r, passing each invalid row on the way to invalid,
// and returns how many it read and their chain continued from chain.
func skipBets(r *bets.Reader, n, chain uint32, invalid func(*bets.RowError)) (uint32, uint32, error) {
	var read uint32
	for read < n {
		line, err := nextBet(r, invalid)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return read, chain, err
		}
		read++
		chain = protocol.Chain(chain, line)
	}
	return read, chain, nil
}

// nextBet returns r's next valid bet line, passing each invalid row on the way to invalid;
// io.EOF at the end of the file.
func nextBet(r *bets.Reader, invalid func(*bets.RowError)) ([]byte, error) {
	for {
		line, err := r.Next()
		if err == nil {
			return line, nil
		}
		// Declared here, on the error path only: errors.As makes it escape to the heap.
		var rowErr *bets.RowError
		switch {
		case errors.As(err, &rowErr):
			invalid(rowErr)
		case errors.Is(err, io.EOF):
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}

// invalidRow logs and counts an invalid row of the file.
func (a *Agency) invalidRow(e *bets.RowError) {
	a.stats.invalidRows++
	a.log.Warning("leer_apuesta", logs.Fail, "line", e.Line, "reason", e.Reason)
}

// resend writes every unacknowledged batch again, in order, on a fresh connection.
func (a *Agency) resend() error {
	if len(a.unacked) == 0 {
		return nil
	}
	a.writeDeadline()
	for _, bt := range a.unacked {
		if _, err := a.bw.Write(bt.Frame); err != nil {
			return broken("resend batch of bets %d..%d: %w", bt.First, bt.Last(), err)
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
			a.stats.batches++
			a.stats.bets += bt.Count
			if _, err := a.bw.Write(bt.Frame); err != nil {
				return broken("send batch of bets %d..%d: %w", bt.First, bt.Last(), err)
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
		// Read every answer that has already arrived before refilling the window: the central
		// answers a group commit at once, and the batches those answers free then leave
		// together (one flush, one TLS record, one syscall on each side) instead of one by one.
		for len(a.unacked) > 0 && a.frameBuffered() {
			if err := a.readAck(); err != nil {
				return err
			}
		}
	}
}

// frameBuffered reports whether a whole frame is already in the read buffer, so that reading
// it does not wait for the network.
func (a *Agency) frameBuffered() bool {
	buffered := a.br.Buffered()
	if buffered < protocol.HeaderSize {
		return false
	}
	head, _ := a.br.Peek(protocol.HeaderSize)
	_, length, err := protocol.ParseHeader([protocol.HeaderSize]byte(head))
	return err == nil && buffered >= protocol.HeaderSize+length
}

// nextBatch reads rows until a batch is complete; it returns nil at the end of the file when
// no bet is pending. Invalid rows are logged and skipped.
func (a *Agency) nextBatch() (*bets.Batch, error) {
	for {
		line, err := nextBet(a.reader, a.invalidRow)
		if errors.Is(err, io.EOF) {
			a.eof = true
			return a.builder.Flush(), nil
		}
		var full *bets.Batch
		if err == nil {
			full, err = a.builder.Add(line)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a.cfg.DataPath, err)
		}
		if full != nil {
			return full, nil
		}
	}
}

// read reads one frame with a deadline of d. Framing violations are fatal; I/O errors, TLS
// alerts and ERROR IDLE_TIMEOUT / SHUTTING_DOWN / INTERNAL_ERROR are broken connections (the
// central closes the connection after them, and resending may succeed later); other ERRORs
// are refusals. The first frame of a connection logs it as established.
func (a *Agency) read(d time.Duration) (protocol.Message, error) {
	_ = a.conn.SetReadDeadline(time.Now().Add(d))
	m, err := protocol.ReadFrame(a.br)
	if err != nil {
		if _, ok := protocol.CodeOf(err); ok {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if alert, ok := alertIn(err); ok {
			stage := "alert from the central"
			if !a.established {
				stage = "refused by the central" // e.g. it does not accept this agency's certificate
			}
			return nil, &connError{&tlsError{stage, alert}}
		}
		if !a.established && closedByPeer(err) {
			// The central closes a connection whose verified certificate it does not take as
			// an agency of this round (e.g. agency-7 of 5) without a TLS alert.
			return nil, broken("read: %w (the central closed the connection before answering HELLO: does it accept this agency's certificate?)", err)
		}
		return nil, broken("read: %w", err)
	}
	if !a.established {
		a.established = true
		a.log.Info("connect", logs.Success, "server_address", a.cfg.ServerAddress)
	}
	if e, ok := m.(protocol.Error); ok {
		switch e.Code {
		case protocol.CodeIdleTimeout, protocol.CodeShuttingDown, protocol.CodeInternalError:
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
	oldest := a.unacked[0]
	ack, ok := m.(protocol.Ack)
	if !ok {
		return fmt.Errorf("%w: got %s while waiting for ACK of bets %d..%d", ErrProtocol, describe(m), oldest.First, oldest.Last())
	}
	if ack.Agency != a.cfg.ID || ack.Stored != oldest.Last() {
		return fmt.Errorf("%w: ACK agency %d stored %d, expected agency %d stored %d", ErrProtocol, ack.Agency, ack.Stored, a.cfg.ID, oldest.Last())
	}
	// seq numbers the batches this run sent, from 1: the oldest in flight is the one answered.
	seq := a.stats.batches - len(a.unacked) + 1
	a.unacked[0] = nil
	a.unacked = a.unacked[1:]
	a.acked, a.ackedChain = ack.Stored, oldest.ChainAfter
	a.failures = 0
	a.log.Debug("batch_ack", logs.Success, "seq", seq, "cantidad", oldest.Count, "stored", ack.Stored)
	a.builder.Recycle(oldest)
	return nil
}

func describe(m protocol.Message) string {
	if e, ok := m.(protocol.Error); ok {
		return fmt.Sprintf("ERROR %s (%s)", e.Code, e.Reason)
	}
	return m.Type().String()
}

// fin sends FIN, announcing the agency's bets (all acknowledged: the last position) and their
// chain, and waits for FIN_ACK; DUPLICATE_FIN means an earlier FIN was recorded.
func (a *Agency) fin() error {
	a.writeDeadline()
	if err := protocol.Send(a.bw, protocol.Fin{Agency: a.cfg.ID, Bets: a.acked, Chain: a.ackedChain}); err != nil {
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
