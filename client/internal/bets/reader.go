// This file owns the reader of the agency's bets file: RFC 4180 CSV read with encoding/csv,
// but for the common line (whole in the buffer, no quote), which a fast path splits itself.

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
	// readAhead is the slack past maxRecordBytes: the input of a record ends at the latest
	// maxRecordBytes+readAhead bytes after its start (blank lines before it included).
	readAhead = 16 << 10
	// bufferSize is the buffer over the file: the fast path takes the lines that lie whole in
	// it.
	bufferSize = 64 << 10
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
//
// Why a fast path: with encoding/csv alone, BenchmarkReadAndBuild took 34-39 ms per 100,000
// rows (a string and line copies per record; the reader before it, which refused quotes,
// 14.5-19 ms), and with this fast path it takes 20-25 ms. A line that lies whole in the
// buffer and holds no '"' (nearly every row) is checked here in place, with encoding/csv's
// rules for such a line (CRLF as LF, a blank line skipped but counted) and
// protocol.ValidPlainLine (one pass; protocol.CheckPlainLine names the rule a refused line
// breaks); when valid it is its own canonical line, returned from the buffer without a copy
// (BenchmarkReadAndBuild: 10-11 ms, down from 14-16 ms on the machine where the split into
// fields and AppendBetLine took those; the one pass then took it from 8.8 to 7.1 ms, and
// BenchmarkReadAndBuildAccented from 10.0 to 7.5 ms; reading the line eight bytes at a time,
// to 6.0 and 6.6 ms). Every other record (a quote, a line
// across the buffer's end, the end of the input, a read error) goes to encoding/csv, fed from
// the same buffer, with the same record bound. reader_test.go checks that the result is
// encoding/csv's alone, row for row, error for error.
type Reader struct {
	src   io.Reader // the input, until the first Next
	size  int       // of buf
	bound int64     // maxRecordBytes + readAhead (tests shrink it)
	in    *limitReader
	buf   *bufio.Reader // over in: the fast path reads it, and feeds encoding/csv
	feed  feeder
	csv   *csv.Reader
	line  []byte // the last line returned, when it is not the buffer's
	err   error  // a fatal error, returned again by every later Next
	// The lines and bytes the fast path took. Line numbers and offsets of encoding/csv count
	// only what it read, and are these more.
	fastLines int
	fastBytes int64
}

// NewReader returns a Reader over r; nothing is read before the first Next.
func NewReader(r io.Reader) *Reader {
	return newReaderSize(r, bufferSize, maxRecordBytes+readAhead)
}

// newReaderSize is NewReader with a buffer of size bytes (at least 16) and records cut bound
// bytes after their start: tests make both small.
func newReaderSize(r io.Reader, size int, bound int64) *Reader {
	return &Reader{src: r, size: size, bound: bound}
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
	start := r.fastBytes + r.csv.InputOffset() // where the record starts, blank lines included
	for {
		n := r.buf.Buffered()
		if n == 0 {
			break
		}
		data, _ := r.buf.Peek(n) // never reads: the data is buffered
		end := bytes.IndexByte(data, '\n')
		if end < 0 {
			break
		}
		line := data[:end]
		crlf := false
		if k := len(line) - 1; k >= 0 && line[k] == '\r' {
			line, crlf = line[:k], true // CRLF is LF, but for a lone '\r', which is data
		}
		// Nearly every line is a valid bet without a quote, which one pass settles; any
		// other line with a quote goes to encoding/csv, and one without is checked again
		// to name the rule it breaks.
		valid := len(line) > 0 && protocol.ValidPlainLine(line)
		if !valid && bytes.IndexByte(line, '"') >= 0 {
			break
		}
		_, _ = r.buf.Discard(end + 1) // never reads either; line stays valid until a read
		r.fastLines++
		r.fastBytes += int64(end + 1)
		if len(line) == 0 {
			continue // a blank line
		}
		if !valid {
			if reason := protocol.CheckPlainLine(line); reason != "" {
				// This line's number: the lines taken here and those encoding/csv read.
				return nil, &RowError{Line: r.fastLines + r.feed.lines, Reason: reason}
			}
		}
		if !crlf {
			// The canonical line is the line as it is in the buffer, '\n' included: no
			// copy. It stays there until the next Next reads the input again.
			return data[:end+1], nil
		}
		r.line = append(append(r.line[:0], line...), '\n')
		return r.line, nil
	}
	return r.readCSV(start)
}

// Offset is how many bytes of the input the rows read so far span, from its start (after a
// UTF-8 BOM), blank lines and invalid rows included: how far into the file the reader is.
func (r *Reader) Offset() int64 {
	if r.csv == nil {
		return 0
	}
	return r.fastBytes + r.csv.InputOffset()
}

// readCSV reads the next record with encoding/csv, which starts reading the input at byte
// start or later: its input is cut at start+maxRecordBytes+readAhead.
func (r *Reader) readCSV(start int64) ([]byte, error) {
	r.in.limit = start + r.bound
	record, err := r.csv.Read()
	var parseErr *csv.ParseError
	if err != nil {
		parseErr = asParseError(err)
	}
	switch {
	case r.in.cut:
		switch {
		case parseErr != nil:
			r.err = fmt.Errorf("line %d: %w", r.fastLines+parseErr.StartLine, ErrRecordTooLong)
		case len(record) > 0:
			line, _ := r.csv.FieldPos(0)
			r.err = fmt.Errorf("line %d: %w", r.fastLines+line, ErrRecordTooLong)
		default: // nothing but blank lines, and too many of them: no line to name
			r.err = fmt.Errorf("blank lines up to byte %d: %w", r.fastBytes+r.csv.InputOffset(), ErrRecordTooLong)
		}
		return nil, r.err
	case parseErr != nil: // a quote out of place: the reader is past the record
		return nil, &RowError{Line: r.fastLines + parseErr.StartLine, Reason: protocol.ReasonQuoting}
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case err != nil:
		r.err = err
		return nil, err
	}
	line, reason := protocol.AppendBetLine(r.line[:0], record)
	if reason != "" {
		n, _ := r.csv.FieldPos(0)
		return nil, &RowError{Line: r.fastLines + n, Reason: reason}
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

// start skips a BOM at the start of the input and sets up the buffer and the CSV reader.
func (r *Reader) start() error {
	src, err := withoutBOM(r.src)
	if err != nil {
		return err
	}
	r.src = nil
	r.in = &limitReader{r: src}
	r.buf = bufio.NewReaderSize(r.in, r.size)
	r.feed.b = r.buf
	r.csv = csv.NewReader(&r.feed)
	r.csv.FieldsPerRecord = -1 // a wrong number of fields is an invalid row, not an error
	r.csv.ReuseRecord = true
	return nil
}

// withoutBOM returns src past a UTF-8 BOM at its very start, or src whole if it has none.
func withoutBOM(src io.Reader) (io.Reader, error) {
	var head [3]byte
	n, err := io.ReadFull(src, head[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	if bytes.Equal(head[:n], utf8BOM) {
		return src, nil
	}
	return io.MultiReader(bytes.NewReader(head[:n]), src), nil
}

// feeder is encoding/csv's input: the reader's buffer, served at most up to a '\n' per Read.
// encoding/csv reads through a bufio.Reader of its own, which calls Read only when it holds no
// '\n', and reads a line up to the first '\n' or error it gets; so it never holds more than
// the line it is reading, and the fast path finds the next line in the reader's buffer. It
// also lets feeder count encoding/csv's lines: one for each '\n' served, one for each error.
type feeder struct {
	b     *bufio.Reader
	lines int // the lines encoding/csv has read
}

func (f *feeder) Read(p []byte) (int, error) {
	if f.b.Buffered() == 0 {
		if _, err := f.b.Peek(1); err != nil { // reads the input once (and returns its error)
			f.lines++
			return 0, err
		}
	}
	data, _ := f.b.Peek(f.b.Buffered())
	if len(data) > len(p) {
		data = data[:len(p)]
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
		f.lines++
	}
	n := copy(p, data)
	_, _ = f.b.Discard(n)
	return n, nil
}

// limitReader delivers at most limit bytes in all, then ends the input early with io.EOF and
// sets cut. Next sets limit before each record it hands encoding/csv to where the record ends
// at the latest: a record within it is read as usual, and one that is not is cut short by the
// "end of input", which encoding/csv reports with the line where the record starts. (The fast
// path takes only lines already in the buffer, that is below the limit.)
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
