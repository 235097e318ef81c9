// Tests of the agency session against a small in-test TCP server that speaks the protocol:
// happy path, pipelining window, dropped connection with resend, DUPLICATE_FIN, fatal refusals,
// SHUTTING_DOWN during the winners wait, cancellation, and a server that is never up.

package agency

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

const testTimeout = 10 * time.Second

// fakeServer is a minimal central for one agency: idempotent by seq, in-order answers.
type fakeServer struct {
	t  *testing.T
	ln net.Listener

	// Behaviour, set before start.
	dropAfterBets   int             // first connection: close on reading the N-th BET
	ackBeforeDrop   int             // first connection: ACK only its first K BETs
	windowCheck     int             // hold ACKs until this many BETs are pending, then check no more arrive
	betError        *protocol.Error // answer every BET with this ERROR
	finError        *protocol.Error // answer every FIN with this ERROR
	alwaysDupFin    bool            // answer every FIN with DUPLICATE_FIN
	holdWinners     bool            // never answer WINNERS_QUERY
	shutdownQueries int             // answer the first N WINNERS_QUERY with SHUTTING_DOWN and close
	badAck          bool            // ACK seq+1 instead of seq
	winners         []string        // documents to send
	pageSize        int             // documents per WINNERS page (0: all in one)
	queried         chan struct{}   // receives on every WINNERS_QUERY
	firstMsgs       []protocol.Type // type of the first message of each connection
	windowViolation string

	mu         sync.Mutex
	conns      int
	stored     map[uint32][]byte
	lastStored uint32
	seen       []uint32 // every BET seq received, duplicates included
	finBatches uint32
	finCount   int
	wg         sync.WaitGroup
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeServer{t: t, ln: ln, stored: map[uint32][]byte{}, queried: make(chan struct{}, 16)}
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

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
	s.t.Cleanup(func() {
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

func (s *fakeServer) serve(c net.Conn, connNo int) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	send := func(m protocol.Message) bool { return protocol.Send(bw, m) == nil }
	betsOnConn := 0
	var pending []protocol.Bet // BETs read but not answered yet (windowCheck)
	first := true
	for {
		m, err := protocol.ReadFrame(br)
		if err != nil {
			return
		}
		if first {
			s.mu.Lock()
			s.firstMsgs = append(s.firstMsgs, m.Type())
			s.mu.Unlock()
			first = false
		}
		switch v := m.(type) {
		case protocol.Bet:
			betsOnConn++
			s.mu.Lock()
			s.seen = append(s.seen, v.Seq)
			s.mu.Unlock()
			if connNo == 1 && s.dropAfterBets > 0 {
				if betsOnConn == s.dropAfterBets {
					return
				}
				if betsOnConn > s.ackBeforeDrop {
					continue // read, never answered
				}
			}
			if s.betError != nil {
				e := *s.betError
				e.Seq = v.Seq
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
			s.mu.Lock()
			s.finCount++
			var ans protocol.Message
			switch {
			case s.finError != nil:
				ans = *s.finError
			case s.alwaysDupFin || s.finCount > 1:
				ans = protocol.Error{Code: protocol.CodeDuplicateFin, Reason: "FIN already recorded"}
			case v.Batches != s.lastStored:
				ans = protocol.Error{Code: protocol.CodeSequenceGap, Reason: "missing batches"}
			default:
				s.finBatches = v.Batches
				ans = protocol.FinAck{Agency: v.Agency}
			}
			s.mu.Unlock()
			if !send(ans) {
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

func (s *fakeServer) answerBet(b protocol.Bet) protocol.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case b.Seq <= s.lastStored:
	case b.Seq == s.lastStored+1:
		s.stored[b.Seq] = append([]byte(nil), b.Bets...)
		s.lastStored = b.Seq
	default:
		return protocol.Error{Code: protocol.CodeSequenceGap, Seq: b.Seq}
	}
	seq := b.Seq
	if s.badAck {
		seq++
	}
	return protocol.Ack{Agency: b.Agency, Seq: seq}
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

// allStored returns the bet lines stored, in seq order, and checks there is no gap.
func (s *fakeServer) allStored() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for seq := uint32(1); seq <= s.lastStored; seq++ {
		b, ok := s.stored[seq]
		if !ok {
			s.t.Fatalf("batch %d missing", seq)
		}
		out = append(out, b...)
	}
	return out
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

func testConfig(addr, data string) config.Config {
	return config.Config{
		ID: 3, ServerAddress: addr, LogLevel: logs.Info, BatchMaxAmount: 10, BatchWindow: 4,
		DataPath: data, RetryAttempts: 5, RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff: 20 * time.Millisecond, IOTimeout: 2 * time.Second, WinnersTimeout: 5 * time.Second,
	}
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

// runAgency runs an agency with cfg under ctx and returns the agency, its log and Run's error.
func runAgency(t *testing.T, ctx context.Context, cfg config.Config) (*Agency, string, error) {
	t.Helper()
	var out syncBuffer
	a, err := New(cfg, logs.New(&out, cfg.LogLevel))
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
			cfg := testConfig(srv.addr(), path)
			cfg.BatchMaxAmount, cfg.BatchWindow, cfg.LogLevel = tt.maxAmount, tt.window, tt.level
			a, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if got := srv.allStored(); !bytes.Equal(got, want) {
				t.Fatalf("server stored %d bytes, want %d", len(got), len(want))
			}
			batches := uint32((tt.rows + tt.maxAmount - 1) / tt.maxAmount)
			st := a.stats
			if st.bets != tt.rows || st.batches != batches || srv.finBatches != batches {
				t.Fatalf("stats %+v, FIN batches %d, want %d bets %d batches", st, srv.finBatches, tt.rows, batches)
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
			if tt.level == logs.Debug {
				if n := strings.Count(log, "action: apuesta_enviada | result: success | dni: "); n != tt.rows {
					t.Errorf("%d apuesta_enviada lines, want %d", n, tt.rows)
				}
				if !strings.Contains(log, "DEBUG action: batch_ack | result: success | seq: 1 | cantidad: 7\n") {
					t.Errorf("no batch_ack line:\n%s", log)
				}
			} else if n := strings.Count(log, "\n"); n > 8 {
				t.Errorf("%d log lines at INFO, want a handful:\n%s", n, log)
			}
		})
	}
}

func TestInvalidRowsAreSkipped(t *testing.T) {
	srv := newFakeServer(t)
	srv.start()
	path, want := csvFile(t, 12, "Ana,Lopez,1,2001-02-29,5", `Ana,"Lopez",1,2000-01-01,5`)
	a, log, err := runAgency(t, context.Background(), testConfig(srv.addr(), path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	if !bytes.Equal(srv.allStored(), want) || a.stats.invalidRows != 2 {
		t.Fatalf("stored/invalid mismatch: %+v", a.stats)
	}
	for _, line := range []string{
		"WARNING action: leer_apuesta | result: fail | line: 13 | reason: birthdate\n",
		"WARNING action: leer_apuesta | result: fail | line: 14 | reason: last_name\n",
		"action: apuestas_enviadas | result: success | cantidad: 12 | batches: 2 | invalid_rows: 2\n",
	} {
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
			cfg := testConfig(srv.addr(), path)
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

func TestReconnectResendsUnacked(t *testing.T) {
	tests := []struct {
		name       string
		dropAfter  int // the server closes on reading this BET
		ackFirst   int // having acknowledged only this many
		resentFrom uint32
		resentTo   uint32 // batches the client had in flight (window 4) when it dropped
	}{
		{"drop at first batch, none acked", 1, 0, 1, 4},
		{"drop with the window full, none acked", 4, 0, 1, 4},
		{"drop mid-stream after some acks", 7, 5, 6, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.dropAfterBets, srv.ackBeforeDrop = tt.dropAfter, tt.ackFirst
			srv.winners = []string{"30000004"}
			srv.start()
			path, want := csvFile(t, 100)
			a, log, err := runAgency(t, context.Background(), testConfig(srv.addr(), path))
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			if got := srv.allStored(); !bytes.Equal(got, want) {
				t.Fatal("bets lost or altered across the reconnect")
			}
			srv.mu.Lock()
			conns, seen := srv.conns, append([]uint32(nil), srv.seen...)
			srv.mu.Unlock()
			if conns != 2 {
				t.Fatalf("%d connections, want 2", conns)
			}
			count := map[uint32]int{}
			for _, s := range seen {
				count[s]++
			}
			for seq := uint32(1); seq <= 10; seq++ {
				want := 1
				if seq >= tt.resentFrom && seq <= tt.resentTo && seq <= uint32(tt.dropAfter) {
					want = 2 // received on the first connection, never acked, resent
				}
				if count[seq] != want {
					t.Fatalf("seq %d sent %d times, want %d (seen %v)", seq, count[seq], want, seen)
				}
			}
			if a.stats.batches != 10 || srv.finBatches != 10 || len(a.stats.winners) != 1 {
				t.Fatalf("stats %+v fin %d", a.stats, srv.finBatches)
			}
			if !strings.Contains(log, "WARNING action: connect | result: fail | attempt: 1 | error: ") {
				t.Fatalf("no connect fail line:\n%s", log)
			}
			if n := strings.Count(log, "action: connect | result: success"); n != 2 {
				t.Fatalf("%d connect success lines, want 2", n)
			}
		})
	}
}

func TestDuplicateFinIsSuccess(t *testing.T) {
	srv := newFakeServer(t)
	srv.alwaysDupFin = true
	srv.start()
	path, _ := csvFile(t, 15)
	_, log, err := runAgency(t, context.Background(), testConfig(srv.addr(), path))
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
	a, log, err := runAgency(t, context.Background(), testConfig(srv.addr(), path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.conns != 3 || srv.finCount != 1 || len(a.stats.winners) != 2 {
		t.Fatalf("conns %d fins %d winners %v", srv.conns, srv.finCount, a.stats.winners)
	}
	// After the FIN was recorded, a reconnect goes straight to the query.
	if srv.firstMsgs[1] != protocol.TypeWinnersQuery || srv.firstMsgs[2] != protocol.TypeWinnersQuery {
		t.Fatalf("first messages %v", srv.firstMsgs)
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
		{"ROUND_CLOSED on a batch", func(s *fakeServer) { s.betError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"ROUND_CLOSED on FIN", func(s *fakeServer) { s.finError = roundClosed }, refusedWith(protocol.CodeRoundClosed)},
		{"ACK for the wrong seq", func(s *fakeServer) { s.badAck = true }, func(err error) bool {
			return errors.Is(err, ErrProtocol)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			tt.setup(srv)
			srv.start()
			path, _ := csvFile(t, 30)
			_, log, err := runAgency(t, context.Background(), testConfig(srv.addr(), path))
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
	_, log, err := runAgency(t, ctx, testConfig(srv.addr(), path))
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
	cfg := testConfig(srv.addr(), path)
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
	cfg := testConfig(unusedAddr(t), path)
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
	cfg := testConfig(unusedAddr(t), path)
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
	_, err := New(testConfig("127.0.0.1:1", "/nonexistent/agency.csv"), logs.New(&bytes.Buffer{}, logs.Info))
	if err == nil || !strings.HasPrefix(err.Error(), "data.path: ") {
		t.Fatalf("New error %v", err)
	}
}
