// Package logs owns the client's log lines: one line per event on stdout, in the exact format
//
//	2026-11-23 13:45:01 INFO action: <name> | result: <success|fail|in_progress> | key: value | ...
//
// with level filtering (DEBUG < INFO < WARNING < ERROR). The lines go through Go's log/slog:
// Handler renders a record in that format (its message is the action, its attributes the
// "key: value" pairs in order, the result first), and callers log with a *slog.Logger from
// New, e.g. log.Info("connect", logs.Success, "server_address", addr).
package logs

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Level is a log level of the configuration (log.level).
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
	return fmt.Sprintf("LEVEL(%d)", int(l))
}

// Slog is the slog level of l: slog.LevelDebug, LevelInfo, LevelWarn or LevelError.
func (l Level) Slog() slog.Level {
	switch {
	case l <= Debug:
		return slog.LevelDebug
	case l == Info:
		return slog.LevelInfo
	case l == Warning:
		return slog.LevelWarn
	}
	return slog.LevelError
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

// The results: the first attribute of every line.
var (
	Success    = slog.String("result", "success")
	Fail       = slog.String("result", "fail")
	InProgress = slog.String("result", "in_progress")
)

// New returns a logger writing the lines of at least level to w.
func New(w io.Writer, level Level) *slog.Logger {
	return slog.New(NewHandler(w, level.Slog()))
}
