// Differential tests of the reader: csvReader, the reader as it was before its fast path
// (encoding/csv alone), is the oracle, and the Reader must give the same lines, RowErrors and
// final error on every input, however the input is delivered (one byte a read, data with its
// error, an error mid-stream), whatever its buffer size and record bound.

package bets

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"lottery/client/internal/protocol"
)

// csvReader is the oracle: the Reader of commit 6babd83, encoding/csv alone, with its record
// bound made a parameter. It shares with the Reader only what the fast path left as it was:
// the BOM skip (withoutBOM) and the record bound (limitReader).
type csvReader struct {
	src   io.Reader
	in    *limitReader
	csv   *csv.Reader
	bound int64 // maxRecordBytes + the 16 KiB buffer
	line  []byte
	err   error
}

func newCSVReader(r io.Reader, bound int64) *csvReader {
	return &csvReader{src: r, bound: bound}
}

func (r *csvReader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.csv == nil {
		if r.err = r.start(); r.err != nil {
			return nil, r.err
		}
	}
	r.in.limit = r.csv.InputOffset() + r.bound
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
		default:
			r.err = fmt.Errorf("blank lines up to byte %d: %w", r.csv.InputOffset(), ErrRecordTooLong)
		}
		return nil, r.err
	case parseErr != nil:
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

func (r *csvReader) start() error {
	src, err := withoutBOM(r.src)
	if err != nil {
		return err
	}
	r.src = nil
	r.in = &limitReader{r: src}
	r.csv = csv.NewReader(bufio.NewReaderSize(r.in, 16<<10))
	r.csv.FieldsPerRecord = -1
	r.csv.ReuseRecord = true
	return nil
}

var errDisk = errors.New("disk on fire")

// errAt delivers data, then fails with errDisk at byte at: once, going on with the data after
// it, or for good.
type errAt struct {
	data []byte
	at   int
	once bool
	err  error // errDisk, or io.EOF for an end of input that is not the end
	done bool
}

func (e *errAt) Read(p []byte) (int, error) {
	if !e.done && e.at <= 0 {
		e.done = e.once
		return 0, e.err
	}
	if len(e.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if !e.done && e.at < n {
		n = e.at
	}
	n = copy(p, e.data[:min(n, len(e.data))])
	e.data, e.at = e.data[n:], e.at-n
	return n, nil
}

// source returns a new reader of data delivered the way mode says; at is where an error
// mode fails.
func source(data []byte, mode, at int) io.Reader {
	switch mode % 9 {
	case 1:
		return iotest.OneByteReader(bytes.NewReader(data))
	case 2:
		return iotest.HalfReader(bytes.NewReader(data))
	case 3:
		return iotest.DataErrReader(bytes.NewReader(data))
	case 4:
		return iotest.DataErrReader(iotest.OneByteReader(bytes.NewReader(data)))
	case 5:
		return iotest.TimeoutReader(bytes.NewReader(data)) // a timeout on the second read only
	case 6:
		return &errAt{data: data, at: at, err: errDisk}
	case 7:
		return &errAt{data: data, at: at, once: true, err: errDisk}
	case 8:
		return &errAt{data: data, at: at, once: true, err: io.EOF} // more after an EOF
	}
	return bytes.NewReader(data)
}

// events reads r through and describes each result of Next: a line, a RowError or an error,
// and what Next returns after an error (the same fatal error, or after io.EOF whatever
// input comes next). It stops after a second io.EOF or fatal error.
func events(next func() ([]byte, error), limit int) []string {
	var out []string
	ends := 0
	for i := 0; i < limit && ends < 2; i++ {
		line, err := next()
		var re *RowError
		switch {
		case err == nil:
			out = append(out, "line "+string(line))
		case errors.As(err, &re):
			out = append(out, fmt.Sprintf("row %d %s", re.Line, re.Reason))
		case err == io.EOF:
			out = append(out, "EOF")
			ends++
		default:
			out = append(out, fmt.Sprintf("error %v (too long: %t)", err, errors.Is(err, ErrRecordTooLong)))
			ends++
		}
	}
	return out
}

// compare reads input with the oracle and with the Reader (buffer size, record bound) and
// fails at the first difference.
func compare(t *testing.T, input []byte, mode, at, size int, bound int64) {
	t.Helper()
	limit := len(input) + 10
	want := events(newCSVReader(source(input, mode, at), bound).Next, limit)
	got := events(newReaderSize(source(input, mode, at), size, bound).Next, limit)
	for i := 0; i < len(want) || i < len(got); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Fatalf("input %.200q (%d bytes), mode %d, at %d, buffer %d, bound %d: result %d is\n%.300q\nwant\n%.300q",
				input, len(input), mode, at, size, bound, i, g, w)
		}
	}
}

const row = "Ana,Lopez,1,1990-01-01,10"

// trickyInputs are the differential table: line ends, blank lines, BOMs, quotes, long lines
// and records around the bound, wrong fields, bad UTF-8.
func trickyInputs() []string {
	long := func(n int) string { return strings.Repeat("x", n) }
	in := []string{
		"", "\n", "\r\n", "\r", "\r\r", "\r\r\n", "\n\n", "\r\n\r\n", ",", ",\n", "\"", "\"\"", "\"\n",
		row, row + "\n", row + "\r\n", row + "\r", row + "\r\r", row + "\r\r\n", row + "\n\r",
		row + "\r" + row + "\n", "Ana\r,Lopez,1,1990-01-01,10\n", "\rAna,Lopez,1,1990-01-01,10\n",
		"\n" + row + "\n", "\r\n" + row, "\n\r\n\n" + row + "\n\n\r\n" + row + "\n\n",
		row + "\n" + row + "\r\n" + row, row + "\n\n", row + "\r\n\r\n",
		bom, bom + "\n", bom + row, bom + "\n" + row + "\nAna,Lopez,x,1990-01-01,1\n", bom + bom + row,
		"\xEF\xBB" + row, "\xEF", row + "\n" + bom + row + "\n", row + "\n" + bom + "\n" + row,
		`"Pérez, Juan",Gómez,1,1985-06-01,7` + "\n" + row,
		`"Ana ""la Tana""",O'Neill,2,1990-01-01,12` + "\r\n" + row,
		`"Ana` + "\r\n" + `María",Paz,1,1990-01-01,1` + "\n" + row,
		`"Ana` + "\n\n" + `",Paz,1,1990-01-01,1` + "\n" + row,
		`"Ana,Paz,1,1990-01-01,1` + "\n" + row + "\n",
		row + "\n" + `"Ana,Paz` + "\n" + row + "\n" + `x",Paz,1,1990-01-01,1` + "\n" + row,
		`Ana,Lo"pez,1,1990-01-01,1` + "\n" + row, `"Ana" x,Lopez,1,1990-01-01,1` + "\n" + row,
		`Ana,Lopez,1,1990-01-01,1"` + "\n" + row, `Ana,Lopez,1,1990-01-01,"1"` + "\n" + row,
		row + "\n\"" + "\n" + row, row + "\n\"Ana\",Paz,1,1990-01-01,1", row + "\n\"Ana\",Paz,1,1990-01-01,\"1\r",
		row + "\n\"Ana\"\r\n", row + "\n\"Ana\"\r", row + "\n\"Ana\r\n\"\r\n" + row, row + "\n\"\r\"\r",
		"Ana,Lopez,1,1990-01-01\n" + row, "Ana,Lopez,1,1990-01-01,1,2\n" + row, ",,,,\n,,,,,\n" + row,
		"Ana\xff,Lopez,1,1990-01-01,1\n" + row, "Ana,Lopez\xC3,1,1990-01-01,1\n", "\"Ana\xff\",B,1,1990-01-01,1\n",
		"Ana\u0085,Lopez,1,1990-01-01,1\n", long(300) + ",B,1,1990-01-01,1\n" + row,
		long(40_000) + "\n" + row, `"` + long(40_000) + `",B,1,1990-01-01,1` + "\n" + row,
		long(100_000) + "\n" + row, `"` + long(100_000) + "\n" + row, strings.Repeat("\n", 100_000) + row,
		strings.Repeat("\r\n", 50_000) + row, row + "\n" + long(100_000),
		row + "\n" + row + "\n" + row + "\n\"Ana,Paz,1,1990-01-01,1\n" + strings.Repeat(row+"\n", 4000),
	}
	// Around the bound (maxRecordBytes + readAhead from the record's start): a line, a quoted
	// field, blank lines, with and without a final newline, after rows the fast path takes (the
	// first row of a buffer goes to encoding/csv).
	b := maxRecordBytes + readAhead
	rows := row + "\n" + row + "\n\n" + row + "\n"
	for _, n := range []int{maxRecordBytes - 1, maxRecordBytes, maxRecordBytes + 1, b - 3, b - 2, b - 1, b, b + 1} {
		in = append(in,
			rows+long(n)+"\n"+row,
			rows+long(n-1)+"\r\n"+row,
			rows+long(n),
			rows+long(n)+"\r",
			rows+"\""+long(n-3)+"\",B\n"+row,
			rows+"\""+long(n-2)+"\"\n"+row,
			rows+"\""+long(n-2)+"\"",
			rows+"\""+long(n-1),
			rows+"\""+long(n/2)+"\n"+long(n/2)+"\",B\n"+row,
			rows+strings.Repeat("\n", n-1)+row+"\n",
			rows+strings.Repeat("\n", n)+row+"\n",
			rows+strings.Repeat("\r\n", n/2)+"x\n",
			rows+strings.Repeat("\n", n/2)+long(n/2)+"\n"+row,
			rows+strings.Repeat("\n", n/2)+"\""+long(n/2)+"\n"+row,
		)
	}
	return in
}

// TestReaderMatchesCSV compares the Reader with the oracle on trickyInputs, delivered every
// way source knows, with the real buffer and bound and with small ones.
func TestReaderMatchesCSV(t *testing.T) {
	inputs := trickyInputs()
	for i, input := range inputs {
		data := []byte(input)
		short := len(data) < 2000
		ats := []int{0, 1, 3, len(data) / 2, len(data) - 1, len(data)}
		sizes := []int{16, 17, 64, 4096, bufferSize}
		if !short { // fewer ways for long inputs, which cost much more
			ats, sizes = []int{len(data) / 2}, []int{bufferSize}
			compare(t, data, 0, 0, 17, maxRecordBytes+readAhead)
		}
		for mode := 0; mode < 9; mode++ {
			if !short && (mode == 1 || mode == 4) {
				continue // one byte a read adds nothing on long inputs but time
			}
			for j, at := range ats {
				if mode < 6 && j > 0 {
					break // at only matters to errAt
				}
				for _, size := range sizes {
					compare(t, data, mode, at, size, maxRecordBytes+readAhead)
					if short {
						for _, bound := range []int64{1, 5, 26, 100} {
							compare(t, data, mode, at, size, bound)
						}
					}
				}
			}
		}
		if t.Failed() {
			t.Fatalf("input %d", i)
		}
	}
}

// TestReaderMatchesCSVMillionRows compares the two on the millionRows file cut to 100,000
// rows, 1 in 10 with a quoted name, with blank and invalid rows added.
func TestReaderMatchesCSVMillionRows(t *testing.T) {
	file := millionRows(100_000)
	file = bytes.ReplaceAll(file, []byte("99,"), []byte("99,\r\n\n,"))
	file = bytes.ReplaceAll(file, []byte("77\n"), []byte("77\r\n\n"))
	file = bytes.ReplaceAll(file, []byte("1234"), []byte("12\"34"))
	for _, size := range []int{61, bufferSize} {
		compare(t, file, 0, 0, size, maxRecordBytes+readAhead)
	}
}

// TestReaderDoesNotAllocate checks that the fast path allocates nothing per row.
func TestReaderDoesNotAllocate(t *testing.T) {
	file := bytes.Repeat([]byte("José,Núñez Peña,30904465,1999-03-17,7574\r\n"), 10_000)
	r := NewReader(bytes.NewReader(file))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations a row", n)
	}
}

// FuzzReaderMatchesCSV compares the Reader with the oracle on any input, delivered any way,
// with any buffer size and a small record bound or the real one.
func FuzzReaderMatchesCSV(f *testing.F) {
	for i, input := range trickyInputs() {
		if len(input) < 1000 {
			f.Add([]byte(input), uint8(i), uint16(i), uint16(i*7), uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, at, size uint16, bound uint8) {
		b := int64(maxRecordBytes + readAhead)
		if bound < 200 {
			b = int64(bound) + 1
		}
		sz := 16 + int(size%600)
		if size >= 60000 {
			sz = bufferSize
		}
		compare(t, data, int(mode), int(at)%(len(data)+1), sz, b)
	})
}

// TestReaderOffset checks Offset after each row: the bytes up to the end of the row's line,
// whichever path read it (the fast path, or encoding/csv for a quote or a row cut by the
// buffer's end), blank lines and invalid rows included, a BOM not.
func TestReaderOffset(t *testing.T) {
	const row = "Ana,Lopez,1,1990-01-01,7\n" // 25 bytes
	tests := []struct {
		name  string
		input string
		size  int     // of the reader's buffer (0: the default)
		want  []int64 // Offset after each Next but the last (io.EOF)
	}{
		{"rows", row + row + row, 0, []int64{25, 50, 75}},
		{"CRLF and blank lines", "\r\n" + strings.TrimSuffix(row, "\n") + "\r\n\n\n" + row, 0, []int64{28, 55}},
		{"a quoted row", `"Ana",Lopez,1,1990-01-01,7` + "\n" + row, 0, []int64{27, 52}},
		{"an invalid row", "Ana,Lopez,1,1990-02-30,7\n" + row, 0, []int64{25, 50}},
		{"a BOM", "\xEF\xBB\xBF" + row + row, 0, []int64{25, 50}},
		{"no final newline", row + strings.TrimSuffix(row, "\n"), 0, []int64{25, 49}},
		{"rows across a small buffer", row + row + row + row, 32, []int64{25, 50, 75, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r *Reader
			if tt.size > 0 {
				r = newReaderSize(strings.NewReader(tt.input), tt.size, maxRecordBytes+readAhead)
			} else {
				r = NewReader(strings.NewReader(tt.input))
			}
			if r.Offset() != 0 {
				t.Fatalf("Offset %d before the first row", r.Offset())
			}
			var got []int64
			for {
				_, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				var re *RowError
				if err != nil && !errors.As(err, &re) {
					t.Fatal(err)
				}
				got = append(got, r.Offset())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("offsets %v, want %v", got, tt.want)
			}
		})
	}
}
