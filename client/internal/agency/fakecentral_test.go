// The fake central of the agency tests: a small in-test central that speaks protocol version 2
// (HELLO / RESUME, positions, chains) over mutual TLS 1.3 (crypto/tls.NewListener, credentials
// issued by internal/certs into t.TempDir at test time, never committed), and, like the
// central, takes the agency's identity from its verified certificate. This file owns its
// connections; fakestore_test.go what it stores and answers.

package agency

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"lottery/client/internal/certs/certstest"
	"lottery/client/internal/config"
	"lottery/client/internal/protocol"
	"lottery/client/internal/transport"
)

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
	acksAfterFin    bool                                              // hold every ACK until the FIN has arrived: an agency that waits for them first waits forever
	betError        *protocol.Error                                   // answer every BET with this ERROR
	internalErrors  int                                               // answer the first N BETs with INTERNAL_ERROR and close
	finError        *protocol.Error                                   // answer every FIN with this ERROR
	dropAfterFin    int                                               // record the first N FINs but close instead of answering
	alwaysDupFin    bool                                              // answer every FIN with DUPLICATE_FIN (and record it)
	holdWinners     bool                                              // never answer WINNERS_QUERY
	shutdownQueries int                                               // answer the first N WINNERS_QUERY with SHUTTING_DOWN and close
	badAck          bool                                              // ACK stored+1 instead of stored
	closeUnanswered bool                                              // close every connection after the handshake, reading nothing
	helloError      func(conn int) (*protocol.Error, bool)            // answer HELLO with this ERROR and close; nil, false: close without answering
	refuseFirst     *protocol.Error                                   // answer the first BET of the first connection with this ERROR
	countFrom       int                                               // count the positions received only on connections from this one
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
			if s.helloError != nil {
				if e, answer := s.helloError(connNo); e != nil || !answer {
					if e != nil {
						send(*e)
					}
					return
				}
			}
			if !send(r) {
				return
			}
		case protocol.Bet:
			betsOnConn++
			s.mu.Lock()
			if connNo >= s.countFrom {
				for p := uint64(v.First); p < uint64(v.First)+uint64(v.Count); p++ {
					s.received[uint32(p)]++
				}
			}
			refuse := s.refuseFirst
			if connNo != 1 || betsOnConn != 1 {
				refuse = nil
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
			if refuse != nil {
				e := *refuse
				e.Position = v.First
				if !send(e) {
					return
				}
				continue
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
			if s.acksAfterFin || (s.windowCheck > 0 && len(pending) < s.windowCheck) {
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
			for _, b := range pending { // acksAfterFin: the batches before it are answered first
				if !send(s.answerBet(b)) {
					return
				}
			}
			pending = pending[:0]
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
