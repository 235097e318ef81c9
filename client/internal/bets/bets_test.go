// Tests of the CSV reader (line ends, quoting, accents, BOM, invalid rows and their line
// numbers, records too long to buffer, empty input, a million rows) and of the batch builder
// (frame size limit, maxAmount, positions and chain, a start after stored bets, frame reuse).

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
	"testing/iotest"

	"lottery/client/internal/protocol"
)

const bom = "\xEF\xBB\xBF"

// readAll reads input to the end and returns, in order, each valid bet line (without its
// '\n') and each invalid row as "line N: reason"; err is the fatal error that ended it, if any.
func readAll(t *testing.T, input io.Reader) (got []string, err error) {
	t.Helper()
	r := NewReader(input)
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("reader does not terminate")
		}
		line, err := r.Next()
		var re *RowError
		switch {
		case err == nil:
			if !bytes.HasSuffix(line, []byte("\n")) {
				t.Fatalf("line %q does not end with a newline", line)
			}
			got = append(got, string(line[:len(line)-1]))
		case errors.As(err, &re):
			got = append(got, re.Error())
		case errors.Is(err, io.EOF):
			return got, nil
		default:
			return got, err
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
		{"blank lines in the middle", a + "\n\n\r\n" + b + "\n", []string{a, b}},
		{"invalid rows", strings.Join([]string{
			a,
			"Ana,Lopez,1,2001-02-29,1",
			"Ana,Lopez,x,1990-01-01,1",
			"Ana,Lopez,1,1990-01-01",
			"Ana,Lopez,1,1990-01-01,1,2",
			",Lopez,1,1990-01-01,1",
			"Ana,Lopez,1,1990-01-01,",
			"Ana\xff,Lopez,1,1990-01-01,1",
			"Ana,Lo\"pez,1,1990-01-01,1",
			`"Ana" x,Lopez,1,1990-01-01,1`,
			"Ana\u0085,Lopez,1,1990-01-01,1",
			strings.Repeat("x", 300) + ",B,1,1990-01-01,1",
			b,
		}, "\r\n"), []string{
			a,
			"line 2: birthdate", "line 3: document", "line 4: fields", "line 5: fields",
			"line 6: first_name", "line 7: number", "line 8: not UTF-8", "line 9: quoting",
			"line 10: quoting", "line 11: first_name", "line 12: first_name",
			b,
		}},
		{"blank lines do not shift line numbers", "\n\r\n" + a + "\n\nAna,Lopez,x,1990-01-01,1\n", []string{
			a, "line 5: document",
		}},

		// RFC 4180 quoting: the reader yields each bet's canonical line.
		{"quoted names", `"Pérez, Juan",Gómez,1,1985-06-01,7` + "\n" + `"Ana ""la Tana""",O'Neill,2,1990-01-01,12` + "\n", []string{
			`"Pérez, Juan",Gómez,1,1985-06-01,7`, `"Ana ""la Tana""",O'Neill,2,1990-01-01,12`,
		}},
		{"needless quotes are dropped", `"Ana","Lopez","1","1990-01-01","10"` + "\r\n", []string{a}},
		{"a semicolon needs no quotes", `"José; María",Paz,1,1990-01-01,1` + "\n", []string{"José; María,Paz,1,1990-01-01,1"}},
		{"quoted comma in a document", `Ana,Lopez,"1,2",1990-01-01,1` + "\n" + a, []string{"line 1: document", a}},
		{"a record over two lines", a + "\n" + `"Ana` + "\r\n" + `María",Paz,1,1990-01-01,1` + "\n" + b + "\n", []string{
			a, "line 2: first_name", b,
		}},
		{"an unclosed quote runs to the end", a + "\n" + `"Ana,Paz,1,1990-01-01,1` + "\n" + b + "\n", []string{
			a, "line 2: quoting",
		}},
		{"a closing quote far away", a + "\n" + `"Ana,Paz` + "\n" + b + "\n" + `x",Paz,1,1990-01-01,1` + "\n" + a, []string{
			a, "line 2: first_name", a, // one record of lines 2 to 4, whose first name holds newlines
		}},

		// A UTF-8 BOM is skipped at the start of the file only, and does not count as a line.
		{"BOM", bom + a + "\r\n" + b + "\r\n", []string{a, b}},
		{"BOM only", bom, nil},
		{"BOM and a newline", bom + "\n", nil},
		{"BOM before a blank line", bom + "\n" + a + "\nAna,Lopez,x,1990-01-01,1\n", []string{a, "line 3: document"}},
		{"BOM before an invalid row", bom + "Ana,Lopez,x,1990-01-01,1\n" + a, []string{"line 1: document", a}},
		{"BOM before a quoted name", bom + `"Paz, Ana",Lopez,1,1990-01-01,10`, []string{`"Paz, Ana",Lopez,1,1990-01-01,10`}},
		{"two BOMs: the second is data", bom + bom + a, []string{bom + a}},
		{"cut BOM is data", "\xEF\xBB" + a, []string{"line 1: not UTF-8"}},
		{"short file", "\xEF", []string{"line 1: not UTF-8"}},
		{"BOM in the middle is data", a + "\n" + bom + b + "\n", []string{a, bom + b}},
		{"BOM alone on line 2 is a row", a + "\n" + bom + "\n" + b, []string{a, "line 2: fields", b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, strings.NewReader(tt.input))
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestReaderRecordTooLong checks that a record too long to buffer stops the reader with an
// error naming the line it starts on, after reading no more than the bound past it.
func TestReaderRecordTooLong(t *testing.T) {
	const a = "Ana,Lopez,1,1990-01-01,10\n"
	rest := strings.Repeat(a, 100_000) // 2.6 MB after the bad record
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"unclosed quote", a + a + `"Ana,Paz,1,1990-01-01,1` + "\n" + rest, "line 3: "},
		{"long line", a + strings.Repeat("x", 200_000) + "\n" + rest, "line 2: "},
		{"long quoted field", a + `Ana,"` + strings.Repeat("x", 200_000) + `",Paz,1,1990-01-01,1` + "\n" + rest, "line 2: "},
		{"after blank lines", a + "\n\n" + `"Ana,Paz` + "\n" + rest, "line 4: "},
		{"no final newline", a + strings.Repeat("x", 200_000), "line 2: "},
		{"blank lines only", a + strings.Repeat("\r\n", 100_000) + a, "blank lines up to byte "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &countingReader{r: strings.NewReader(tt.input)}
			r := NewReader(in)
			if _, err := r.Next(); err != nil {
				t.Fatalf("first row: %v", err)
			}
			var err error
			for err == nil {
				_, err = r.Next()
			}
			if !errors.Is(err, ErrRecordTooLong) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %v, want one starting %q wrapping ErrRecordTooLong", err, tt.want)
			}
			if _, again := r.Next(); again != err {
				t.Fatalf("Next after the fatal error: %v", again)
			}
			if limit := len(a) + 4 + maxRecordBytes + 2*readAhead; in.n > limit {
				t.Fatalf("read %d bytes of the input, want at most %d", in.n, limit)
			}
		})
	}
	// Just under the bound, a long record is an invalid row like any other.
	long := a + strings.Repeat("x", maxRecordBytes-100) + ",B,1,1990-01-01,1\n" + a
	got, err := readAll(t, strings.NewReader(long))
	if want := []string{a[:len(a)-1], "line 2: first_name", a[:len(a)-1]}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
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
			lines, err := readAll(t, strings.NewReader(tt.input))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range lines {
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
	if string(line) != "María José,Núñez Peña,123,1980-12-31,7574\n" {
		t.Fatalf("got %q", line)
	}
}

func TestReaderPropagatesReadErrors(t *testing.T) {
	for _, input := range []string{"", "Ana,Lopez,1,1990-01-01,1\nBea,"} {
		// input, then a read error for good.
		r := NewReader(io.MultiReader(strings.NewReader(input), iotest.ErrReader(errors.New("disk on fire"))))
		var err error
		for range 3 {
			if _, err = r.Next(); err == nil {
				continue
			}
			break
		}
		var re *RowError
		if err == nil || errors.Is(err, io.EOF) || errors.As(err, &re) || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("input %q: got %v, want the read error", input, err)
		}
	}
}

// lines returns n valid bet lines, '\n' included; long makes each first and last name 100
// bytes.
func lines(n int, long bool) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		first, last := fmt.Sprintf("Nombre%d", i), "Apellido"
		if long {
			first = strings.Repeat("é", 45) + fmt.Sprintf("%010d", i) // 100 bytes
			last = strings.Repeat("L", 100)
		}
		out[i] = []byte(fmt.Sprintf("%s,%s,%d,1990-01-01,%d\n", first, last, 1000000000+i, i))
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

// build runs lines through a builder that starts after stored bets of chain chain and returns
// every batch.
func build(t *testing.T, agency uint32, maxAmount int, stored, chain uint32, ls [][]byte) []*Batch {
	t.Helper()
	b := NewBuilder(agency, maxAmount, stored, chain)
	var out []*Batch
	for _, l := range ls {
		full, err := b.Add(l)
		if err != nil {
			t.Fatal(err)
		}
		if full != nil {
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
		stored    uint32
		chain     uint32
		lines     [][]byte
		counts    []int // expected count of each batch; nil to only check invariants
	}{
		{"no bets", 10, 0, 0, nil, []int{}},
		{"one bet", 10, 0, 0, lines(1, false), []int{1}},
		{"exact multiple", 5, 0, 0, lines(15, false), []int{5, 5, 5}},
		{"remainder", 4, 0, 0, lines(10, false), []int{4, 4, 2}},
		{"maxAmount 1", 1, 0, 0, lines(3, false), []int{1, 1, 1}},
		{"long names cut by size", 65535, 0, 0, lines(200, true), nil},
		{"long names small max", 20, 0, 0, lines(200, true), []int{20, 20, 20, 20, 20, 20, 20, 20, 20, 20}},
		{"short names cut by size", 65535, 0, 0, lines(1000, false), nil},
		{"after stored bets", 4, 1200, 0xaabbccdd, lines(10, false), []int{4, 4, 2}},
		{"up to the last position", 3, protocol.MaxPosition - 7, 1, lines(7, false), []int{3, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batches := build(t, 7, tt.maxAmount, tt.stored, tt.chain, tt.lines)
			var all []byte
			counts := []int{}
			next, chain := tt.stored+1, tt.chain
			for i, bt := range batches {
				counts = append(counts, bt.Count)
				if len(bt.Frame) > protocol.MaxFrame {
					t.Fatalf("batch %d is %d bytes > %d", i, len(bt.Frame), protocol.MaxFrame)
				}
				if bt.Count > tt.maxAmount {
					t.Fatalf("batch %d holds %d bets > %d", i, bt.Count, tt.maxAmount)
				}
				// Positions follow on, and each batch carries the chain of everything before it.
				if bt.First != next || bt.Chain != chain || bt.ChainAfter != protocol.Chain(chain, bt.Lines()) {
					t.Fatalf("batch %d: first %d chain %08x after %08x; want first %d chain %08x", i, bt.First, bt.Chain, bt.ChainAfter, next, chain)
				}
				if bt.Last() != bt.First+uint32(bt.Count)-1 {
					t.Fatalf("batch %d: last %d", i, bt.Last())
				}
				next, chain = bt.Last()+1, bt.ChainAfter
				// Every batch is a valid BET frame that decodes to itself.
				bet := decodeBet(t, bt.Frame)
				if bet.Agency != 7 || bet.First != bt.First || int(bet.Count) != bt.Count || bet.Chain != bt.Chain {
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
			if want := bytes.Join(tt.lines, nil); !bytes.Equal(all, want) {
				t.Fatal("the batches do not hold exactly the bets, in order")
			}
			if got := protocol.Chain(tt.chain, all); chain != got {
				t.Fatalf("chain after the last batch %08x, want %08x", chain, got)
			}
		})
	}
}

// TestBuilderBatchingDoesNotChangeTheChain checks that positions and chains depend on the bets
// only: two builders cutting the same bets differently agree at every common boundary.
func TestBuilderBatchingDoesNotChangeTheChain(t *testing.T) {
	ls := lines(120, false)
	chainAt := map[uint32]uint32{}
	for _, bt := range build(t, 1, 7, 0, 0, ls) {
		chainAt[bt.Last()] = bt.ChainAfter
	}
	common := 0
	for _, bt := range build(t, 1, 5, 0, 0, ls) {
		if c, ok := chainAt[bt.Last()]; ok {
			common++
			if c != bt.ChainAfter {
				t.Fatalf("chain at %d: %08x with batches of 7, %08x with batches of 5", bt.Last(), c, bt.ChainAfter)
			}
		}
	}
	if common < 3 {
		t.Fatalf("only %d common boundaries", common)
	}
}

func TestBuilderRunsOutOfPositions(t *testing.T) {
	b := NewBuilder(1, 10, protocol.MaxPosition-2, 0)
	l := lines(3, false)
	for i, want := range []error{nil, nil, ErrTooManyBets} {
		if _, err := b.Add(l[i]); !errors.Is(err, want) {
			t.Fatalf("bet %d: %v, want %v", i, err, want)
		}
	}
	if bt := b.Flush(); bt == nil || bt.First != protocol.MaxPosition-1 || bt.Last() != protocol.MaxPosition {
		t.Fatalf("last batch %+v", bt)
	}
}

// frameArray identifies the backing array of a batch's frame.
func frameArray(bt *Batch) *byte { return &bt.Frame[:1][0] }

// add adds l to b, failing the test on an error.
func add(t *testing.T, b *Builder, l []byte) *Batch {
	t.Helper()
	bt, err := b.Add(l)
	if err != nil {
		t.Fatal(err)
	}
	return bt
}

// TestBuilderRecycle checks that recycled frames back the next batches instead of new 8 kB
// arrays, that a reused frame holds only its new batch, that two live batches never share an
// array, and that Recycle takes the frame away from the acknowledged batch.
func TestBuilderRecycle(t *testing.T) {
	b := NewBuilder(1, 2, 0, 0)
	long, short := lines(4, true), lines(6, false)
	add(t, b, long[0])
	first := add(t, b, long[1])
	add(t, b, long[2])
	second := add(t, b, long[3])
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
		if bt := add(t, b, l); bt != nil {
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
		want := bytes.Join(short[2*i:2*i+2], nil)
		if bet.First != uint32(5+2*i) || bet.Count != 2 || !bytes.Equal(bet.Bets, want) {
			t.Fatalf("batch %d: first %d count %d bets %q", 3+i, bet.First, bet.Count, bet.Bets)
		}
	}
}

// millionRows is a bets file of n rows, one in ten with a quoted name.
func millionRows(n int) []byte {
	var buf []byte
	for i := 0; i < n; i++ {
		if i%10 == 0 {
			buf = append(buf, `"Paz, Nombre`...)
			buf = strconv.AppendInt(buf, int64(i), 10)
			buf = append(buf, '"')
		} else {
			buf = append(buf, "Nombre"...)
			buf = strconv.AppendInt(buf, int64(i), 10)
		}
		buf = append(buf, ",Apellido Ñandú,"...)
		buf = strconv.AppendInt(buf, int64(10000000+i), 10)
		buf = append(buf, ",1990-01-01,"...)
		buf = strconv.AppendInt(buf, int64(i%10000), 10)
		buf = append(buf, '\n')
	}
	return buf
}

// TestMillionRows streams a million rows through the reader and the builder, recycling every
// batch, and checks nothing is lost and the chain is the CRC-32 of the whole file (every row
// of which is canonical). How fast it goes is BenchmarkReadAndBuild's business.
func TestMillionRows(t *testing.T) {
	const n = 1_000_000
	file := millionRows(n)
	r := NewReader(bytes.NewReader(file))
	b := NewBuilder(1, 100, 0, 0)
	rows, batches := 0, 0
	var next, chain uint32 = 1, 0
	for {
		line, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows++
		if full := add(t, b, line); full != nil {
			batches++
			if full.Count != 100 || full.First != next || full.Chain != chain {
				t.Fatalf("batch %d: first %d count %d chain %08x", batches, full.First, full.Count, full.Chain)
			}
			next, chain = full.Last()+1, full.ChainAfter
			b.Recycle(full)
		}
	}
	if b.Flush() != nil {
		t.Fatal("a partial batch is pending after a multiple of maxAmount rows")
	}
	if rows != n || batches != n/100 {
		t.Fatalf("rows %d batches %d, want %d %d", rows, batches, n, n/100)
	}
	if want := protocol.Chain(0, file); chain != want {
		t.Fatalf("chain %08x, want %08x", chain, want)
	}
}
