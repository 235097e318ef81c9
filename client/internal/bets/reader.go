// This file owns the reader of the agency's bets file.

package bets

import (
	"bufio"
	"bytes"
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

// utf8BOM is the byte order mark some editors and spreadsheets ("CSV UTF-8") write at the start
// of a UTF-8 file. It marks the encoding and is not part of the first row's first name.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// RowError reports a row that is not a valid bet. The reader carries on after it.
type RowError struct {
	Line   int
	Reason string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Reader reads bet rows `first name,last name,document,birthdate,number` from a UTF-8 CSV
// stream: no header, no quoting (a '"' makes the row invalid), LF or CRLF line ends, an optional
// UTF-8 BOM at the very start. Blank lines at the end of the file are ignored; a blank line
// followed by more rows is an invalid row.
type Reader struct {
	br         *bufio.Reader
	line       int  // number of the last physical line read
	bomChecked bool // the start of the stream was checked for a BOM

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

// Next returns the next valid bet line, without its line terminator. The line aliases the
// reader's buffer and is valid only until the next call to Next. Next returns a *RowError for
// an invalid row (call Next again to go on), io.EOF at the end of the input, or the read error
// of the underlying reader.
func (r *Reader) Next() ([]byte, error) {
	for {
		if r.blankCount > 0 && (r.held != nil || r.heldTooBig) {
			line := r.blankFrom
			r.blankFrom++
			r.blankCount--
			return nil, &RowError{Line: line, Reason: ReasonEmptyLine}
		}
		if r.held != nil || r.heldTooBig {
			text, n, tooBig := r.held, r.heldLine, r.heldTooBig
			r.held, r.heldTooBig = nil, false
			return r.row(text, n, tooBig)
		}
		if r.done {
			return nil, io.EOF
		}
		text, tooBig, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.done = true // trailing blank lines, if any, are fine
				r.blankCount = 0
				continue
			}
			return nil, fmt.Errorf("read line %d: %w", r.line+1, err)
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

func (r *Reader) row(text []byte, line int, tooBig bool) ([]byte, error) {
	if tooBig {
		return nil, &RowError{Line: line, Reason: ReasonLineTooLong}
	}
	if _, reason := protocol.ParseBetLine(text); reason != "" {
		return nil, &RowError{Line: line, Reason: reason}
	}
	return text, nil
}

// readLine reads one physical line without its "\n" or "\r\n". A line that does not fit the
// buffer is skipped to its end and reported with tooBig. It returns io.EOF only when no byte
// is left. A UTF-8 BOM at the start of the stream is skipped; one anywhere else is data.
func (r *Reader) readLine() (text []byte, tooBig bool, err error) {
	if !r.bomChecked {
		r.bomChecked = true
		if err := r.skipBOM(); err != nil {
			return nil, false, err
		}
	}
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

// skipBOM discards a UTF-8 BOM at the start of the stream. A stream shorter than a BOM is not
// an error here: readLine reads what there is.
func (r *Reader) skipBOM() error {
	p, err := r.br.Peek(len(utf8BOM))
	if bytes.Equal(p, utf8BOM) {
		_, err = r.br.Discard(len(utf8BOM))
		return err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
