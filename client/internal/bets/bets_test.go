// Tests of the CSV reader (line ends, accents, invalid rows and their line numbers, empty
// input, speed) and of the batch builder (frame size limit, maxAmount, sequence numbers).
package bets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"lottery/client/internal/protocol"
)

type result struct {
	valid   []int    // line numbers of valid rows
	docs    []string // their documents
	invalid []string // "line: reason"
}

func readAll(t *testing.T, input string) result {
	t.Helper()
	var res result
	r := NewReader(strings.NewReader(input))
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("reader does not terminate")
		}
		row, err := r.Next()
		var re *RowError
		switch {
		case err == nil:
			res.valid = append(res.valid, row.Line)
			res.docs = append(res.docs, string(row.Fields.Document))
		case errors.As(err, &re):
			res.invalid = append(res.invalid, fmt.Sprintf("%d: %s", re.Line, re.Reason))
		case errors.Is(err, io.EOF):
			return res
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
}

func TestReader(t *testing.T) {
	const a = "Ana,Lopez,1,1990-01-01,10"
	const b = "José,Núñez,22,2000-02-29,20"
	tests := []struct {
		name  string
		input string
		want  result
	}{
		{"empty file", "", result{}},
		{"only a newline", "\n", result{}},
		{"LF", a + "\n" + b + "\n", result{valid: []int{1, 2}, docs: []string{"1", "22"}}},
		{"CRLF", a + "\r\n" + b + "\r\n", result{valid: []int{1, 2}, docs: []string{"1", "22"}}},
		{"no final newline", a + "\n" + b, result{valid: []int{1, 2}, docs: []string{"1", "22"}}},
		{"blank last lines", a + "\n\n\r\n", result{valid: []int{1}, docs: []string{"1"}}},
		{"blank line in the middle", a + "\n\n\r\n" + b + "\n", result{
			valid: []int{1, 4}, docs: []string{"1", "22"},
			invalid: []string{"2: empty line", "3: empty line"},
		}},
		{"invalid rows", strings.Join([]string{
			a,
			`Ana,"Lopez",1,1990-01-01,1`,
			"Ana,Lopez,1,2001-02-29,1",
			"Ana,Lopez,x,1990-01-01,1",
			"Ana,Lopez,1,1990-01-01",
			"Ana,Lopez,1,1990-01-01,1,2",
			",Lopez,1,1990-01-01,1",
			"Ana,Lopez,1,1990-01-01,",
			"Ana\xff,Lopez,1,1990-01-01,1",
			b,
		}, "\r\n"), result{
			valid: []int{1, 10}, docs: []string{"1", "22"},
			invalid: []string{
				"2: last_name", "3: birthdate", "4: document", "5: fields", "6: fields",
				"7: first_name", "8: number", "9: not UTF-8",
			},
		}},
		{"line too long", a + "\n" + strings.Repeat("x", readerBufferSize*2+5) + "\n" + b + "\n", result{
			valid: []int{1, 3}, docs: []string{"1", "22"}, invalid: []string{"2: line too long"},
		}},
		{"line too long at the end", a + "\n" + strings.Repeat("x", readerBufferSize+1), result{
			valid: []int{1}, docs: []string{"1"}, invalid: []string{"2: line too long"},
		}},
		{"long but buffered line", strings.Repeat("x", 300) + ",B,1,1990-01-01,1\n", result{
			invalid: []string{"1: first_name"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.input)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReaderKeepsAccents(t *testing.T) {
	r := NewReader(strings.NewReader("María José,Núñez Peña,123,1980-12-31,7574\r\n"))
	row, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if string(row.Fields.FirstName) != "María José" || string(row.Fields.LastName) != "Núñez Peña" ||
		string(row.Text) != "María José,Núñez Peña,123,1980-12-31,7574" {
		t.Fatalf("got %q", row.Text)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestReaderPropagatesReadErrors(t *testing.T) {
	_, err := NewReader(failingReader{}).Next()
	var re *RowError
	if err == nil || errors.Is(err, io.EOF) || errors.As(err, &re) {
		t.Fatalf("got %v, want the read error", err)
	}
}

// lines returns n valid bet lines; long makes each first and last name 100 bytes.
func lines(n int, long bool) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		first, last := fmt.Sprintf("Nombre%d", i), "Apellido"
		if long {
			first = strings.Repeat("é", 45) + fmt.Sprintf("%010d", i) // 100 bytes
			last = strings.Repeat("L", 100)
		}
		out[i] = []byte(fmt.Sprintf("%s,%s,%d,1990-01-01,%d", first, last, 1000000000+i, i))
	}
	return out
}

// build runs lines through a builder and returns every batch.
func build(agency uint32, maxAmount int, ls [][]byte) []*Batch {
	b := NewBuilder(agency, maxAmount)
	var out []*Batch
	for _, l := range ls {
		if full := b.Add(l); full != nil {
			out = append(out, full)
		}
	}
	if last := b.Flush(); last != nil {
		out = append(out, last)
	}
	return out
}

func TestBuilder(t *testing.T) {
	tests := []struct {
		name      string
		maxAmount int
		lines     [][]byte
		counts    []int // expected count of each batch; nil to only check invariants
	}{
		{"no bets", 10, nil, []int{}},
		{"one bet", 10, lines(1, false), []int{1}},
		{"exact multiple", 5, lines(15, false), []int{5, 5, 5}},
		{"remainder", 4, lines(10, false), []int{4, 4, 2}},
		{"maxAmount 1", 1, lines(3, false), []int{1, 1, 1}},
		{"long names cut by size", 65535, lines(200, true), nil},
		{"long names small max", 20, lines(200, true), []int{20, 20, 20, 20, 20, 20, 20, 20, 20, 20}},
		{"short names cut by size", 65535, lines(1000, false), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batches := build(7, tt.maxAmount, tt.lines)
			var all []byte
			counts := []int{}
			for i, bt := range batches {
				counts = append(counts, bt.Count)
				if len(bt.Frame) > protocol.MaxFrame {
					t.Fatalf("batch %d is %d bytes > %d", i, len(bt.Frame), protocol.MaxFrame)
				}
				if bt.Count > tt.maxAmount {
					t.Fatalf("batch %d holds %d bets > %d", i, bt.Count, tt.maxAmount)
				}
				if bt.Seq != uint32(i+1) {
					t.Fatalf("batch %d has seq %d", i, bt.Seq)
				}
				// Every batch is a valid BET frame that decodes to itself.
				m, err := protocol.Decode(bt.Frame)
				if err != nil {
					t.Fatalf("batch %d does not decode: %v", i, err)
				}
				bet := m.(protocol.Bet)
				if bet.Agency != 7 || bet.Seq != bt.Seq || int(bet.Count) != bt.Count {
					t.Fatalf("batch %d decodes to %+v", i, bet)
				}
				// Cut only when the next bet would not fit (or the count is full).
				if i+1 < len(batches) && bt.Count < tt.maxAmount {
					next := batches[i+1].Lines()
					nextLine := next[:bytes.IndexByte(next, '\n')+1]
					if len(bt.Frame)+len(nextLine) <= protocol.MaxFrame {
						t.Fatalf("batch %d cut early: %d bytes + %d would fit", i, len(bt.Frame), len(nextLine))
					}
				}
				all = append(all, bt.Lines()...)
			}
			if tt.counts != nil && !reflect.DeepEqual(counts, tt.counts) {
				t.Fatalf("counts %v, want %v", counts, tt.counts)
			}
			want := append(bytes.Join(tt.lines, []byte("\n")), '\n')
			if len(tt.lines) == 0 {
				want = nil
			}
			if !bytes.Equal(all, want) {
				t.Fatal("the batches do not hold exactly the bets, in order")
			}
		})
	}
}

func TestBuilderRecycle(t *testing.T) {
	b := NewBuilder(1, 2)
	ls := lines(6, false)
	first := b.Add(ls[0])
	first = b.Add(ls[1])
	b.Recycle(first)
	b.Add(ls[2])
	second := b.Add(ls[3])
	if second == nil || second.Seq != 2 || second.Count != 2 {
		t.Fatalf("second batch %+v", second)
	}
	if _, err := protocol.Decode(second.Frame); err != nil {
		t.Fatal(err)
	}
	if b.LastSeq() != 2 {
		t.Fatalf("LastSeq %d", b.LastSeq())
	}
}

// TestMillionRows checks the reader and builder stream a million rows well under a second
// (about 0.2 s here; the bound is loose for slow CI machines). Under -race it only checks
// correctness, on fewer rows.
func TestMillionRows(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	n := 1_000_000
	if raceEnabled {
		n = 100_000
	}
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&buf, "Nombre%d,Apellido Ñandú,%d,1990-01-01,%d\n", i, 10000000+i, i%10000)
	}
	start := time.Now()
	r := NewReader(bytes.NewReader(buf.Bytes()))
	b := NewBuilder(1, 100)
	rows, batches := 0, 0
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows++
		if full := b.Add(row.Text); full != nil {
			batches++
			b.Recycle(full)
		}
	}
	if b.Flush() != nil {
		batches++
	}
	elapsed := time.Since(start)
	t.Logf("%d rows, %d batches in %v", rows, batches, elapsed)
	if rows != n || batches != n/100 {
		t.Fatalf("rows %d batches %d", rows, batches)
	}
	if !raceEnabled && elapsed > 2*time.Second {
		t.Fatalf("too slow: %v", elapsed)
	}
}

func BenchmarkReadAndBuild(b *testing.B) {
	var buf bytes.Buffer
	for i := 0; i < 100_000; i++ {
		fmt.Fprintf(&buf, "Nombre%d,Apellido,%d,1990-01-01,%d\n", i, 10000000+i, i%10000)
	}
	b.SetBytes(int64(buf.Len()))
	for i := 0; i < b.N; i++ {
		r := NewReader(bytes.NewReader(buf.Bytes()))
		bl := NewBuilder(1, 100)
		for {
			row, err := r.Next()
			if err != nil {
				break
			}
			if full := bl.Add(row.Text); full != nil {
				bl.Recycle(full)
			}
		}
	}
}
