// Tests of the log line format (the slog handler, table-driven), level filtering, and the
// levels of the configuration.

package logs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"
)

var at = time.Date(2026, 11, 23, 13, 45, 1, 0, time.Local)

// stringer is a value with a String method.
type stringer struct{}

func (stringer) String() string { return "described" }

func TestHandlerFormat(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		msg   string
		attrs []any
		want  string
	}{
		{"a result only", slog.LevelInfo, "exit", []any{Success}, "2026-11-23 13:45:01 INFO action: exit | result: success\n"},
		{"keys and values", slog.LevelInfo, "consulta_ganadores", []any{Success, "cant_ganadores", 3},
			"2026-11-23 13:45:01 INFO action: consulta_ganadores | result: success | cant_ganadores: 3\n"},
		{"WARNING, an error with a newline", slog.LevelWarn, "connect", []any{Fail, "attempt", 2, "error", errors.New("a\nb\r\nc")},
			"2026-11-23 13:45:01 WARNING action: connect | result: fail | attempt: 2 | error: a b  c\n"},
		{"ERROR", slog.LevelError, "exit", []any{Fail, "error", "boom"}, "2026-11-23 13:45:01 ERROR action: exit | result: fail | error: boom\n"},
		{"DEBUG", slog.LevelDebug, "apuesta_enviada", []any{Success, "dni", "1", "numero", "2"},
			"2026-11-23 13:45:01 DEBUG action: apuesta_enviada | result: success | dni: 1 | numero: 2\n"},
		{"in progress", slog.LevelInfo, "progreso", []any{InProgress, "apuestas", 5, "porcentaje", 10},
			"2026-11-23 13:45:01 INFO action: progreso | result: in_progress | apuestas: 5 | porcentaje: 10\n"},
		{"numbers, bools, bytes, Stringers", slog.LevelInfo, "config", []any{Success, "u32", uint32(4294967295), "i64", int64(-7),
			"ok", true, "raw", []byte("x\ny"), "level", Warning, "s", stringer{}, "d", 1500 * time.Millisecond},
			"2026-11-23 13:45:01 INFO action: config | result: success | u32: 4294967295 | i64: -7 | ok: true | raw: x y | level: WARNING | s: described | d: 1.5s\n"},
		{"a group", slog.LevelInfo, "x", []any{Success, slog.Group("g", "a", 1, "b", "two")},
			"2026-11-23 13:45:01 INFO action: x | result: success | g.a: 1 | g.b: two\n"},
		{"an empty attribute", slog.LevelInfo, "x", []any{Success, slog.Attr{}, "k", "v"},
			"2026-11-23 13:45:01 INFO action: x | result: success | k: v\n"},
		{"a newline in the action", slog.LevelInfo, "a\nb", []any{Success}, "2026-11-23 13:45:01 INFO action: a b | result: success\n"},
		{"a level between two", slog.LevelWarn + 1, "x", []any{Fail}, "2026-11-23 13:45:01 WARNING action: x | result: fail\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := NewHandler(&buf, slog.LevelDebug)
			r := slog.NewRecord(at, tt.level, tt.msg, 0)
			r.Add(tt.attrs...)
			if err := h.Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Fatalf("got  %q\nwant %q", buf.String(), tt.want)
			}
		})
	}
}

func TestHandlerWithAttrsAndGroup(t *testing.T) {
	var buf bytes.Buffer
	var h slog.Handler = NewHandler(&buf, slog.LevelInfo)
	h = h.WithAttrs([]slog.Attr{Success, slog.Int("agency", 3)}).WithGroup("g").WithAttrs([]slog.Attr{slog.String("k", "v")})
	r := slog.NewRecord(at, slog.LevelInfo, "x", 0)
	r.Add("n", 1)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if want := "2026-11-23 13:45:01 INFO action: x | result: success | agency: 3 | g.k: v | g.n: 1\n"; buf.String() != want {
		t.Fatalf("got  %q\nwant %q", buf.String(), want)
	}
}

var line = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) action: \w+ \| result: \w+`)

func TestLevelFiltering(t *testing.T) {
	tests := []struct {
		level Level
		want  []string // the levels written, in order
	}{
		{Debug, []string{"DEBUG", "INFO", "WARNING", "ERROR"}},
		{Info, []string{"INFO", "WARNING", "ERROR"}},
		{Warning, []string{"WARNING", "ERROR"}},
		{Error, []string{"ERROR"}},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			var buf bytes.Buffer
			lg := New(&buf, tt.level)
			lg.Debug("apuesta_enviada", Success, "dni", "1")
			lg.Info("consulta_ganadores", Success, "cant_ganadores", 3)
			lg.Warn("connect", Fail, "attempt", 2)
			lg.Error("exit", Fail, "error", "boom")
			lines := bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n"))
			if len(lines) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tt.want), buf.String())
			}
			for i, l := range lines {
				m := line.FindSubmatch(l)
				if m == nil || string(m[1]) != tt.want[i] {
					t.Fatalf("line %q, want a %s line", l, tt.want[i])
				}
			}
			if lg.Enabled(context.Background(), slog.LevelDebug) != (tt.level == Debug) {
				t.Fatalf("Enabled(DEBUG) wrong at %s", tt.level)
			}
		})
	}
}

// TestConcurrentLines checks lines written at the same time do not mix.
func TestConcurrentLines(t *testing.T) {
	var buf bytes.Buffer
	lg := New(&buf, Info)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				lg.Info("x", Success, "k", "v")
			}
		})
	}
	wg.Wait()
	for _, l := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		if !line.Match(l) || !bytes.HasSuffix(l, []byte(" INFO action: x | result: success | k: v")) {
			t.Fatalf("mixed line %q", l)
		}
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want Level
		ok   bool
	}{
		{"DEBUG", Debug, true}, {"info", Info, true}, {"WARNING", Warning, true},
		{"ERROR", Error, true}, {"WARN", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseLevel(%q) = %v, %v", tt.in, got, err)
		}
	}
}
