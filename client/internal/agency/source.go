// This file owns the agency's bets file as the session reads it: its valid bets in order, each
// invalid row logged (once, however often the file is read again) and counted, the batches
// cut from them, the end of the file, reading it again from the start, and the progress
// through it (action: progreso, at each tenth of its bytes).

package agency

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"lottery/client/internal/bets"
	"lottery/client/internal/logs"
)

// source reads the bets file row by row.
type source struct {
	path   string
	file   *os.File
	reader *bets.Reader
	log    *slog.Logger
	eof    bool // every bet of the file has been read (into batches, or skipped as stored)

	invalidRows int // invalid rows of the file, each counted once
	lastInvalid int // the line of the last invalid row logged: a rewind logs none twice

	size     int64 // of the file, in bytes
	bets     int   // valid bets read since the start of the file
	reported int   // the last percentage logged (progreso): a rewind logs none twice
}

// openSource opens path; nothing is read before the first bet is asked for.
func openSource(path string, log *slog.Logger) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data.path: %w", err)
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	return &source{path: path, file: f, reader: bets.NewReader(f), log: log, size: size}, nil
}

// close closes the file, logging one line.
func (s *source) close() {
	if s.file == nil {
		return
	}
	if err := s.file.Close(); err != nil {
		s.log.Warn("close_file", logs.Fail, "path", s.path, "error", err)
	} else {
		s.log.Info("close_file", logs.Success, "path", s.path)
	}
	s.file = nil
}

// rewind starts reading the file again from its first row.
func (s *source) rewind() error {
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	s.reader, s.eof, s.bets = bets.NewReader(s.file), false, 0
	return nil
}

// next returns the canonical line of the file's next valid bet, io.EOF at its end (and eof
// set), or a fatal read error naming the file.
func (s *source) next() ([]byte, error) {
	line, err := nextBet(s.reader, s.invalidRow)
	if err != nil {
		if errors.Is(err, io.EOF) {
			s.eof = true
			s.progress(100)
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	s.bets++
	// The next tenth is reached when offset*10/size*10 > reported, that is when offset*10
	// reaches (reported/10+1)*size: a product per row instead of two divisions.
	if offset := s.reader.Offset(); s.size > 0 && offset*10 >= int64(s.reported/10+1)*s.size {
		s.progress(int(offset * 10 / s.size * 10))
	}
	return line, nil
}

// progress logs, at INFO, how far into the file the reader is when it reaches the next tenth
// of its bytes: percent (a multiple of 10) and the valid bets read so far. At most 11 lines
// (0 to 100) whatever the size of the file; a tenth reached again after a rewind is not
// logged again.
func (s *source) progress(percent int) {
	if percent <= s.reported {
		return
	}
	s.reported = percent
	s.log.Info("progreso", logs.InProgress, "apuestas", s.bets, "porcentaje", percent)
}

// nextBatch reads bets into b until a batch is complete; it returns nil at the end of the file
// when no bet is pending.
func (s *source) nextBatch(b *bets.Builder) (*bets.Batch, error) {
	for {
		line, err := s.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return b.Flush(), nil
			}
			return nil, err
		}
		full, err := b.Add(line)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.path, err)
		}
		if full != nil {
			return full, nil
		}
	}
}

// invalidRow logs and counts an invalid row of the file, unless an earlier reading did.
func (s *source) invalidRow(e *bets.RowError) {
	if e.Line <= s.lastInvalid {
		return
	}
	s.lastInvalid = e.Line
	s.invalidRows++
	s.log.Warn("leer_apuesta", logs.Fail, "line", e.Line, "reason", e.Reason)
}

// nextBet returns r's next valid bet line, passing each invalid row on the way to invalid;
// io.EOF at the end of the file.
func nextBet(r *bets.Reader, invalid func(*bets.RowError)) ([]byte, error) {
	for {
		line, err := r.Next()
		if err == nil {
			return line, nil
		}
		// Declared here, on the error path only: errors.As makes it escape to the heap.
		var rowErr *bets.RowError
		switch {
		case errors.As(err, &rowErr):
			invalid(rowErr)
		case errors.Is(err, io.EOF):
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}
