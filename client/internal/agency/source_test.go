// Tests of the reading of the bets file: the progress lines, and a file read again from the
// start logging no invalid row and no progress twice.

package agency

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

var progressLine = regexp.MustCompile(`(?m)^\S+ \S+ INFO action: progreso \| result: in_progress \| apuestas: (\d+) \| porcentaje: (\d+)$`)

// checkProgress checks the progress lines of log: at most 11, percentages multiples of 10
// rising to 100, bets read never fewer than before, and all of them (want) at 100.
func checkProgress(t *testing.T, log string, want int) {
	t.Helper()
	lines := progressLine.FindAllStringSubmatch(log, -1)
	if len(lines) == 0 || len(lines) > 11 {
		t.Fatalf("%d progress lines, want 1 to 11:\n%s", len(lines), log)
	}
	lastBets, lastPercent := 0, 0
	for _, m := range lines {
		bets, _ := strconv.Atoi(m[1])
		percent, _ := strconv.Atoi(m[2])
		if percent%10 != 0 || percent <= lastPercent || bets < lastBets {
			t.Fatalf("progress %s after %d%% with %d bets:\n%s", m[0], lastPercent, lastBets, log)
		}
		lastBets, lastPercent = bets, percent
	}
	if lastPercent != 100 || lastBets != want {
		t.Fatalf("last progress %d%% with %d bets, want 100%% with %d:\n%s", lastPercent, lastBets, want, log)
	}
}

func TestProgress(t *testing.T) {
	tests := []struct {
		name    string
		rows    int
		invalid []string
		stored  int // already stored: skipped
		lines   int // progress lines expected (0: any number the checks allow)
	}{
		{"no bets", 0, nil, 0, 1},
		{"three bets", 3, nil, 0, 3},
		{"a hundred bets", 100, nil, 0, 10},
		{"many bets", 20000, nil, 0, 10},
		{"invalid rows at the end", 50, []string{"Ana,Lopez,1,2001-02-29,5", "Ana,Lopez,1,2000-01-01"}, 0, 0},
		{"bets already stored", 100, nil, 60, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t)
			path, want := csvFile(t, tt.rows, tt.invalid...)
			srv.preload(firstLines(want, tt.stored), false)
			srv.start()
			cfg := srv.config(path)
			cfg.BatchMaxAmount = 100
			_, log, err := runAgency(t, context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log)
			}
			checkProgress(t, log, tt.rows)
			if n := len(progressLine.FindAllString(log, -1)); tt.lines > 0 && n != tt.lines {
				t.Fatalf("%d progress lines, want %d:\n%s", n, tt.lines, log)
			}
		})
	}
}

// TestRewindLogsNothingTwice has the stored bets move under the first connection, so the file
// is checked again from its start: its invalid rows and its progress are logged once.
func TestRewindLogsNothingTwice(t *testing.T) {
	srv := newFakeServer(t)
	path, want := csvFile(t, 100, "Ana,Lopez,1,2001-02-29,5")
	srv.preload(firstLines(want, 40), false)
	srv.resume = func(conn int, r protocol.Resume) protocol.Resume {
		if conn == 1 {
			r.Stored, r.Chain = 0, 0
		}
		return r
	}
	srv.start()
	_, log, err := runAgency(t, context.Background(), srv.config(path))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log)
	}
	checkProgress(t, log, 100)
	if n := strings.Count(log, "action: leer_apuesta | result: fail | line: 101 | reason: birthdate\n"); n != 1 {
		t.Fatalf("the invalid row logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "action: apuestas_enviadas | result: success | cantidad: 100 | batches: 10 | invalid_rows: 1\n") {
		t.Fatalf("no apuestas_enviadas line counting the invalid row once:\n%s", log)
	}
}

// TestProgressWithoutASize checks a file whose size is unknown (0, as a pipe's) logs only its
// end.
func TestProgressWithoutASize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agency.csv")
	if err := os.WriteFile(path, []byte("Ana,Lopez,1,1990-01-01,7\nBea,Lopez,2,1990-01-01,8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	src, err := openSource(path, logs.New(&out, logs.Info))
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	src.size = 0
	for {
		if _, err := src.next(); err != nil {
			break
		}
	}
	checkProgress(t, out.String(), 2)
	if n := len(progressLine.FindAllString(out.String(), -1)); n != 1 {
		t.Fatalf("%d progress lines, want 1:\n%s", n, out.String())
	}
}
