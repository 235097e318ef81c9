// This file owns the slog.Handler that renders records as the client's log lines: the
// record's time ("2006-01-02 15:04:05", local), its level (DEBUG, INFO, WARNING, ERROR),
// "action: " and its message, then " | key: value" for each attribute in order (those of
// WithAttrs first; a group's keys prefixed with "group."), one line per record, line breaks
// in the message and the values turned into spaces.

package logs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Handler writes one line per record of at least its level to one writer. It is safe for
// concurrent use, and so are the handlers WithAttrs and WithGroup derive from it.
type Handler struct {
	out    *output
	level  slog.Leveler
	prefix []byte // the rendered attributes of WithAttrs
	group  string // the key prefix of WithGroup ("a.b."), for the attributes to come
}

// output is the writer the handlers derived from one NewHandler share, with its lock.
type output struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewHandler returns a handler writing the records of at least level to w.
func NewHandler(w io.Writer, level slog.Leveler) *Handler {
	return &Handler{out: &output{w: w}, level: level}
}

// Enabled reports whether records of level l are written.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle writes the record's line.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	o := h.out
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.buf[:0]
	if !r.Time.IsZero() {
		b = r.Time.AppendFormat(b, time.DateTime)
		b = append(b, ' ')
	}
	b = append(b, levelName(r.Level)...)
	b = append(b, " action: "...)
	b = appendOneLine(b, r.Message)
	b = append(b, h.prefix...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.group, a)
		return true
	})
	b = append(b, '\n')
	o.buf = b
	_, err := o.w.Write(b)
	return err
}

// WithAttrs returns a handler whose lines carry attrs after the action.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.prefix = append([]byte(nil), h.prefix...)
	for _, a := range attrs {
		h2.prefix = appendAttr(h2.prefix, h.group, a)
	}
	return &h2
}

// WithGroup returns a handler whose later attributes' keys start with name and a dot.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

// levelName names l as the client's lines do: DEBUG, INFO, WARNING or ERROR (a level between
// two takes the name of the lower).
func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	}
	return "ERROR"
}

// appendAttr appends " | key: value" (for a group, each of its attributes), group prefixing
// the key; an empty attribute is left out, as slog asks.
func appendAttr(b []byte, group string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			group += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			b = appendAttr(b, group, g)
		}
		return b
	}
	b = append(b, " | "...)
	b = appendOneLine(b, group+a.Key)
	b = append(b, ": "...)
	return appendValue(b, a.Value)
}

func appendValue(b []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindString:
		return appendOneLine(b, v.String())
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool())
	}
	switch x := v.Any().(type) {
	case error:
		return appendOneLine(b, x.Error())
	case []byte:
		return appendOneLine(b, string(x))
	case fmt.Stringer:
		return appendOneLine(b, x.String())
	}
	return appendOneLine(b, fmt.Sprint(v.Any()))
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
