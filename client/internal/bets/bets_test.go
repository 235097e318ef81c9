// Tests of the CSV reader (line ends, accents, BOM, invalid rows and their line numbers, empty
// input, a million rows) and of the batch builder (frame size limit, maxAmount, sequence
// numbers, frame reuse).

package bets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"lottery/client/internal/protocol"
)

const bom = "\xEF\xBB\xBF"

// readAll reads input to the end and returns, in order, each valid bet line and each invalid
// row as "line N: reason".
func readAll(t *testing.T, input string) []string {
	t.Helper()
	var got []string
	r := NewReader(strings.NewReader(input))
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("reader does not terminate")
		}
		line, err := r.Next()
		var re *RowError
		switch {
		case err == nil:
			got = append(got, string(line))
		case errors.As(err, &re):
			got = append(got, re.Error())
		case errors.Is(err, io.EOF):
			return got
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
		want  []string
	}{
		{"empty file", "", nil},
		{"only a newline", "\n", nil},
		{"LF", a + "\n" + b + "\n", []string{a, b}},
		{"CRLF", a + "\r\n" + b + "\r\n", []string{a, b}},
		{"no final newline", a + "\n" + b, []string{a, b}},
		{"blank last lines", a + "\n\n\r\n", []string{a}},
		{"blank line in the middle", a + "\n\n\r\n" + b + "\n", []string{
			a, "line 2: empty line", "line 3: empty line", b,
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
		}, "\r\n"), []string{
			a,
			"line 2: last_name", "line 3: birthdate", "line 4: document", "line 5: fields",
			"line 6: fields", "line 7: first_name", "line 8: number", "line 9: not UTF-8",
			b,
		}},
		{"line too long", a + "\n" + strings.Repeat("x", readerBufferSize*2+5) + "\n" + b + "\n", []string{
			a, "line 2: line too long", b,
		}},
		{"line too long at the end", a + "\n" + strings.Repeat("x", readerBufferSize+1), []string{
			a, "line 2: line too long",
		}},
		{"long but buffered line", strings.Repeat("x", 300) + ",B,1,1990-01-01,1\n", []string{
			"line 1: first_name",
		}},

		// A UTF-8 BOM is skipped at the start of the file only, and does not count as a line.
		{"BOM", bom + a + "\r\n" + b + "\r\n", []string{a, b}},
		{"BOM only", bom, nil},
		{"BOM and a newline", bom + "\n", nil},
		{"BOM before a blank line", bom + "\n" + a + "\n", []string{"line 1: empty line", a}},
		{"BOM before an invalid row", bom + "Ana,Lopez,x,1990-01-01,1\n" + a, []string{"line 1: document", a}},
		{"two BOMs: the second is data", bom + bom + a, []string{bom + a}},
		{"cut BOM is data", "\xEF\xBB" + a, []string{"line 1: not UTF-8"}},
		{"BOM in the middle is data", a + "\n" + bom + b + "\n", []string{a, bom + b}},
		{"BOM alone on line 2 is a row", a + "\n" + bom + "\n" + b, []string{a, "line 2: fields", b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.input)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestReaderBOMFirstName checks the first name of each row byte for byte: a leading BOM is not
// part of it, a BOM anywhere else is (U+FEFF is not a control character, so the name is valid).
func TestReaderBOMFirstName(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // first names of the valid rows
	}{
		{"no BOM", "Ana,Lopez,1,1990-01-01,1\n", []string{"Ana"}},
		{"BOM at the start", bom + "Ana,Lopez,1,1990-01-01,1\nBea,Paz,2,1990-01-01,2\n", []string{"Ana", "Bea"}},
		{"BOM at the start of line 2", "Ana,Lopez,1,1990-01-01,1\n" + bom + "Bea,Paz,2,1990-01-01,2\n", []string{"Ana", bom + "Bea"}},
		{"BOM inside a name", "An" + bom + "a,Lopez,1,1990-01-01,1\n", []string{"An" + bom + "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, line := range readAll(t, tt.input) {
				f, reason := protocol.ParseBetLine([]byte(line))
				if reason != "" {
					t.Fatalf("row %q: %s", line, reason)
				}
				got = append(got, string(f.FirstName))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("first names %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReaderKeepsAccents(t *testing.T) {
	r := NewReader(strings.NewReader("María José,Núñez Peña,123,1980-12-31,7574\r\n"))
	line, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := protocol.ParseBetLine(line)
	if string(f.FirstName) != "María José" || string(f.LastName) != "Núñez Peña" ||
		string(line) != "María José,Núñez Peña,123,1980-12-31,7574" {
		t.Fatalf("got %q", line)
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

// decodeBet reads frame as one BET message: it must be exactly one valid frame.
func decodeBet(t *testing.T, frame []byte) protocol.Bet {
	t.Helper()
	r := bytes.NewReader(frame)
	m, err := protocol.ReadFrame(r)
	if err != nil {
		t.Fatalf("frame does not decode: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes after the frame", r.Len())
	}
	bet, ok := m.(protocol.Bet)
	if !ok {
		t.Fatalf("frame is a %s, want BET", m.Type())
	}
	return bet
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
				bet := decodeBet(t, bt.Frame)
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

// frameArray identifies the backing array of a batch's frame.
func frameArray(bt *Batch) *byte { return &bt.Frame[:1][0] }

// TestBuilderRecycle checks that recycled frames back the next batches instead of new 8 kB
// arrays, that a reused frame holds only its new batch, that two live batches never share an
// array, and that Recycle takes the frame away from the acknowledged batch.
func TestBuilderRecycle(t *testing.T) {
	b := NewBuilder(1, 2)
	long, short := lines(4, true), lines(6, false)
	b.Add(long[0])
	first := b.Add(long[1])
	b.Add(long[2])
	second := b.Add(long[3])
	a1, a2 := frameArray(first), frameArray(second)
	if a1 == a2 {
		t.Fatal("two live batches share a frame")
	}

	b.Recycle(first)
	b.Recycle(second)
	b.Recycle(nil)                                // ignored
	b.Recycle(&Batch{Frame: make([]byte, 0, 16)}) // too small to hold a batch: ignored
	if first.Frame != nil || second.Frame != nil {
		t.Fatal("Recycle left the frame on the acknowledged batch")
	}

	var next []*Batch
	for _, l := range short {
		if bt := b.Add(l); bt != nil {
			next = append(next, bt)
		}
	}
	if len(next) != 3 {
		t.Fatalf("%d batches, want 3", len(next))
	}
	reused := map[*byte]bool{frameArray(next[0]): true, frameArray(next[1]): true}
	if !reused[a1] || !reused[a2] {
		t.Fatal("batches 3 and 4 do not reuse the recycled frames")
	}
	if p := frameArray(next[2]); p == a1 || p == a2 {
		t.Fatal("batch 5 shares a frame with a live batch")
	}
	if cap(next[2].Frame) < protocol.MaxFrame {
		t.Fatalf("batch 5 frame capacity %d: the small recycled slice was used", cap(next[2].Frame))
	}
	for i, bt := range next {
		bet := decodeBet(t, bt.Frame)
		want := append(bytes.Join(short[2*i:2*i+2], []byte("\n")), '\n')
		if bet.Seq != uint32(3+i) || bet.Count != 2 || !bytes.Equal(bet.Bets, want) {
			t.Fatalf("batch %d: seq %d count %d bets %q", 3+i, bet.Seq, bet.Count, bet.Bets)
		}
	}
}

// TestMillionRows streams a million rows through the reader and the builder, recycling every
// batch, and checks nothing is lost. How fast it goes is BenchmarkReadAndBuild's business.
func TestMillionRows(t *testing.T) {
	const n = 1_000_000
	var buf []byte
	for i := 0; i < n; i++ {
		buf = append(buf, "Nombre"...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, ",Apellido Ñandú,"...)
		buf = strconv.AppendInt(buf, int64(10000000+i), 10)
		buf = append(buf, ",1990-01-01,"...)
		buf = strconv.AppendInt(buf, int64(i%10000), 10)
		buf = append(buf, '\n')
	}
	r := NewReader(bytes.NewReader(buf))
	b := NewBuilder(1, 100)
	rows, batches := 0, 0
	var lastSeq uint32
	for {
		line, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows++
		if full := b.Add(line); full != nil {
			batches++
			if full.Count != 100 || full.Seq != lastSeq+1 {
				t.Fatalf("batch %d: seq %d count %d", batches, full.Seq, full.Count)
			}
			lastSeq = full.Seq
			b.Recycle(full)
		}
	}
	if b.Flush() != nil {
		t.Fatal("a partial batch is pending after a multiple of maxAmount rows")
	}
	if rows != n || batches != n/100 {
		t.Fatalf("rows %d batches %d, want %d %d", rows, batches, n, n/100)
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
			line, err := r.Next()
			if err != nil {
				break
			}
			if full := bl.Add(line); full != nil {
				bl.Recycle(full)
			}
		}
	}
}
