// Tests of the log line format and level filtering.

package logs

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestFormatAndFiltering(t *testing.T) {
	var buf bytes.Buffer
	lg := New(&buf, Info)
	lg.now = func() time.Time { return time.Date(2026, 11, 23, 13, 45, 1, 0, time.UTC) }
	lg.Debug("apuesta_enviada", Success, "dni", "1", "numero", "2")
	lg.Info("consulta_ganadores", Success, "cant_ganadores", 3)
	lg.Warning("connect", Fail, "attempt", 2, "error", errors.New("a\nb"))
	lg.Error("exit", Fail, "error", "boom")
	want := "2026-11-23 13:45:01 INFO action: consulta_ganadores | result: success | cant_ganadores: 3\n" +
		"2026-11-23 13:45:01 WARNING action: connect | result: fail | attempt: 2 | error: a b\n" +
		"2026-11-23 13:45:01 ERROR action: exit | result: fail | error: boom\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
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
