// Package agency owns one agency's session with the central server. On every connection it
// says HELLO and brings itself in line with the RESUME answer: the first time, it checks that
// the bets the central stores for it are the first bets of its file (their checksum chain) and
// skips them; on a reconnection, it drops the batches in flight that the central stored
// without acknowledging them. It then streams the rest of the file in pipelined BET batches,
// reconnecting with bounded exponential backoff and resending what was not stored, sends FIN
// and asks for its winners. Bets are numbered by their position among the file's valid bets,
// so every bet is stored exactly once however the batches are cut, from one run to the next.
//
// A BET refused with BETS_MISMATCH or SEQUENCE_GAP means the bets stored for the agency moved
// under the connection (an earlier connection of it, of a killed process, had a batch still
// buffered at the central): the agency says HELLO again on a new connection, checks its file
// against the new RESUME as at start and goes on from the first bet not stored. It counts as
// a failed attempt, so a real conflict still ends the run.
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
//
// This file owns the run: its steps, and what a failed step leads to (retry with backoff,
// check the file again, or stop). conn.go owns a connection, session.go the messages of each
// step, window.go the batches in flight, check.go the check of the file, source.go its
// reading, backoff.go the waits.
package agency

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

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

// errStoredMoved marks a BET refused with BETS_MISMATCH or SEQUENCE_GAP: the bets stored for
// the agency are not where the connection's RESUME and ACKs left them.
var errStoredMoved = errors.New("the bets stored for this agency changed under this connection")

// step is where the run stands. Every step but stepDone needs a connection: without one, the
// run connects and says HELLO first.
type step int

const (
	stepHello   step = iota // check the file against the next RESUME (at start, or after the stored bets moved)
	stepSend                // send the bets not stored yet, until every batch is acknowledged
	stepFin                 // send the FIN
	stepWinners             // ask for the winners
	stepDone
)

// runStats sums up a run for its log lines.
type runStats struct {
	bets    int      // valid bets sent in this run, each counted once however often resent
	batches int      // batches sent in this run carrying a bet not counted before
	winners []string // the agency's winning documents
}

// Agency is one agency's run. Create it with New, call Run once, then Close.
type Agency struct {
	cfg     config.Config
	log     *slog.Logger
	dial    dialFunc
	backoff backoff
	check   checker
	src     *source

	step   step
	conn   *conn           // nil between connections
	resume protocol.Resume // the RESUME answer of the current connection
	win    *window         // set once a RESUME is checked against the file

	failures   int             // consecutive failed attempts since the last good answer
	lastAnswer *protocol.Error // the last ERROR that closed a session since then
	sentUpTo   uint32          // the last position counted in stats.bets
	stats      runStats
}

// New opens the bets file (data.path); the file is read lazily, row by row, during Run. Every
// connection to the central is TLS with tlsConfig (internal/transport.Client): there is no
// plaintext mode, so a nil tlsConfig is an error.
func New(cfg config.Config, tlsConfig *tls.Config, log *slog.Logger) (*Agency, error) {
	if tlsConfig == nil {
		return nil, errors.New("agency: no TLS configuration")
	}
	src, err := openSource(cfg.DataPath, log)
	if err != nil {
		return nil, err
	}
	return &Agency{
		cfg:     cfg,
		log:     log,
		dial:    newDialer(cfg.IOTimeout, tlsConfig),
		backoff: backoff{initial: cfg.RetryInitialBackoff, max: cfg.RetryMaxBackoff},
		check:   checker{id: cfg.ID, path: cfg.DataPath, log: log},
		src:     src,
	}, nil
}

// Close closes the connection (if one is open) and the bets file, logging one line for each.
func (a *Agency) Close() {
	if a.conn != nil {
		a.dropConn()
		a.log.Info("close_connection", logs.Success)
	}
	a.src.close()
}

func (a *Agency) dropConn() {
	if a.conn != nil {
		a.conn.close()
		a.conn = nil
	}
}

// Run sends every bet the central does not hold yet, the FIN and the winners query,
// reconnecting as needed. It returns nil once the winners are known, ErrStopped if ctx was
// cancelled, or the error that ended it.
func (a *Agency) Run(ctx context.Context) error {
	for a.step != stepDone {
		err := a.advance(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ErrStopped
		}
		var ce *connError
		switch {
		case errors.Is(err, errStoredMoved):
			a.dropConn()
			a.failures++
			a.step = stepHello
			a.log.Warn("verificar_apuestas", logs.InProgress, "attempt", a.failures, "reason",
				"the bets stored for this agency changed since the last RESUME (an earlier connection of it?): checking the file again",
				"error", err)
		case errors.As(err, &ce):
			a.dropConn()
			a.failures++
			err = a.withLastAnswer(err)
			a.log.Warn("connect", logs.Fail, "attempt", a.failures, "error", err)
		default:
			return err
		}
		if a.failures >= a.cfg.RetryAttempts {
			return fmt.Errorf("giving up after %d failed attempts: %w", a.failures, err)
		}
		if !a.backoff.sleep(ctx, a.failures) {
			return ErrStopped
		}
	}
	return nil
}

// withLastAnswer adds to err the ERROR (code and reason) with which the central closed an
// earlier session since the last good answer, so that a later failure (a refused dial, say,
// while the central restarts) still names the cause. err stays what it wraps.
func (a *Agency) withLastAnswer(err error) error {
	var sc *sessionClosedError
	if errors.As(err, &sc) {
		a.lastAnswer = &sc.Answer
		return err
	}
	if a.lastAnswer != nil {
		return fmt.Errorf("%w (the central's last answer: %s: %s)", err, a.lastAnswer.Code, a.lastAnswer.Reason)
	}
	return err
}

// progress records a good answer of the central: the failures so far are forgotten.
func (a *Agency) progress() {
	a.failures = 0
	a.lastAnswer = nil
}

// advance runs the current step, connecting and saying HELLO first if there is no
// connection, and moves to the next step when it is done.
func (a *Agency) advance(ctx context.Context) error {
	if a.conn == nil {
		c, err := dialConn(ctx, a.dial, a.cfg.ServerAddress, a.cfg.IOTimeout, a.log)
		if err != nil {
			return err
		}
		a.conn = c
		return a.hello()
	}
	switch a.step {
	case stepSend:
		if err := a.sendBets(); err != nil {
			return err
		}
		a.log.Info("apuestas_enviadas", logs.Success, "cantidad", a.stats.bets,
			"batches", a.stats.batches, "invalid_rows", a.src.invalidRows)
		a.step = stepFin
		if a.resume.Finished {
			a.finRecorded()
		}
	case stepFin:
		if err := a.fin(); err != nil {
			return err
		}
		a.log.Info("fin", logs.Success, "batches", a.stats.batches)
		a.step = stepWinners
	case stepWinners:
		docs, err := a.winners()
		if err != nil {
			return err
		}
		a.stats.winners = docs
		a.log.Info("consulta_ganadores", logs.Success, "cant_ganadores", len(docs))
		a.step = stepDone
	default:
		return fmt.Errorf("agency: step %d with a connection", a.step) // hello moves past stepHello
	}
	return nil
}

// finRecorded moves past stepFin when the central's RESUME says the agency's FIN is recorded.
func (a *Agency) finRecorded() {
	a.log.Info("fin", logs.Success, "batches", a.stats.batches, "detail", "already recorded")
	a.step = stepWinners
}
