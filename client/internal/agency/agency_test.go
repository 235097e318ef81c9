// Tests of the agency session against a small in-test central that speaks protocol version 2
// (HELLO / RESUME, positions, chains) over mutual TLS 1.3 (crypto/tls.NewListener, credentials
// issued by internal/certs into t.TempDir at test time, never committed), and, like the
// central, takes the agency's identity from its verified certificate: happy path, pipelining
// window, dropped connections with resend, batches stored without ACK dropped on reconnect,
// resume after a restart with another batch size, a file that does not match what is stored,
// a recorded FIN, quoted names, DUPLICATE_FIN, transient and fatal answers (AGENCY_MISMATCH
// included), SHUTTING_DOWN during the winners wait, cancellation, a server that is never up,
// a central whose certificate the agency refuses (another CA, another name) and a central
// that refuses the agency's certificate.

package agency

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lottery/client/internal/certs"
	"lottery/client/internal/certs/certstest"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
	"lottery/client/internal/transport"
)

const testTimeout = 10 * time.Second

// credentials issues a CA, a central certificate for 127.0.0.1 and localhost, and agencies
// 1..3 into a new temporary directory.
func credentials(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	req := certs.Request{Dir: dir, Agencies: 3, ServerNames: []string{"127.0.0.1", "localhost"}, Days: 1, CADays: 2}
	if _, err := certs.Issue(req); err != nil {
		t.Fatal(err)
	}
	return dir
}

// credentialsOfCA issues a central certificate for serverNames (and agencies 1..3) signed by
// the CA of caDir into a new temporary directory.
func credentialsOfCA(t *testing.T, caDir string, serverNames ...string) string {
	t.Helper()
	dir := certstest.WithCA(t, caDir)
	req := certs.Request{Dir: dir, Agencies: 3, ServerNames: serverNames, Days: 1, CADays: 2}
	if _, err := certs.Issue(req); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeServer is a minimal central for one agency: it stores bets by position on top of their
// chain, answers in order, and checks that every connection starts with HELLO. It speaks
// mutual TLS 1.3 and, like the central, refuses with AGENCY_MISMATCH a message naming another
// agency than the connection's certificate.
type fakeServer struct {
	t   *testing.T
	ln  net.Listener
	dir string // the credentials of the agencies it accepts

	// Behaviour, set before start.
	dropAfterBets   int                                               // first connection: close on reading the N-th BET
	ackBeforeDrop   int                                               // first connection: ACK only its first K BETs
	storeBeforeDrop int                                               // first connection: store the BETs up to this one, acknowledged or not
	windowCheck     int                                               // hold ACKs until this many BETs are pending, then check no more arrive
	betError        *protocol.Error                                   // answer every BET with this ERROR
	internalErrors  int                                               // answer the first N BETs with INTERNAL_ERROR and close
	finError        *protocol.Error                                   // answer every FIN with this ERROR
	dropAfterFin    int                                               // record the first N FINs but close instead of answering
	alwaysDupFin    bool                                              // answer every FIN with DUPLICATE_FIN (and record it)
	holdWinners     bool                                              // never answer WINNERS_QUERY
	shutdownQueries int                                               // answer the first N WINNERS_QUERY with SHUTTING_DOWN and close
	badAck          bool                                              // ACK stored+1 instead of stored
	closeUnanswered bool                                              // close every connection after the handshake, reading nothing
	resume          func(conn int, r protocol.Resume) protocol.Resume // alters the RESUME answers
	winners         []string                                          // documents to send
	pageSize        int                                               // documents per WINNERS page (0: all in one)
	queried         chan struct{}                                     // receives on every WINNERS_QUERY
	windowViolation string

	mu            sync.Mutex
	conns         int
	handshakeErrs []error                 // the handshakes that failed, in order
	peers         map[int]string          // the verified certificate name of each connection
	versions      map[int]uint16          // the TLS version of each connection
	types         map[int][]protocol.Type // the messages of each connection, by number from 1
	stored        []byte                  // the agency's bet lines, in position order
	count         uint32                  // bets stored
	chain         uint32                  // their chain
	lastBatch     *protocol.Bet           // the last batch stored, acknowledged again if resent
	finished      bool
	received      map[uint32]int // how many BETs carried each position, resends included
	fin           *protocol.Fin  // the FIN recorded
	finCount      int
	wg            sync.WaitGroup
	stopOnce      sync.Once
}

// newFakeServer starts listening with new credentials: the agencies it accepts use the same
// ones (srv.config).
func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	dir := credentials(t)
	return newFakeServerTLS(t, dir, dir)
}

// newFakeServerTLS listens with serverDir's central certificate and accepts agencies whose
// certificates clientCADir's CA signed.
func newFakeServerTLS(t *testing.T, serverDir, clientCADir string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeServer{t: t, ln: tls.NewListener(ln, certstest.CentralTLS(t, serverDir, clientCADir)), dir: clientCADir,
		types: map[int][]protocol.Type{}, peers: map[int]string{}, versions: map[int]uint16{},
		received: map[uint32]int{}, queried: make(chan struct{}, 16)}
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

// config is agency 3's configuration for this server and the bets file data.
func (s *fakeServer) config(data string) config.Config { return testConfig(s.dir, s.addr(), data) }

// preload stores lines (count canonical bet lines) as if an earlier run had sent them.
func (s *fakeServer) preload(lines []byte, finished bool) {
	s.stored = append([]byte(nil), lines...)
	s.count = uint32(bytes.Count(lines, []byte{'\n'}))
	s.chain = protocol.Chain(0, lines)
	s.finished = finished
}

func (s *fakeServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			n := s.conns
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c, n)
			}()
		}
	}()
	s.t.Cleanup(s.stop)
}

// stop closes the listener and waits for every connection to end: what the server recorded
// is then final.
func (s *fakeServer) stop() {
	s.stopOnce.Do(func() {
		s.ln.Close()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(testTimeout):
			s.t.Error("fake server goroutines did not finish")
		}
	})
}

// handshake runs the central's side of the TLS handshake and returns the agency name its
// certificate proves; on a failure it records it, and reads what the agency still sends until
// it closes, so the agency gets the alert rather than a reset connection.
func (s *fakeServer) handshake(c *tls.Conn, connNo int) (string, bool) {
	if err := c.Handshake(); err != nil {
		s.mu.Lock()
		s.handshakeErrs = append(s.handshakeErrs, err)
		s.mu.Unlock()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, c.NetConn())
		return "", false
	}
	st := c.ConnectionState()
	peer := st.PeerCertificates[0].Subject.CommonName
	s.mu.Lock()
	s.peers[connNo], s.versions[connNo] = peer, st.Version
	s.mu.Unlock()
	return peer, true
}

// agencyOf returns the agency a message names, for the messages an agency sends.
func agencyOf(m protocol.Message) (uint32, bool) {
	switch v := m.(type) {
	case protocol.Hello:
		return v.Agency, true
	case protocol.Bet:
		return v.Agency, true
	case protocol.Fin:
		return v.Agency, true
	case protocol.WinnersQuery:
		return v.Agency, true
	}
	return 0, false
}

func (s *fakeServer) serve(c net.Conn, connNo int) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	peer, ok := s.handshake(c.(*tls.Conn), connNo)
	if !ok || s.closeUnanswered {
		return
	}
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	send := func(m protocol.Message) bool { return protocol.Send(bw, m) == nil }
	betsOnConn := 0
	var pending []protocol.Bet // BETs read but not answered yet (windowCheck)
	for {
		m, err := protocol.ReadFrame(br)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.types[connNo] = append(s.types[connNo], m.Type())
		nth := len(s.types[connNo])
		s.mu.Unlock()
		if (nth == 1) != (m.Type() == protocol.TypeHello) {
			s.t.Errorf("connection %d: %s as message %d; HELLO must come first, once", connNo, m.Type(), nth)
			return
		}
		if agency, ok := agencyOf(m); ok && transport.AgencyName(agency) != peer {
			var position uint32
			if b, ok := m.(protocol.Bet); ok {
				position = b.First
			}
			reason := fmt.Sprintf("the certificate is %s's, the message names agency %d", peer, agency)
			if !send(protocol.Error{Code: protocol.CodeAgencyMismatch, Position: position, Reason: reason}) {
				return
			}
			continue
		}
		switch v := m.(type) {
		case protocol.Hello:
			s.mu.Lock()
			r := protocol.Resume{Agency: v.Agency, Stored: s.count, Chain: s.chain, Finished: s.finished}
			s.mu.Unlock()
			if s.resume != nil {
				r = s.resume(connNo, r)
			}
			if !send(r) {
				return
			}
		case protocol.Bet:
			betsOnConn++
			s.mu.Lock()
			for p := uint64(v.First); p < uint64(v.First)+uint64(v.Count); p++ {
				s.received[uint32(p)]++
			}
			internal := s.internalErrors > 0
			if internal {
				s.internalErrors--
			}
			s.mu.Unlock()
			if internal {
				send(protocol.Error{Code: protocol.CodeInternalError, Position: v.First, Reason: "disk full"})
				return
			}
			if connNo == 1 && s.dropAfterBets > 0 {
				if betsOnConn == s.dropAfterBets {
					return
				}
				if betsOnConn > s.ackBeforeDrop {
					if betsOnConn <= s.storeBeforeDrop {
						s.answerBet(v) // stored, the ACK lost
					}
					continue
				}
			}
			if s.betError != nil {
				e := *s.betError
				e.Position = v.First
				if !send(e) {
					return
				}
				continue
			}
			pending = append(pending, v)
			if s.windowCheck > 0 && len(pending) < s.windowCheck {
				continue
			}
			if s.windowCheck > 0 {
				// The client must now wait for an ACK: nothing more may arrive.
				_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
				if extra, err := protocol.ReadFrame(br); err == nil {
					s.mu.Lock()
					s.windowViolation = fmt.Sprintf("got %s with %d batches unacknowledged", extra.Type(), len(pending))
					s.mu.Unlock()
					return
				}
				_ = c.SetDeadline(time.Now().Add(testTimeout))
			}
			for _, b := range pending {
				if !send(s.answerBet(b)) {
					return
				}
			}
			pending = pending[:0]
		case protocol.Fin:
			ans := s.answerFin(v)
			s.mu.Lock()
			drop := s.dropAfterFin > 0
			if drop {
				s.dropAfterFin--
			}
			s.mu.Unlock()
			if drop || !send(ans) {
				return
			}
		case protocol.WinnersQuery:
			s.queried <- struct{}{}
			s.mu.Lock()
			shut := s.shutdownQueries > 0
			if shut {
				s.shutdownQueries--
			}
			s.mu.Unlock()
			if shut {
				send(protocol.Error{Code: protocol.CodeShuttingDown, Reason: "bye"})
				return
			}
			if s.holdWinners {
				_, _ = protocol.ReadFrame(br) // until the client goes away
				return
			}
			for _, p := range s.pages(v.Agency) {
				if !send(p) {
					return
				}
			}
		default:
			send(protocol.Error{Code: protocol.CodeUnknownType})
		}
	}
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

// csvFile writes n valid rows (plus the extra lines) and returns its path and the expected
// bet lines block.
func csvFile(t *testing.T, n int, extra ...string) (string, []byte) {
	t.Helper()
	var file, want bytes.Buffer
	for i := 0; i < n; i++ {
		line := fmt.Sprintf("Nombre%d,Apellido Núñez,%d,1990-01-%02d,%d", i, 30000000+i, i%28+1, i%10000)
		file.WriteString(line + "\r\n")
		want.WriteString(line + "\n")
	}
	for _, l := range extra {
		file.WriteString(l + "\n")
	}
	p := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(p, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, want.Bytes()
}

// firstLines returns the first n lines of a lines block.
func firstLines(lines []byte, n int) []byte {
	end := 0
	for ; n > 0; n-- {
		end += bytes.IndexByte(lines[end:], '\n') + 1
	}
	return lines[:end:end]
}

// testConfig is agency 3's configuration with the credentials of dir, the central at addr (its
// certificate checked for addr's host, as config does by default) and the bets file data.
func testConfig(dir, addr, data string) config.Config {
	host, _, _ := net.SplitHostPort(addr)
	return config.Config{
		ID: 3, ServerAddress: addr, LogLevel: logs.Info, BatchMaxAmount: 10, BatchWindow: 4,
		DataPath: data, RetryAttempts: 5, RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff: 20 * time.Millisecond, IOTimeout: 2 * time.Second, WinnersTimeout: 5 * time.Second,
		TLSCA: filepath.Join(dir, certs.CAFile), TLSCert: filepath.Join(dir, certs.AgencyFile(3)),
		TLSKey: filepath.Join(dir, certs.AgencyKeyFile(3)), TLSServerName: host,
	}
}

// clientTLS builds cfg's TLS configuration as the program does at start.
func clientTLS(t *testing.T, cfg config.Config) *tls.Config {
	t.Helper()
	c, err := transport.Client(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runAgency runs an agency with cfg (its TLS configuration built from cfg, as at start) under
// ctx and returns the agency, its log and Run's error.
func runAgency(t *testing.T, ctx context.Context, cfg config.Config) (*Agency, string, error) {
	t.Helper()
	return runAgencyTLS(t, ctx, cfg, clientTLS(t, cfg))
}

// runAgencyTLS runs an agency with cfg and the TLS configuration tlsConfig.
func runAgencyTLS(t *testing.T, ctx context.Context, cfg config.Config, tlsConfig *tls.Config) (*Agency, string, error) {
	t.Helper()
	var out syncBuffer
	a, err := New(cfg, tlsConfig, logs.New(&out, cfg.LogLevel))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err = <-done:
	case <-time.After(testTimeout):
		t.Fatal("Run did not return in time")
	}
	a.Close()
	return a, out.String(), err
}

func TestHappyPath(t *testing.T) {
	tests := []struct {
		name      string
		rows      int
		maxAmount int
		window    int
		winners   []string
		pageSize  int
		level     logs.Level
	}{
		{"several batches", 95, 10, 4, []string{"30000001", "30000002"}, 0, logs.Info},
		{"one page per winner", 30, 7, 1, []string{"1", "2", "3"}, 1, logs.Debug},
		{"no bets", 0, 10, 4, nil, 0, logs.Info},
		{"big window", 1000, 100, 64, []string{"5"}, 0, logs.Info},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.winners, srv.pageSize = tt.winners, tt.pageSize
			srv.start()
			path, want := csvFile(t, tt.rows)
			cfg := srv.config(path)
			cfg.BatchMaxAmount, cfg.BatchWindow, cfg.LogLevel = tt.maxAmount, tt.window, tt.level
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if got := srv.allStored(); !bytes.Equal(got, want) {
				t.Fatalf("server stored %d bytes, want %d", len(got), len(want))
			}
			srv.checkSentOnce(t, 1, uint32(tt.rows))
			batches := (tt.rows + tt.maxAmount - 1) / tt.maxAmount
			st := a.stats
			if st.bets != tt.rows || st.batches != batches {
				t.Fatalf("stats %+v, want %d bets %d batches", st, tt.rows, batches)
			}
			// The FIN announces the last position and the chain of every bet.
			if f := srv.recordedFin(); f == nil || f.Bets != uint32(tt.rows) || f.Chain != protocol.Chain(0, want) {
				t.Fatalf("FIN %+v, want %d bets with chain %08x", f, tt.rows, protocol.Chain(0, want))
			}
			if len(st.winners) != len(tt.winners) {
				t.Fatalf("winners %v, want %v", st.winners, tt.winners)
			}
			for _, line := range []string{
				"INFO action: connect | result: success | server_address: " + srv.addr() + "\n",
				fmt.Sprintf("INFO action: apuestas_enviadas | result: success | cantidad: %d | batches: %d | invalid_rows: 0\n", tt.rows, batches),
				fmt.Sprintf("INFO action: fin | result: success | batches: %d\n", batches),
				fmt.Sprintf("INFO action: consulta_ganadores | result: success | cant_ganadores: %d\n", len(tt.winners)),
				"INFO action: close_connection | result: success\n",
				"INFO action: close_file | result: success | path: " + path + "\n",
			} {
				if !strings.Contains(log, line) {
					t.Errorf("log lacks %q:\n%s", line, log)
				}
			}
			if strings.Contains(log, "verificar_apuestas") {
				t.Errorf("a fresh start logs verificar_apuestas:\n%s", log)
			}
			if tt.level == logs.Debug {
				if n := strings.Count(log, "action: apuesta_enviada | result: success | dni: "); n != tt.rows {
					t.Errorf("%d apuesta_enviada lines, want %d", n, tt.rows)
				}
				for _, line := range []string{
					"DEBUG action: apuesta_enviada | result: success | dni: 30000000 | numero: 0\n",
					"DEBUG action: batch_ack | result: success | seq: 1 | cantidad: 7 | stored: 7\n",
					"DEBUG action: batch_ack | result: success | seq: 5 | cantidad: 2 | stored: 30\n",
				} {
					if !strings.Contains(log, line) {
						t.Errorf("log lacks %q:\n%s", line, log)
					}
				}
			} else if n := strings.Count(log, "\n"); n > 8 {
				t.Errorf("%d log lines at INFO, want a handful:\n%s", n, log)
			}
		})
	}
}

// TestHappyPathOverMutualTLS checks every connection, a reconnection's included, is TLS 1.3
// carrying agency 3's verified certificate, and that the central's certificate is checked for
// tls.serverName, whatever host is dialled.
func TestHappyPathOverMutualTLS(t *testing.T) {
	for _, serverName := range []string{"127.0.0.1", "localhost"} {
		t.Run(serverName, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 2, 1, 1 // two connections
			srv.winners = []string{"30000001"}
			srv.start()
			path, want := csvFile(t, 25)
			cfg := srv.config(path)
			cfg.TLSServerName = serverName
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if !bytes.Equal(srv.allStored(), want) || len(a.stats.winners) != 1 {
				t.Fatalf("stored %d bytes, winners %v", len(srv.allStored()), a.stats.winners)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.conns != 2 || len(srv.handshakeErrs) != 0 {
				t.Fatalf("%d connections, failed handshakes %v", srv.conns, srv.handshakeErrs)
			}
			for conn := 1; conn <= 2; conn++ {
				if srv.peers[conn] != "agency-3" || srv.versions[conn] != tls.VersionTLS13 {
					t.Fatalf("connection %d: peer %q, version %x; want agency-3 over TLS 1.3", conn, srv.peers[conn], srv.versions[conn])
				}
			}
			if n := strings.Count(log, "INFO action: connect | result: success | server_address: "+srv.addr()+"\n"); n != 2 {
				t.Fatalf("%d connect lines, want 2:\n%s", n, log)
			}
		})
	}
}

// TestRefusesTheCentralsCertificate has a central present a certificate of another CA, or of
// the project CA for another name: every handshake fails on the agency's side, so not a byte
// of protocol is sent; each is logged as a TLS failure with its reason and retried within
// retry.attempts.
func TestRefusesTheCentralsCertificate(t *testing.T) {
	tests := []struct {
		name       string
		serverDir  func(t *testing.T, agencyDir string) string
		serverName string
		reason     string
	}{
		{"another CA", func(t *testing.T, _ string) string { return credentials(t) }, "",
			"failed to verify certificate: x509: certificate signed by unknown authority"},
		{"another name", func(t *testing.T, dir string) string { return credentialsOfCA(t, dir, "central.example") }, "server",
			"failed to verify certificate: x509: certificate is valid for central.example, not server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := credentials(t)
			srv := newFakeServerTLS(t, tt.serverDir(t, dir), dir)
			srv.start()
			path, _ := csvFile(t, 5)
			cfg := srv.config(path)
			cfg.RetryAttempts = 2
			if tt.serverName != "" {
				cfg.TLSServerName = tt.serverName
			}
			_, log, err := runAgency(t, context.Background(), cfg)
			var te *tlsError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
				t.Fatalf("Run error %v, want giving up on a TLS failure\n%s", err, log)
			}
			for k := 1; k <= 2; k++ {
				line := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: tls: handshake with %s: %s", k, srv.addr(), tt.reason)
				if !strings.Contains(log, line) {
					t.Fatalf("log lacks %q:\n%s", line, log)
				}
			}
			if strings.Contains(log, "action: connect | result: success") || strings.Contains(log, "close_connection") {
				t.Fatalf("a connection counted as established:\n%s", log)
			}
			srv.stop()
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.conns != 2 || len(srv.handshakeErrs) != 2 || len(srv.types) != 0 || len(srv.peers) != 0 {
				t.Fatalf("%d connections, failed handshakes %v, messages %v: want 2 failed handshakes and no message",
					srv.conns, srv.handshakeErrs, srv.types)
			}
		})
	}
}

// TestCentralRefusesTheAgencysCertificate has a central that trusts another CA's agencies:
// with TLS 1.3 the agency learns it when it reads the answer to its HELLO (an alert). It is
// logged as a TLS failure and retried; the central never reads a message.
func TestCentralRefusesTheAgencysCertificate(t *testing.T) {
	dir := credentials(t)
	srv := newFakeServerTLS(t, dir, credentials(t))
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := testConfig(dir, srv.addr(), path)
	cfg.RetryAttempts = 2
	_, log, err := runAgency(t, context.Background(), cfg)
	var te *tlsError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
		t.Fatalf("Run error %v, want giving up on a TLS failure\n%s", err, log)
	}
	for k := 1; k <= 2; k++ {
		line := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: tls: refused by the central: remote error: tls: unknown certificate authority\n", k)
		if !strings.Contains(log, line) {
			t.Fatalf("log lacks %q:\n%s", line, log)
		}
	}
	if strings.Contains(log, "action: connect | result: success") {
		t.Fatalf("a refused connection counted as established:\n%s", log)
	}
	srv.stop()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.conns != 2 || len(srv.handshakeErrs) != 2 || len(srv.types) != 0 {
		t.Fatalf("%d connections, failed handshakes %v, messages %v", srv.conns, srv.handshakeErrs, srv.types)
	}
}

// TestCentralClosesAfterTheHandshake has a central that closes every connection after the
// handshake without answering, as the central does with a verified certificate that is not an
// agency of its round: each attempt fails with a line that says so, and is retried.
func TestCentralClosesAfterTheHandshake(t *testing.T) {
	srv := newFakeServer(t)
	srv.closeUnanswered = true
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := srv.config(path)
	cfg.RetryAttempts = 2
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "giving up after 2 failed attempts") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	for k := 1; k <= 2; k++ {
		prefix := fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: read: ", k)
		if !strings.Contains(log, prefix) {
			t.Fatalf("log lacks %q:\n%s", prefix, log)
		}
	}
	if n := strings.Count(log, "(the central closed the connection before answering HELLO: does it accept this agency's certificate?)\n"); n != 2 {
		t.Fatalf("%d lines say the central closed before answering, want 2:\n%s", n, log)
	}
	if strings.Contains(log, "action: connect | result: success") {
		t.Fatalf("an unanswered connection counted as established:\n%s", log)
	}
}

// TestAgencyMismatchEndsTheRun runs an agency whose messages name agency 3 on a connection
// whose certificate is agency 2's (the check at start makes that impossible with one
// configuration: here the TLS configuration is agency 2's): the central refuses its HELLO
// with AGENCY_MISMATCH, and the run stops with that refusal, without retrying.
func TestAgencyMismatchEndsTheRun(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	path, _ := csvFile(t, 10)
	cfg := srv.config(path)
	agency2 := cfg
	agency2.ID = 2
	agency2.TLSCert, agency2.TLSKey = filepath.Join(srv.dir, certs.AgencyFile(2)), filepath.Join(srv.dir, certs.AgencyKeyFile(2))
	_, log, err := runAgencyTLS(t, context.Background(), cfg, clientTLS(t, agency2))
	const reason = "the certificate is agency-2's, the message names agency 3"
	if !refusedWith(protocol.CodeAgencyMismatch)(err) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("Run error %v, want the AGENCY_MISMATCH refusal\n%s", err, log)
	}
	if types := srv.connTypes(1); len(types) != 1 || types[0] != protocol.TypeHello {
		t.Fatalf("messages %v, want only HELLO", types)
	}
	srv.mu.Lock()
	conns, peer := srv.conns, srv.peers[1]
	srv.mu.Unlock()
	if conns != 1 || peer != "agency-2" {
		t.Fatalf("%d connections of %q: a refusal must not be retried", conns, peer)
	}
	if strings.Contains(log, "result: fail | attempt: ") {
		t.Fatalf("the refusal was retried:\n%s", log)
	}
}

func TestInvalidRowsAreSkipped(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	path, want := csvFile(t, 12, "Ana,Lopez,1,2001-02-29,5", `Ana,Lo"pez,1,2000-01-01,5`, "Ana,Lopez,1,2000-01-01")
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) || a.stats.invalidRows != 3 {
		t.Fatalf("stored/invalid mismatch: %+v", a.stats)
	}
	for _, line := range []string{
		"WARNING action: leer_apuesta | result: fail | line: 13 | reason: birthdate\n",
		"WARNING action: leer_apuesta | result: fail | line: 14 | reason: quoting\n",
		"WARNING action: leer_apuesta | result: fail | line: 15 | reason: fields\n",
		"action: apuestas_enviadas | result: success | cantidad: 12 | batches: 2 | invalid_rows: 3\n",
	} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

// TestQuotedNamesTravelCanonical checks that names with a comma or a double quote reach the
// central in their one canonical encoding (needless quotes in the file dropped), that the FIN
// chain is theirs, and that the DEBUG lines still name each bet's document and number.
func TestQuotedNamesTravelCanonical(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	rows := strings.Join([]string{
		`"Pérez, Juan",Gómez,20111222,1985-06-01,7574`,
		`"Ana ""la Tana""",O'Neill,20111223,1990-01-01,12`,
		`"Ana","Lopez",20111224,"1990-01-01",13`,
		`José; María,"D'Alessandro, ""Pepe""",20111225,1970-12-31,99`,
	}, "\r\n")
	want := strings.Join([]string{
		`"Pérez, Juan",Gómez,20111222,1985-06-01,7574`,
		`"Ana ""la Tana""",O'Neill,20111223,1990-01-01,12`,
		`Ana,Lopez,20111224,1990-01-01,13`,
		`José; María,"D'Alessandro, ""Pepe""",20111225,1970-12-31,99`,
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(path, []byte(rows), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := srv.config(path)
	cfg.LogLevel, cfg.BatchMaxAmount = logs.Debug, 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if got := string(srv.allStored()); got != want {
		t.Fatalf("stored\n%s\nwant\n%s", got, want)
	}
	if f := srv.recordedFin(); f == nil || f.Bets != 4 || f.Chain != protocol.Chain(0, []byte(want)) {
		t.Fatalf("FIN %+v", f)
	}
	for _, bet := range [][2]string{{"20111222", "7574"}, {"20111223", "12"}, {"20111224", "13"}, {"20111225", "99"}} {
		line := fmt.Sprintf("DEBUG action: apuesta_enviada | result: success | dni: %s | numero: %s\n", bet[0], bet[1])
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

func TestPipelineWindow(t *testing.T) {
	for _, window := range []int{1, 3, 8} {
		t.Run(fmt.Sprint(window), func(t *testing.T) {
			srv := newFakeServer(t)
			srv.windowCheck = window
			srv.start()
			path, want := csvFile(t, window*10*3) // three full windows of batches
			cfg := srv.config(path)
			cfg.BatchWindow = window
			_, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if srv.windowViolation != "" {
				t.Fatal(srv.windowViolation)
			}
			if !bytes.Equal(srv.allStored(), want) {
				t.Fatal("stored bets differ")
			}
		})
	}
}

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

// TestResume starts an agency against a central that already stores its first bets (as a
// previous run, with other batches, left them): it checks them, skips them, and sends every
// other bet exactly once, from the next position on.
func TestResume(t *testing.T) {
	tests := []struct {
		name      string
		stored    int
		maxAmount int
	}{
		{"a few bets", 23, 10},
		{"one bet", 1, 7},
		{"all but one", 94, 10},
		{"every bet, no FIN yet", 95, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			path, want := csvFile(t, 95, "Ana,Lopez,1,2001-02-29,5")
			srv.preload(firstLines(want, tt.stored), false)
			srv.start()
			cfg := srv.config(path)
			cfg.BatchMaxAmount = tt.maxAmount
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if !bytes.Equal(srv.allStored(), want) {
				t.Fatal("stored bets differ from the file's")
			}
			srv.checkSentOnce(t, uint32(tt.stored)+1, 95)
			sent := 95 - tt.stored
			batches := (sent + tt.maxAmount - 1) / tt.maxAmount
			if f := srv.recordedFin(); a.stats.bets != sent || a.stats.batches != batches || f == nil || f.Bets != 95 {
				t.Fatalf("stats %+v fin %+v", a.stats, f)
			}
			for _, line := range []string{
				fmt.Sprintf("INFO action: verificar_apuestas | result: success | stored: %d\n", tt.stored),
				fmt.Sprintf("INFO action: apuestas_enviadas | result: success | cantidad: %d | batches: %d | invalid_rows: 1\n", sent, batches),
				fmt.Sprintf("INFO action: fin | result: success | batches: %d\n", batches),
			} {
				if !strings.Contains(log, line) {
					t.Errorf("log lacks %q:\n%s", line, log)
				}
			}
		})
	}
}

// TestRestartWithAnotherBatchSize runs an agency with batches of 7 until its connection breaks
// for good, then a new run of it with batches of 10 against the same central: between them
// every bet is stored exactly once.
func TestRestartWithAnotherBatchSize(t *testing.T) {
	srv := newFakeServer(t)
	srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 6, 3, 4 // 28 bets stored
	srv.start()
	path, want := csvFile(t, 100)
	cfg := srv.config(path)
	cfg.BatchMaxAmount, cfg.RetryAttempts = 7, 1
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "giving up after 1 failed attempts") {
		t.Fatalf("first run: %v\n%s", err, log)
	}
	if got := srv.allStored(); !bytes.Equal(got, firstLines(want, 28)) {
		t.Fatalf("first run stored %d bytes, want the first 28 bets", len(got))
	}

	srv.mu.Lock()
	clear(srv.received) // the first run's BETs 5 and 6 (from 29) were received, not stored
	srv.mu.Unlock()
	cfg.BatchMaxAmount, cfg.RetryAttempts = 10, 5
	a, log, err := runAgency(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) {
		t.Fatal("stored bets differ from the file's")
	}
	srv.checkSentOnce(t, 29, 100)
	// The second run's batches start at 29 and are cut its own way.
	if f := srv.recordedFin(); a.stats.bets != 72 || a.stats.batches != 8 || f == nil || f.Bets != 100 || f.Chain != protocol.Chain(0, want) {
		t.Fatalf("stats %+v fin %+v", a.stats, f)
	}
	if !strings.Contains(log, "INFO action: verificar_apuestas | result: success | stored: 28\n") {
		t.Fatalf("no verificar_apuestas line:\n%s", log)
	}
}

// TestResumeMismatch starts an agency against a central whose stored bets are not the first
// bets of its file: it stops before sending anything, with one clear line.
func TestResumeMismatch(t *testing.T) {
	path, want := csvFile(t, 30)
	other := bytes.Replace(firstLines(want, 20), []byte("Nombre7,"), []byte("Nombre8,"), 1)
	tests := []struct {
		name     string
		stored   []byte
		finished bool
		chain    func(uint32) uint32 // alters the RESUME chain
		reason   string
	}{
		{"another chain", firstLines(want, 20), false, func(c uint32) uint32 { return c ^ 1 }, "differs"},
		{"another bet", other, false, nil, "differs"},
		{"more bets than the file", append(append([]byte(nil), want...), "Otro,Nombre,1,1990-01-01,1\n"...), false, nil, "differs"},
		{"nothing stored but a chain", nil, false, func(uint32) uint32 { return 7 }, "differs"},
		{"bets after the FIN", firstLines(want, 20), true, nil, "after the recorded FIN cannot be stored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.preload(tt.stored, tt.finished)
			if tt.chain != nil {
				srv.resume = func(_ int, r protocol.Resume) protocol.Resume { r.Chain = tt.chain(r.Chain); return r }
			}
			srv.start()
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !errors.Is(err, ErrBetsMismatch) {
				t.Fatalf("Run error %v, want ErrBetsMismatch\n%s", err, log)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if types := srv.connTypes(1); len(types) != 1 || conns != 1 {
				t.Fatalf("messages %v on %d connections, want only HELLO", types, conns)
			}
			stored := bytes.Count(tt.stored, []byte{'\n'})
			chain := protocol.Chain(0, tt.stored)
			if tt.chain != nil {
				chain = tt.chain(chain)
			}
			fileChain := protocol.Chain(0, firstLines(want, stored))
			if tt.finished {
				fileChain = protocol.Chain(0, want) // every bet of the file
			}
			line := fmt.Sprintf("ERROR action: verificar_apuestas | result: fail | stored: %d | chain: %08x | file_chain: %08x | reason: ", stored, chain, fileChain)
			if !strings.Contains(log, line) || !strings.Contains(log, tt.reason) || !strings.Contains(log, "another program claims agency 3)\n") {
				t.Fatalf("log lacks %q (%s):\n%s", line, tt.reason, log)
			}
		})
	}
}

// TestReconnectResumeMismatch has the central answer a reconnection with a RESUME that is not
// where this run left it: the run stops instead of resending.
func TestReconnectResumeMismatch(t *testing.T) {
	tests := []struct {
		name   string
		resume func(r protocol.Resume) protocol.Resume
	}{
		// On the first connection the bets 1..30 are acknowledged, 31..40 in flight.
		{"fewer bets than acknowledged", func(r protocol.Resume) protocol.Resume { r.Stored, r.Chain = 20, 0; return r }},
		{"inside a batch in flight", func(r protocol.Resume) protocol.Resume { r.Stored = 35; return r }},
		{"another chain", func(r protocol.Resume) protocol.Resume { r.Chain ^= 1; return r }},
		{"the FIN of another program", func(r protocol.Resume) protocol.Resume { r.Finished = true; return r }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop, srv.storeBeforeDrop = 4, 3, 3
			srv.resume = func(conn int, r protocol.Resume) protocol.Resume {
				if conn == 1 {
					return r
				}
				return tt.resume(r)
			}
			srv.start()
			path, _ := csvFile(t, 100)
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !errors.Is(err, ErrBetsMismatch) {
				t.Fatalf("Run error %v, want ErrBetsMismatch\n%s", err, log)
			}
			if types := srv.connTypes(2); len(types) != 1 {
				t.Fatalf("second connection got %v, want only HELLO", types)
			}
			if !strings.Contains(log, "ERROR action: verificar_apuestas | result: fail | stored: ") {
				t.Fatalf("no verificar_apuestas line:\n%s", log)
			}
		})
	}
}

// TestFinishedGoesStraightToWinners starts an agency whose FIN is already recorded: it checks
// the file and asks for its winners, sending no bet and no FIN.
func TestFinishedGoesStraightToWinners(t *testing.T) {
	srv := newFakeServer(t)
	srv.winners = []string{"30000003"}
	path, want := csvFile(t, 25, "Ana,Lopez,1,2001-02-29,5")
	srv.preload(want, true)
	srv.start()
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	types := srv.connTypes(1)
	if len(types) != 2 || types[0] != protocol.TypeHello || types[1] != protocol.TypeWinnersQuery {
		t.Fatalf("messages %v, want HELLO and WINNERS_QUERY", types)
	}
	if len(a.stats.winners) != 1 {
		t.Fatalf("winners %v", a.stats.winners)
	}
	for _, line := range []string{
		"INFO action: verificar_apuestas | result: success | stored: 25\n",
		"INFO action: apuestas_enviadas | result: success | cantidad: 0 | batches: 0 | invalid_rows: 1\n",
		"INFO action: fin | result: success | batches: 0 | detail: already recorded\n",
		"INFO action: consulta_ganadores | result: success | cant_ganadores: 1\n",
	} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
}

// TestFinRecordedBeforeItsAnswer breaks the connection right after the FIN is recorded, before
// its FIN_ACK: the RESUME of the reconnection says so, and the agency goes on to its winners.
func TestFinRecordedBeforeItsAnswer(t *testing.T) {
	srv := newFakeServer(t)
	srv.dropAfterFin = 1
	srv.start()
	path, _ := csvFile(t, 15)
	_, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if types := srv.connTypes(2); len(types) != 2 || types[1] != protocol.TypeWinnersQuery {
		t.Fatalf("second connection got %v, want HELLO and WINNERS_QUERY", types)
	}
	if !strings.Contains(log, "INFO action: fin | result: success | batches: 2 | detail: already recorded\n") {
		t.Fatalf("no fin line:\n%s", log)
	}
}

func TestInternalErrorIsRetried(t *testing.T) {
	srv := newFakeServer(t)
	srv.internalErrors = 2
	srv.start()
	path, want := csvFile(t, 35)
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) || a.stats.bets != 35 {
		t.Fatalf("stored/stats mismatch: %+v", a.stats)
	}
	srv.mu.Lock()
	conns := srv.conns
	srv.mu.Unlock()
	if conns != 3 {
		t.Fatalf("%d connections, want 3", conns)
	}
	if n := strings.Count(log, "result: fail | attempt: "); n != 2 || !strings.Contains(log, "INTERNAL_ERROR: disk full") {
		t.Fatalf("%d retries logged, want 2 naming INTERNAL_ERROR:\n%s", n, log)
	}
}

func TestDuplicateFinIsSuccess(t *testing.T) {
	srv := newFakeServer(t)
	srv.alwaysDupFin = true
	srv.start()
	path, _ := csvFile(t, 15)
	_, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !strings.Contains(log, "action: fin | result: success | batches: 2") {
		t.Fatalf("no fin line:\n%s", log)
	}
}

func TestShuttingDownDuringWinnersRetriesQuery(t *testing.T) {
	srv := newFakeServer(t)
	srv.shutdownQueries = 2
	srv.winners = []string{"1", "2"}
	srv.start()
	path, _ := csvFile(t, 15)
	a, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	srv.mu.Lock()
	conns, fins := srv.conns, srv.finCount
	srv.mu.Unlock()
	if conns != 3 || fins != 1 || len(a.stats.winners) != 2 {
		t.Fatalf("conns %d fins %d winners %v", conns, fins, a.stats.winners)
	}
	// After the FIN was recorded, a reconnect goes straight from HELLO to the query.
	for conn := 2; conn <= 3; conn++ {
		if types := srv.connTypes(conn); len(types) != 2 || types[1] != protocol.TypeWinnersQuery {
			t.Fatalf("connection %d got %v", conn, types)
		}
	}
}

// refusedWith reports whether err is a RefusedError for an ERROR with code.
func refusedWith(code protocol.ErrorCode) func(error) bool {
	return func(err error) bool {
		var re *RefusedError
		return errors.As(err, &re) && re.Answer.Code == code
	}
}

func TestFatalAnswers(t *testing.T) {
	roundClosed := &protocol.Error{Code: protocol.CodeRoundClosed, Reason: "the draw has already happened"}
	mismatch := "chain before bet 1 is 00000000, the stored bets' is 4e5f6071"
	tests := []struct {
		name  string
		setup func(*fakeServer)
		check func(error) bool
	}{
		{"INVALID_BET", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeInvalidBet, Reason: "bet 1: birthdate"}
		}, refusedWith(protocol.CodeInvalidBet)},
		{"UNKNOWN_AGENCY", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeUnknownAgency}
		}, refusedWith(protocol.CodeUnknownAgency)},
		{"BETS_MISMATCH", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeBetsMismatch, Reason: mismatch}
		}, func(err error) bool {
			// The reason, with both checksums, reaches the exit line.
			return refusedWith(protocol.CodeBetsMismatch)(err) && strings.Contains(err.Error(), mismatch)
		}},
		{"AGENCY_MISMATCH on a batch", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeAgencyMismatch, Reason: "the certificate is agency-2's, the message names agency 3"}
		}, refusedWith(protocol.CodeAgencyMismatch)},
		{"SEQUENCE_GAP", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeSequenceGap}
		}, refusedWith(protocol.CodeSequenceGap)},
		{"AGENCY_FINISHED", func(s *fakeServer) {
			s.betError = &protocol.Error{Code: protocol.CodeAgencyFinished}
		}, refusedWith(protocol.CodeAgencyFinished)},
		{"ROUND_CLOSED on a batch", func(s *fakeServer) { s.betError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"ROUND_CLOSED on FIN", func(s *fakeServer) { s.finError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"BETS_MISMATCH on FIN", func(s *fakeServer) {
			s.finError = &protocol.Error{Code: protocol.CodeBetsMismatch, Reason: "another chain"}
		}, refusedWith(protocol.CodeBetsMismatch)},
		{"ACK for another position", func(s *fakeServer) { s.badAck = true }, func(err error) bool {
			return errors.Is(err, ErrProtocol)
		}},
		{"RESUME for another agency", func(s *fakeServer) {
			s.resume = func(_ int, r protocol.Resume) protocol.Resume { r.Agency++; return r }
		}, func(err error) bool { return errors.Is(err, ErrProtocol) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			tt.setup(srv)
			srv.start()
			path, _ := csvFile(t, 30)
			_, log, err := runAgency(t, context.Background(), srv.config(path))
			if !tt.check(err) {
				t.Fatalf("Run error %v\n%s", err, log)
			}
			srv.mu.Lock()
			conns := srv.conns
			srv.mu.Unlock()
			if conns != 1 {
				t.Fatalf("%d connections: a fatal answer must not be retried", conns)
			}
		})
	}
}

func TestCancelWhileWaitingForWinners(t *testing.T) {
	srv := newFakeServer(t)
	srv.holdWinners = true
	srv.start()
	path, _ := csvFile(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-srv.queried:
			cancel()
		case <-time.After(testTimeout):
		}
	}()
	start := time.Now()
	_, log, err := runAgency(t, ctx, srv.config(path))
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run error %v, want ErrStopped\n%s", err, log)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	if !strings.Contains(log, "action: close_connection | result: success") {
		t.Fatalf("no close_connection line:\n%s", log)
	}
}

func TestWinnersTimeoutReconnects(t *testing.T) {
	srv := newFakeServer(t)
	srv.holdWinners = true
	srv.start()
	path, _ := csvFile(t, 5)
	cfg := srv.config(path)
	cfg.WinnersTimeout, cfg.RetryAttempts = 50*time.Millisecond, 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "giving up after 3") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	if n := len(srv.queried); n != 3 {
		t.Fatalf("%d queries, want 3", n)
	}
}

// unusedAddr returns an address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServerNeverUp(t *testing.T) {
	path, _ := csvFile(t, 5)
	cfg := testConfig(credentials(t), unusedAddr(t), path)
	cfg.RetryAttempts = 3
	_, log, err := runAgency(t, context.Background(), cfg)
	if err == nil || errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "giving up after 3 failed attempts") {
		t.Fatalf("Run error %v\n%s", err, log)
	}
	for k := 1; k <= 3; k++ {
		if !strings.Contains(log, fmt.Sprintf("WARNING action: connect | result: fail | attempt: %d | error: dial tcp ", k)) {
			t.Fatalf("no line for attempt %d:\n%s", k, log)
		}
	}
	if strings.Contains(log, "attempt: 4") || strings.Contains(log, "close_connection") {
		t.Fatalf("unexpected lines:\n%s", log)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	path, _ := csvFile(t, 5)
	cfg := testConfig(credentials(t), unusedAddr(t), path)
	cfg.RetryAttempts, cfg.RetryInitialBackoff, cfg.RetryMaxBackoff = 100, time.Hour, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := runAgency(t, ctx, cfg)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run error %v, want ErrStopped", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
}

func TestBackoff(t *testing.T) {
	a := &Agency{cfg: config.Config{RetryInitialBackoff: 100 * time.Millisecond, RetryMaxBackoff: time.Second}}
	tests := []struct {
		k      int
		lo, hi time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{60, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for i := 0; i < 50; i++ {
			if d := a.backoff(tt.k); d < tt.lo || d > tt.hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tt.k, d, tt.lo, tt.hi)
			}
		}
	}
}

// TestDefaultRetryBudget checks the default retry settings keep an agency retrying through a
// central restart (a few seconds, plus Docker's restart delay) but not forever: the waits
// between the attempts add up to at least a minute even with the shortest jitter, and to at
// most two and a half minutes.
func TestDefaultRetryBudget(t *testing.T) {
	cfg, err := config.Load("/dev/null", func(k string) string {
		if k == "CLI_ID" {
			return "1"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agency{cfg: cfg}
	var longest time.Duration
	// Run sleeps after every failed attempt but the last.
	for k := 1; k < cfg.RetryAttempts; k++ {
		longest += a.backoffCeiling(k)
	}
	shortest := longest / 2 // backoff(k) is at least half its ceiling
	if shortest < time.Minute || longest > 150*time.Second {
		t.Fatalf("%d attempts wait %v to %v in all, want at least 1m and at most 2m30s",
			cfg.RetryAttempts, shortest, longest)
	}
}

func TestMissingDataFile(t *testing.T) {
	cfg := testConfig(credentials(t), "127.0.0.1:1", "/nonexistent/agency.csv")
	_, err := New(cfg, clientTLS(t, cfg), logs.New(&bytes.Buffer{}, logs.Info))
	if err == nil || !strings.HasPrefix(err.Error(), "data.path: ") {
		t.Fatalf("New error %v", err)
	}
}

// TestNoPlaintext checks an agency cannot be made without a TLS configuration.
func TestNoPlaintext(t *testing.T) {
	path, _ := csvFile(t, 1)
	if _, err := New(testConfig(credentials(t), "127.0.0.1:1", path), nil, logs.New(&bytes.Buffer{}, logs.Info)); err == nil {
		t.Fatal("New without a TLS configuration succeeded")
	}
}
