// Package bets owns the agency's bets on the client side: the streaming CSV reader (one row at
// a time, never the whole file) and the batch builder that packs valid bet lines into BET
// frames within batch.maxAmount and the 8192-byte frame limit.
//
// This file owns the reader.
package bets

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"lottery/client/internal/protocol"
)

// Reasons for rows that are not bets, besides the protocol's field reasons.
const (
	ReasonEmptyLine   = "empty line"
	ReasonLineTooLong = "line too long"
)

// readerBufferSize bounds the memory of the reader: a line longer than this is reported as
// too long without being held (a valid bet line is at most 234 bytes).
const readerBufferSize = 64 << 10

// Row is one valid bet read from the file. Text and Fields alias the reader's buffer and are
// valid only until the next call to Next.
type Row struct {
	Line   int    // 1-based line number in the file
	Text   []byte // the bet line without its line terminator
	Fields protocol.BetFields
}

// RowError reports a row that is not a valid bet. The reader carries on after it.
type RowError struct {
	Line   int
	Reason string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Reader reads bet rows `first name,last name,document,birthdate,number` from a UTF-8 CSV
// stream: no header, no quoting (a '"' makes the row invalid), LF or CRLF line ends. Blank lines
// at the end of the file are ignored; a blank line followed by more rows is an invalid row.
type Reader struct {
	br   *bufio.Reader
	line int // number of the last physical line read

	blankFrom  int // first of a run of blank lines not reported yet
	blankCount int
	held       []byte // a row read after a blank run, returned once the run is reported
	heldLine   int
	heldTooBig bool
	done       bool
}

// NewReader returns a Reader over r with a bounded buffer.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readerBufferSize)}
}

// Next returns the next valid bet. It returns a *RowError for an invalid row (call Next again
// to go on), io.EOF at the end of the input, or the read error of the underlying reader.
func (r *Reader) Next() (Row, error) {
	for {
		if r.blankCount > 0 && (r.held != nil || r.heldTooBig) {
			line := r.blankFrom
			r.blankFrom++
			r.blankCount--
			return Row{}, &RowError{Line: line, Reason: ReasonEmptyLine}
		}
		if r.held != nil || r.heldTooBig {
			text, n, tooBig := r.held, r.heldLine, r.heldTooBig
			r.held, r.heldTooBig = nil, false
			return r.row(text, n, tooBig)
		}
		if r.done {
			return Row{}, io.EOF
		}
		text, tooBig, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.done = true // trailing blank lines, if any, are fine
				r.blankCount = 0
				continue
			}
			return Row{}, fmt.Errorf("read line %d: %w", r.line+1, err)
		}
		if len(text) == 0 && !tooBig {
			if r.blankCount == 0 {
				r.blankFrom = r.line
			}
			r.blankCount++
			continue
		}
		if r.blankCount > 0 {
			r.held, r.heldLine, r.heldTooBig = text, r.line, tooBig
			if r.held == nil {
				r.held = []byte{}
			}
			continue
		}
		return r.row(text, r.line, tooBig)
	}
}

func (r *Reader) row(text []byte, line int, tooBig bool) (Row, error) {
	if tooBig {
		return Row{}, &RowError{Line: line, Reason: ReasonLineTooLong}
	}
	f, reason := protocol.ParseBetLine(text)
	if reason != "" {
		return Row{}, &RowError{Line: line, Reason: reason}
	}
	return Row{Line: line, Text: text, Fields: f}, nil
}

// readLine reads one physical line without its "\n" or "\r\n". A line that does not fit the
// buffer is skipped to its end and reported with tooBig. It returns io.EOF only when no byte
// is left.
func (r *Reader) readLine() (text []byte, tooBig bool, err error) {
	text, err = r.br.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		tooBig = true
		_, err = r.br.ReadSlice('\n')
	}
	switch {
	case err == nil:
		text = text[:len(text)-1]
	case errors.Is(err, io.EOF):
		if len(text) == 0 && !tooBig {
			return nil, false, io.EOF
		}
		err = nil // a last line without '\n'
	default:
		return nil, false, err
	}
	r.line++
	if tooBig {
		return nil, true, nil
	}
	if n := len(text); n > 0 && text[n-1] == '\r' {
		text = text[:n-1]
	}
	return text, false, nil
}
