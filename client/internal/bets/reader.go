// This file owns the reader of the agency's bets file.

package bets

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"

	"lottery/client/internal/protocol"
)

// ErrRecordTooLong is the fatal error of a record longer than maxRecordBytes: every valid
// record is one short line, so such a record is a broken file (an unclosed quote, say), and
// reading on would mean buffering it whole.
var ErrRecordTooLong = errors.New("record longer than 64 KiB (an unclosed quote?)")

const (
	// maxRecordBytes bounds what encoding/csv may buffer for one record, which it otherwise
	// reads whole however long it is. A valid record is at most protocol.MaxBetLineSize bytes.
	maxRecordBytes = 64 << 10
	// bufferSize is the buffer between the file and encoding/csv.
	bufferSize = 16 << 10
)

// utf8BOM is the byte order mark some editors and spreadsheets ("CSV UTF-8") write at the start
// of a UTF-8 file. It marks the encoding and is not part of the first row's first name.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// RowError reports a row that is not a valid bet. The reader carries on after it.
type RowError struct {
	Line   int // where the record starts, from 1
	Reason string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Reader reads bet rows `first name,last name,document,birthdate,number` from an RFC 4180 CSV
// stream with encoding/csv: no header, names with a ',' or a '"' quoted (any field may be
// quoted), LF or CRLF line ends, blank lines skipped, an optional UTF-8 BOM at the very start.
// It holds one record at a time.
type Reader struct {
	src  io.Reader // the input, until the first Next
	in   *limitReader
	csv  *csv.Reader
	line []byte // the last line returned
	err  error  // a fatal error, returned again by every later Next
}

// NewReader returns a Reader over r; nothing is read before the first Next.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r}
}

// Next returns the canonical wire line of the next valid bet (protocol.AppendBetLine), '\n'
// included. The line is valid only until the next call to Next. Next returns a *RowError for
// an invalid row (call Next again to go on), io.EOF at the end of the input, or a fatal
// error: the underlying reader's, or ErrRecordTooLong.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.csv == nil {
		if r.err = r.start(); r.err != nil {
			return nil, r.err
		}
	}
	r.in.limit = r.csv.InputOffset() + maxRecordBytes + bufferSize
	record, err := r.csv.Read()
	var parseErr *csv.ParseError
	if err != nil {
		parseErr = asParseError(err)
	}
	switch {
	case r.in.cut:
		switch {
		case parseErr != nil:
			r.err = fmt.Errorf("line %d: %w", parseErr.StartLine, ErrRecordTooLong)
		case len(record) > 0:
			line, _ := r.csv.FieldPos(0)
			r.err = fmt.Errorf("line %d: %w", line, ErrRecordTooLong)
		default: // nothing but blank lines, and too many of them: no line to name
			r.err = fmt.Errorf("blank lines up to byte %d: %w", r.csv.InputOffset(), ErrRecordTooLong)
		}
		return nil, r.err
	case parseErr != nil: // a quote out of place: the reader is past the record
		return nil, &RowError{Line: parseErr.StartLine, Reason: protocol.ReasonQuoting}
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case err != nil:
		r.err = err
		return nil, err
	}
	line, reason := protocol.AppendBetLine(r.line[:0], record)
	if reason != "" {
		n, _ := r.csv.FieldPos(0)
		return nil, &RowError{Line: n, Reason: reason}
	}
	r.line = line
	return line, nil
}

// asParseError returns the *csv.ParseError in err's chain, or nil. It is a function of its
// own because the target of errors.As escapes to the heap: Next calls it only on an error,
// sparing the valid rows that allocation.
func asParseError(err error) *csv.ParseError {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// start skips a BOM at the start of the input and sets up the CSV reader.
func (r *Reader) start() error {
	var head [3]byte
	n, err := io.ReadFull(r.src, head[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	src := r.src
	if !bytes.Equal(head[:n], utf8BOM) {
		src = io.MultiReader(bytes.NewReader(head[:n]), r.src)
	}
	r.src = nil
	r.in = &limitReader{r: src}
	// csv.NewReader uses a *bufio.Reader as is: the limit counts from what it holds.
	r.csv = csv.NewReader(bufio.NewReaderSize(r.in, bufferSize))
	r.csv.FieldsPerRecord = -1 // a wrong number of fields is an invalid row, not an error
	r.csv.ReuseRecord = true
	return nil
}

// limitReader delivers at most limit bytes in all, then ends the input early with io.EOF and
// sets cut. Next sets limit before each record to where it ends at the latest: a record
// within it is read as usual, and one that is not is cut short by the "end of input", which
// encoding/csv reports with the line where the record starts.
type limitReader struct {
	r     io.Reader
	n     int64 // bytes delivered
	limit int64
	cut   bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if room := l.limit - l.n; int64(len(p)) > room {
		if room <= 0 {
			l.cut = true
			return 0, io.EOF
		}
		p = p[:room]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}
