// Benchmarks of the agency's hot path over its bets file, per 100,000 rows: the reader alone,
// the builder (the framer: lines into BET frames, positions, chain) alone, and both together
// as the agency runs them. Each reports its allocations: the rows allocate nothing, a batch one
// Batch (its frame is recycled).

package bets

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// benchFile is 100,000 valid unquoted rows, as the agencies' generated files mostly are.
func benchFile() []byte {
	var buf bytes.Buffer
	for i := 0; i < 100_000; i++ {
		fmt.Fprintf(&buf, "Nombre%d,Apellido,%d,1990-01-01,%d\n", i, 10000000+i, i%10000)
	}
	return buf.Bytes()
}

// BenchmarkReadAndBuild measures the reader and the builder together over 100,000 rows.
func BenchmarkReadAndBuild(b *testing.B) { benchReadAndBuild(b, benchFile()) }

// BenchmarkReadAndBuildAccented is BenchmarkReadAndBuild on rows like tools/gen_data.py's:
// names, most with an accented letter, and birthdates that vary. A name with a letter past
// ASCII takes the UTF-8 check off its ASCII fast path, so these rows cost more than
// benchFile's.
func BenchmarkReadAndBuildAccented(b *testing.B) { benchReadAndBuild(b, accentedFile()) }

func accentedFile() []byte {
	firsts := []string{"José", "María", "Juan", "Martín", "Lucía", "Santiago", "Agustín", "Camila", "Iñigo", "Ana"}
	lasts := []string{"Núñez", "Peña", "González", "Sosa", "Álvarez", "Flores", "Muñoz", "Núñez del Prado", "Báez"}
	var buf bytes.Buffer
	for i := 0; i < 100_000; i++ {
		fmt.Fprintf(&buf, "%s,%s,%d,%d-%02d-%02d,%d\n", firsts[i%len(firsts)], lasts[i%len(lasts)], 11000000+i*7,
			1940+i%66, 1+i%12, 1+i%28, i*13%10000)
	}
	return buf.Bytes()
}

// BenchmarkReadAndBuildQuoted is BenchmarkReadAndBuild on millionRows' mix: one row in ten
// with a quoted name, which takes encoding/csv's path.
func BenchmarkReadAndBuildQuoted(b *testing.B) { benchReadAndBuild(b, millionRows(100_000)) }

// benchReadAndBuild reads `file` and frames its rows as the agency does, every frame recycled
// as an ACK would.
func benchReadAndBuild(b *testing.B, file []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(file))
		bl := NewBuilder(1, 100, 0, 0)
		for {
			line, err := r.Next()
			if err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			if full, _ := bl.Add(line); full != nil {
				bl.Recycle(full)
			}
		}
	}
}

// BenchmarkReader measures the reader alone: reading, checking and handing out each row.
func BenchmarkReader(b *testing.B) {
	file := benchFile()
	b.ReportAllocs()
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(file))
		for {
			if _, err := r.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkBuilder measures the framer alone: 100,000 canonical lines into BET frames of 100
// bets, with their positions and chain, every frame recycled as an ACK would.
func BenchmarkBuilder(b *testing.B) {
	file := benchFile()
	lines := bytes.SplitAfter(file, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty piece after the last '\n'
	b.ReportAllocs()
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		bl := NewBuilder(1, 100, 0, 0)
		for _, line := range lines {
			if full, _ := bl.Add(line); full != nil {
				bl.Recycle(full)
			}
		}
	}
}
