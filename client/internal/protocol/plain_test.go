// Tests of CheckPlainLine and ValidPlainLine, the fast paths of the bet line rules: on every
// line with no '"' and no '\n' CheckPlainLine must say what AppendBetLine says for the line's
// values split on ',' (the slow path, itself checked against the wire rules and the shared
// vectors), ValidPlainLine whether that is "valid", and for a valid bet the canonical line
// must be the line itself. ValidPlainLine refuses every line with a '"'.

package protocol

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// plainAgrees fails t unless CheckPlainLine and AppendBetLine agree on line (no '"', no '\n').
func plainAgrees(t *testing.T, line []byte) {
	t.Helper()
	want, wantReason := AppendBetLine(nil, bytes.Split(line, []byte(",")))
	got := CheckPlainLine(line)
	if got != wantReason {
		t.Fatalf("%q: CheckPlainLine says %q, AppendBetLine %q", line, got, wantReason)
	}
	if valid := ValidPlainLine(line); valid != (got == "") {
		t.Fatalf("%q: ValidPlainLine says %v, CheckPlainLine %q", line, valid, got)
	}
	if got == "" && string(want) != string(line)+"\n" {
		t.Fatalf("%q: valid, but its canonical line is %q", line, want)
	}
}

func TestCheckPlainLine(t *testing.T) {
	tests := []struct {
		line   string
		reason string
	}{
		{"Santiago Lionel,Lorca,30904465,1999-03-17,7574", ""},
		{"Zoë Ñandú,Müller,12,1990-01-01,1", ""},
		{"Ana\u00a0,Lopez,1,1990-01-01,1", ""},
		{"Ana,Lopez,1,2000-02-29,1", ""},
		{strings.Repeat("é", 50) + ",B,1,1990-01-01,1", ""},
		{strings.Repeat("a", 100) + "," + strings.Repeat("b", 100) + ",1234567890,9999-12-31,1234567890", ""},
		{"", ReasonFields},
		{"Ana,Lopez,1,1990-01-01", ReasonFields},
		{"Ana,Lopez,1,1990-01-01,1,", ReasonFields},
		{"Ana\xff,Lopez,1,1990-01-01", ReasonUTF8}, // UTF-8 is checked before the count
		{"Ana,Lopez,1,1990-01-01,1\xc2", ReasonUTF8},
		{",Lopez,1,1990-01-01,1", ReasonFirstName},
		{strings.Repeat("a", 101) + ",B,1,1990-01-01,1", ReasonFirstName},
		{"Ana\x7f,Lopez,1,1990-01-01,1", ReasonFirstName},
		{"Ana\u0085,Lopez,1,1990-01-01,1", ReasonFirstName},
		{"Ana\t,Lopez,1,1990-01-01,1", ReasonFirstName},
		{"Ana,Lo\rpez,1,1990-01-01,1", ReasonLastName},
		{"Ana,,1,1990-01-01,1", ReasonLastName},
		{"Ana,Lopez,,1990-01-01,1", ReasonDocument},
		{"Ana,Lopez,12345678901,1990-01-01,1", ReasonDocument},
		{"Ana,Lopez,1a,1990-01-01,1", ReasonDocument},
		{"Ana,Lopez,1,2100-02-29,1", ReasonBirthdate},
		{"Ana,Lopez,1,0000-01-01,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-01 ,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-01,1\r", ReasonNumber},
		{"Ana,Lopez,1,1990-01-01,", ReasonNumber},
		{"Ana,Lopez,1,1990-01-01,-1", ReasonNumber},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			if got := CheckPlainLine([]byte(tt.line)); got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
			plainAgrees(t, []byte(tt.line))
		})
	}
}

// TestCheckPlainLineVectors runs the fast path on every unquoted line of the shared vectors.
func TestCheckPlainLineVectors(t *testing.T) {
	for _, bl := range loadVectors(t).BetLines {
		if !strings.ContainsAny(bl.Line, "\"\n") {
			plainAgrees(t, []byte(bl.Line))
		}
	}
}

// TestValidPlainLineEveryPlace: ValidPlainLine reads eight bytes at a time, the last eight
// again, and hands lines past 64 bytes to CheckPlainLine; so on valid lines of every length
// from 17 to 80 bytes, each byte that matters to a rule is put at every place in turn (and a
// two-byte letter, a C1 control and a broken sequence astride every place), and the paths
// must agree on each line.
func TestValidPlainLineEveryPlace(t *testing.T) {
	specials := []string{",", "\"", "\x00", "\x1f", " ", "\x7f", "\x80", "\xc2", "\xff", "é", "\u0085", "\u009f", "\u00a0",
		"\xe2\x82", "€", "\U0001F600", "-", "0", "9", "a", "ß", "\u07ff", "\xc3", "\xa9", "\xc3\xc3", "\xc0\x80", "\xc1\xbf"}
	checked := 0
	for length := 17; length <= 80; length++ {
		// "a...,b,1,1990-01-01,1" with the first name long enough for the length
		base := strings.Repeat("a", length-17) + ",b,1,1990-01-01,1"
		if length == 17 {
			base = "a,b,1,990-01-01,1" // too short a date: refused, 17 bytes
		}
		if len(base) != length {
			t.Fatalf("base %q is %d bytes, want %d", base, len(base), length)
		}
		plainAgrees(t, []byte(base))
		for place := range length {
			for _, special := range specials {
				line := base[:place] + special + base[min(place+len(special), length):]
				if strings.Contains(line, "\"") {
					if ValidPlainLine([]byte(line)) {
						t.Fatalf("%q: ValidPlainLine takes a line with a quote", line)
					}
					continue
				}
				plainAgrees(t, []byte(line))
				checked++
			}
		}
	}
	if checked < 40_000 {
		t.Fatalf("only %d lines checked", checked)
	}
}

// TestPlainDateIsValidDate: the word-at-a-time date check says what validDate says, on every
// day of years at the calendar's edges (0000 to 0004, the centuries and their leap years,
// 9996 to 9999), every month 00 to 13, every day 00 to 32, and with each byte of a date
// replaced by each byte that could fool a digit or a dash check.
func TestPlainDateIsValidDate(t *testing.T) {
	years := []int{0, 1, 2, 3, 4, 99, 100, 399, 400, 1896, 1899, 1900, 1904, 1999, 2000, 2024, 2100, 2400, 9996, 9999}
	checked := 0
	for _, y := range years {
		for m := 0; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				date := []byte(fmt.Sprintf("%04d-%02d-%02d", y, m, d))
				if plainDate(date) != validDate(date) {
					t.Fatalf("%s: plainDate %v, validDate %v", date, plainDate(date), validDate(date))
				}
				checked++
			}
		}
	}
	fooling := []byte{'/', ':', '-', '0', '9', ' ', 0x00, 0x2F, 0x3A, 0x6D, 0xB0, 0xB9, 0xFF}
	for _, base := range []string{"2000-02-29", "1999-12-31", "2023-04-30"} {
		for place := range len(base) {
			for _, c := range fooling {
				date := []byte(base)
				date[place] = c
				if plainDate(date) != validDate(date) {
					t.Fatalf("%q: plainDate %v, validDate %v", date, plainDate(date), validDate(date))
				}
				checked++
			}
		}
	}
	for _, date := range []string{"", "2000-01-0", "2000-01-011", "20000-01-01"} {
		if plainDate([]byte(date)) || validDate([]byte(date)) {
			t.Fatalf("%q: taken", date)
		}
	}
	if checked < 9000 {
		t.Fatalf("only %d dates checked", checked)
	}
}

// TestCheckPlainLineRandom compares the two paths on random lines built from pieces near
// every rule's edges, on every run (FuzzCheckPlainLine explores further when fuzzing).
func TestCheckPlainLineRandom(t *testing.T) {
	pieces := []string{"", "a", "Ñ", ",", ",,", ";", "'", " ", "\t", "\r", "\x00", "\x7f", "\u0085", "\u00a0",
		"\xc2", "\xff", "\xe2\x80", "\U0001F600", "\uFFFD", "é", "ß", "\u07ff", "\xc3", "\xa9", "\xc0\x80", "0", "9", "-", "1990-01-01", "2001-02-29", "2000-02-29", "12345678901", strings.Repeat("b", 99)}
	rng := rand.New(rand.NewPCG(7574, 2))
	for range 200_000 {
		var b strings.Builder
		for k := rng.IntN(12); k >= 0; k-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		plainAgrees(t, []byte(b.String()))
	}
}

// TestTwoByteUTF8 holds the word-at-a-time UTF-8 check to the rules it stands for: when it
// settles a line, every byte past ASCII in line[:n] has a lead 0xC3..0xDF, and valid says
// whether line[:n] is valid UTF-8; when it does not, some lead is another. Regions of 1 to 40
// bytes (so that sequences fall astride every word boundary), followed by eight digits: ASCII
// and whole letters up to U+07FF, and one piece in twelve a lone byte past ASCII near an edge
// (a continuation, or a lead of each kind).
func TestTwoByteUTF8(t *testing.T) {
	whole := []string{"a", "Z", ",", "0", " ", "\x7f", "é", "Ñ", "ß", "\u00c0", "\u00ff", "\u0100", "\u07ff"}
	edges := []byte{0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xDF, 0xE0, 0xE2, 0xEF, 0xF0, 0xF4, 0xFF}
	rng := rand.New(rand.NewPCG(7574, 8))
	settledValid, settledInvalid := 0, 0
	for range 300_000 {
		var region []byte
		for size := 1 + rng.IntN(40); len(region) < size; {
			if rng.IntN(12) == 0 {
				region = append(region, edges[rng.IntN(len(edges))]) // a lone byte past ASCII
			} else {
				region = append(region, whole[rng.IntN(len(whole))]...)
			}
		}
		line := append(append([]byte{}, region...), "12345678"...)
		valid, settled := twoByteUTF8(line, len(region))
		otherLead := false
		for _, c := range region {
			otherLead = otherLead || c >= 0xC0 && (c < 0xC3 || c > 0xDF)
		}
		if settled == otherLead {
			t.Fatalf("%q: settled %v, but a lead other than 0xC3..0xDF: %v", region, settled, otherLead)
		}
		if settled && valid != utf8.Valid(region) {
			t.Fatalf("%q: valid %v, utf8.Valid %v", region, valid, utf8.Valid(region))
		}
		if settled && valid {
			settledValid++
		} else if settled {
			settledInvalid++
		}
	}
	if settledValid < 10_000 || settledInvalid < 10_000 {
		t.Fatalf("settled %d valid and %d invalid regions: too few to tell", settledValid, settledInvalid)
	}
}

// FuzzCheckPlainLine: the fast paths and the slow path agree on every line with no '"' and no
// '\n' (the only lines the reader hands CheckPlainLine); ValidPlainLine refuses the others.
func FuzzCheckPlainLine(f *testing.F) {
	f.Add([]byte("Santiago Lionel,Lorca,30904465,1999-03-17,7574"))
	f.Add([]byte("Zoë,Ñandú\u0085,1,2000-02-29,1"))
	f.Add([]byte("a,b,1,1990-01-01,1,"))
	f.Add([]byte("a\xff,b,1,1990-01-01,1"))
	f.Add([]byte("\"a\",b,1,1990-01-01,1"))
	f.Fuzz(func(t *testing.T, line []byte) {
		switch {
		case bytes.IndexByte(line, '\n') >= 0:
			t.Skip("not a line")
		case bytes.IndexByte(line, '"') >= 0:
			if ValidPlainLine(line) {
				t.Fatalf("%q: ValidPlainLine takes a line with a quote", line)
			}
		default:
			plainAgrees(t, line)
		}
	})
}

var benchLine = []byte("Santiago Lionel,Lorca,30904465,1999-03-17,7574")

func BenchmarkCheckPlainLine(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchLine) + 1))
	for b.Loop() {
		if CheckPlainLine(benchLine) != "" {
			b.Fatal("invalid")
		}
	}
}

// BenchmarkAppendBetLineBytes is the reader's former fast path on the same line: split on ','
// into byte slices, then AppendBetLine.
func BenchmarkAppendBetLineBytes(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchLine) + 1))
	fields := make([][]byte, 0, fieldCount)
	buf := make([]byte, 0, MaxBetLineSize+1)
	for b.Loop() {
		fields = fields[:0]
		line := benchLine
		for {
			i := bytes.IndexByte(line, ',')
			if i < 0 {
				break
			}
			fields = append(fields, line[:i])
			line = line[i+1:]
		}
		fields = append(fields, line)
		if _, reason := AppendBetLine(buf[:0], fields); reason != "" {
			b.Fatal("invalid")
		}
	}
}

// TestValidPlainLineRefusesQuotes: a line with a '"' is never taken as plain, wherever the
// quote is.
func TestValidPlainLineRefusesQuotes(t *testing.T) {
	line := []byte("Ana,Lopez,12,1990-01-01,1")
	if !ValidPlainLine(line) {
		t.Fatalf("%q: refused", line)
	}
	for i := range len(line) + 1 {
		quoted := append(append(append([]byte{}, line[:i]...), '"'), line[i:]...)
		if ValidPlainLine(quoted) {
			t.Fatalf("%q: taken as plain", quoted)
		}
	}
}

// benchAccented is a line like those of the benchmark's data set: accented names.
var benchAccented = []byte("Andrés,Báez,11816490,1989-11-08,8418")

// BenchmarkValidPlainLineMixed is ValidPlainLine on 8,192 lines like the data set's, in a
// random order: names drawn from lists (most with an accented letter), documents, dates and
// numbers drawn too. A line repeated (BenchmarkValidPlainLine) lets the CPU learn its
// branches; these do not, as in a real run.
func BenchmarkValidPlainLineMixed(b *testing.B) {
	firsts := []string{"José", "María", "Juan", "Martín", "Lucía", "Santiago", "Agustín", "Camila", "Iñigo", "Ana",
		"Ramón", "Álvaro", "Milagros Guadalupe", "Sofía", "Valentina", "Mateo", "Benjamín", "Joaquín", "Tomás", "Emma"}
	lasts := []string{"Núñez", "Peña", "González", "Sosa", "Álvarez", "Flores", "Muñoz", "Núñez del Prado", "Báez",
		"Torres", "Molina", "Ledesma", "Rodríguez", "Pérez", "Gómez", "Díaz", "Romero", "Ruiz"}
	rng := rand.New(rand.NewPCG(1, 2))
	lines := make([][]byte, 8192)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, "%s,%s,%d,%d-%02d-%02d,%d", firsts[rng.IntN(len(firsts))], lasts[rng.IntN(len(lasts))],
			11_000_000+rng.IntN(30_000_000), 1940+rng.IntN(66), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(10_000))
	}
	i := 0
	for b.Loop() {
		if !ValidPlainLine(lines[i%len(lines)]) {
			b.Fatal("invalid")
		}
		i++
	}
}

func BenchmarkValidPlainLine(b *testing.B) {
	for _, line := range [][]byte{benchLine, benchAccented} {
		b.Run(string(line[:3]), func(b *testing.B) {
			b.SetBytes(int64(len(line) + 1))
			for b.Loop() {
				if !ValidPlainLine(line) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
