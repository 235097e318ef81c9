// Package logs owns the client's log lines: one line per event on stdout, in the exact format
//
//	2026-11-23 13:45:01 INFO action: <name> | result: <success|fail|in_progress> | key: value | ...
//
// with level filtering (DEBUG < INFO < WARNING < ERROR). It is safe for concurrent use.
package logs

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Level is a log level.
type Level int

// The levels, lowest first.
const (
	Debug Level = iota
	Info
	Warning
	Error
)

var levelNames = [...]string{"DEBUG", "INFO", "WARNING", "ERROR"}

// String returns the upper-case name of the level.
func (l Level) String() string {
	if l >= Debug && l <= Error {
		return levelNames[l]
	}
	return "LEVEL(" + strconv.Itoa(int(l)) + ")"
}

// ParseLevel parses DEBUG, INFO, WARNING or ERROR (case-insensitive).
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if strings.EqualFold(s, n) {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not one of DEBUG, INFO, WARNING, ERROR", s)
}

// Results.
const (
	Success    = "success"
	Fail       = "fail"
	InProgress = "in_progress"
)

// Logger writes filtered log lines to one writer.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	level Level
	now   func() time.Time
	buf   []byte
}

// New returns a logger writing lines of at least level to w.
func New(w io.Writer, level Level) *Logger {
	return &Logger{w: w, level: level, now: time.Now}
}

// Enabled reports whether lines of level l are written; callers use it to skip building
// DEBUG lines in hot loops.
func (lg *Logger) Enabled(l Level) bool { return l >= lg.level }

// Log writes `action: A | result: R | k1: v1 | ...`. kv alternates keys (strings) and values
// (any; formatted with %v).
func (lg *Logger) Log(l Level, action, result string, kv ...any) {
	if !lg.Enabled(l) {
		return
	}
	lg.mu.Lock()
	defer lg.mu.Unlock()
	b := lg.now().AppendFormat(lg.buf[:0], "2006-01-02 15:04:05")
	b = append(b, ' ')
	b = append(b, l.String()...)
	b = append(b, " action: "...)
	b = append(b, action...)
	b = append(b, " | result: "...)
	b = append(b, result...)
	for i := 0; i < len(kv); i += 2 {
		b = append(b, " | "...)
		b = appendValue(b, kv[i])
		b = append(b, ": "...)
		if i+1 < len(kv) {
			b = appendValue(b, kv[i+1])
		}
	}
	b = append(b, '\n')
	lg.buf = b
	_, _ = lg.w.Write(b) // nowhere to report a failed log write
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return appendOneLine(b, x)
	case []byte:
		return appendOneLine(b, string(x))
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case error:
		return appendOneLine(b, x.Error())
	}
	return appendOneLine(b, fmt.Sprint(v))
}

// appendOneLine appends s with line breaks turned into spaces: one event, one line.
func appendOneLine(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\n' || c == '\r' {
			b = append(b, ' ')
		} else {
			b = append(b, c)
		}
	}
	return b
}

// Debug logs at DEBUG.
func (lg *Logger) Debug(action, result string, kv ...any) { lg.Log(Debug, action, result, kv...) }

// Info logs at INFO.
func (lg *Logger) Info(action, result string, kv ...any) { lg.Log(Info, action, result, kv...) }

// Warning logs at WARNING.
func (lg *Logger) Warning(action, result string, kv ...any) { lg.Log(Warning, action, result, kv...) }

// Error logs at ERROR.
func (lg *Logger) Error(action, result string, kv ...any) { lg.Log(Error, action, result, kv...) }
