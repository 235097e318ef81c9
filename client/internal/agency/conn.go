// This file owns one connection to the central: the dial (tls.Dialer with TCP keepalive, so
// mutual TLS 1.3 with the configuration internal/transport built), the bufio buffers, the
// per-operation deadlines, the close by context.AfterFunc when the run's context is cancelled,
// reading one frame, and the classification of what went wrong: a broken connection
// (connError, retried), a TLS failure or alert (tlsError, retried), a peer that closed, a
// transient ERROR (sessionClosedError, retried) or a refusal resending cannot fix
// (RefusedError, fatal).

package agency

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

// RefusedError is an ERROR answer that resending cannot fix (every code but DUPLICATE_FIN,
// IDLE_TIMEOUT, SHUTTING_DOWN and INTERNAL_ERROR, so BETS_MISMATCH and AGENCY_MISMATCH among
// them): the run stops with it, but for a BET refused with BETS_MISMATCH or SEQUENCE_GAP,
// which makes the agency check its file again (see Run).
type RefusedError struct {
	Answer protocol.Error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused: code %s, position %d, reason %q", e.Answer.Code, e.Answer.Position, e.Answer.Reason)
}

// sessionClosedError is an ERROR IDLE_TIMEOUT, SHUTTING_DOWN or INTERNAL_ERROR: the central
// closes the connection after it, and resending may succeed later. Its message carries the
// code and the central's reason verbatim.
type sessionClosedError struct {
	Answer protocol.Error
}

func (e *sessionClosedError) Error() string {
	return fmt.Sprintf("server closed the session: %s: %s", e.Answer.Code, e.Answer.Reason)
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

// silentCloseHint follows a read error when the central closed the connection before
// answering HELLO, without a TLS alert or an ERROR: the central does that with a verified
// certificate that is not an agency of its round, but also when it fails.
const silentCloseHint = "the central closed the connection before answering HELLO: it refuses certificates of agencies outside its round, or it failed; see its log"

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

// TCP keepalive of the connection to the central: a silent peer is declared dead after about
// 5 + 3*2 = 11 seconds.
const (
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
)

// dialFunc opens the TLS connection to the central (tls.Dialer.DialContext).
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// newDialer returns the dial of every connection: its Timeout (io.timeout) bounds the TCP
// connect and the TLS handshake together. TCP keepalive probes find a connection that died
// silently (a network cut) within about keepAliveIdle + keepAliveCount * keepAliveInterval,
// even while the agency waits minutes for a held winners query: it then reconnects, and its
// new session supersedes the old one.
func newDialer(timeout time.Duration, tlsConfig *tls.Config) dialFunc {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
		}},
		Config: tlsConfig,
	}
	return d.DialContext
}

// conn is one connection to the central. It counts as established (action: connect | result:
// success) once the central has answered on it: with TLS 1.3 the central's verdict on the
// agency's certificate arrives only then.
type conn struct {
	nc          net.Conn
	br          *bufio.Reader
	bw          *bufio.Writer
	stop        func() bool // unregisters the close on cancellation
	timeout     time.Duration
	address     string
	log         *slog.Logger
	established bool
	finSent     bool // the FIN went out on this connection behind the last batches: its answer follows their ACKs
}

// dialConn connects to address; ctx cancelled closes the connection at once, interrupting a
// blocked read or write.
func dialConn(ctx context.Context, dial dialFunc, address string, timeout time.Duration, log *slog.Logger) (*conn, error) {
	nc, err := dial(ctx, "tcp", address)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, broken("%w", err) // "dial tcp host:port: ...": no TCP connection
		}
		return nil, &connError{&tlsError{"handshake with " + address, err}}
	}
	return &conn{
		nc:      nc,
		br:      bufio.NewReaderSize(nc, protocol.MaxFrame),
		bw:      bufio.NewWriterSize(nc, 4*protocol.MaxFrame),
		stop:    context.AfterFunc(ctx, func() { _ = nc.Close() }),
		timeout: timeout,
		address: address,
		log:     log,
	}, nil
}

// close closes the connection (it may already be closed by the context).
func (c *conn) close() {
	c.stop()
	_ = c.nc.Close()
}

// send writes m and flushes it within io.timeout; what names the message in an error.
func (c *conn) send(m protocol.Message, what string) error {
	c.writeDeadline()
	if err := protocol.Send(c.bw, m); err != nil {
		return c.writeError(broken("send %s: %w", what, err))
	}
	return nil
}

// writeDeadline bounds the writes that follow, up to the next flush, by io.timeout.
func (c *conn) writeDeadline() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
}

// writeMessage buffers m, to go out with the next flush.
func (c *conn) writeMessage(m protocol.Message, what string) error {
	if err := protocol.WriteFrame(c.bw, m); err != nil {
		return c.writeError(broken("send %s: %w", what, err))
	}
	return nil
}

// write buffers a whole encoded frame; the caller says which in the error.
func (c *conn) write(frame []byte) error {
	_, err := c.bw.Write(frame)
	return err
}

func (c *conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		return c.writeError(broken("write: %w", err))
	}
	return nil
}

// Looking for the central's answer after a failed write: how long, and how many frames.
const (
	pendingAnswerWait   = 200 * time.Millisecond
	pendingAnswerFrames = 256
)

// writeError is the error of a failed write, err. A central that closes a session with an
// ERROR (INTERNAL_ERROR, SHUTTING_DOWN, IDLE_TIMEOUT) may close it while the agency is still
// writing (a big window): its answer, received but not read yet, names the real cause. It is
// looked for among the frames already received, and returned first when there is one.
func (c *conn) writeError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err // a silent peer: nothing to read either
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(pendingAnswerWait))
	for range pendingAnswerFrames {
		m, rerr := protocol.ReadFrame(c.br)
		if rerr != nil {
			break
		}
		if e, ok := m.(protocol.Error); ok && closesSession(e.Code) {
			return &connError{fmt.Errorf("%w; %w", &sessionClosedError{e}, err)}
		}
	}
	return err
}

// closesSession reports whether the central closes the session after an ERROR with code, to
// be retried later (IDLE_TIMEOUT, SHUTTING_DOWN, INTERNAL_ERROR).
func closesSession(code protocol.ErrorCode) bool {
	switch code {
	case protocol.CodeIdleTimeout, protocol.CodeShuttingDown, protocol.CodeInternalError:
		return true
	}
	return false
}

// frameBuffered reports whether a whole frame is already in the read buffer, so that reading
// it does not wait for the network.
func (c *conn) frameBuffered() bool {
	buffered := c.br.Buffered()
	if buffered < protocol.HeaderSize {
		return false
	}
	head, _ := c.br.Peek(protocol.HeaderSize)
	_, length, err := protocol.ParseHeader([protocol.HeaderSize]byte(head))
	return err == nil && buffered >= protocol.HeaderSize+length
}

// read reads one frame with a deadline of d. Framing violations are fatal (ErrProtocol); I/O
// errors, TLS alerts and ERROR IDLE_TIMEOUT / SHUTTING_DOWN / INTERNAL_ERROR are broken
// connections (the central closes the connection after them, and resending may succeed
// later); DUPLICATE_FIN is returned as a message for the caller to judge; other ERRORs are
// refusals. The first frame of a connection logs it as established.
func (c *conn) read(d time.Duration) (protocol.Message, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	m, err := protocol.ReadFrame(c.br)
	if err != nil {
		if _, ok := protocol.CodeOf(err); ok {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if alert, ok := alertIn(err); ok {
			stage := "alert from the central"
			if !c.established {
				stage = "refused by the central" // e.g. it does not accept this agency's certificate
			}
			return nil, &connError{&tlsError{stage, alert}}
		}
		if !c.established && closedByPeer(err) {
			// The central closes a connection whose verified certificate it does not take as
			// an agency of this round (e.g. agency-7 of 5) without a TLS alert, and so does a
			// central that fails.
			return nil, broken("read: %w (%s)", err, silentCloseHint)
		}
		return nil, broken("read: %w", err)
	}
	if !c.established {
		c.established = true
		c.log.Info("connect", logs.Success, "server_address", c.address)
	}
	if e, ok := m.(protocol.Error); ok {
		switch {
		case closesSession(e.Code):
			return nil, &connError{&sessionClosedError{e}}
		case e.Code == protocol.CodeDuplicateFin:
			return m, nil // the caller decides
		}
		return nil, &RefusedError{Answer: e}
	}
	return m, nil
}

// refusal returns the RefusedError err holds, or nil.
func refusal(err error) *RefusedError {
	var re *RefusedError
	if errors.As(err, &re) {
		return re
	}
	return nil
}

// describe names a message in a protocol violation.
func describe(m protocol.Message) string {
	if e, ok := m.(protocol.Error); ok {
		return fmt.Sprintf("ERROR %s (%s)", e.Code, e.Reason)
	}
	return m.Type().String()
}
