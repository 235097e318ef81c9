// This file owns the check of the bets file against what the central stores for the agency:
// at the first RESUME of a run, and again whenever the stored bets moved under a connection,
// the file's first bets must be the stored ones (their number and checksum chain) and, with
// the FIN recorded, the file must hold no bet after them. A file that disagrees is logged
// (action: verificar_apuestas | result: fail) and ends the run with ErrBetsMismatch.

package agency

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"

	"lottery/client/internal/bets"
	"lottery/client/internal/logs"
	"lottery/client/internal/protocol"
)

// checker checks agency id's bets file (path) against the RESUME answers of the central.
type checker struct {
	id   uint32
	path string
	log  *slog.Logger
}

// verify reads src from its start past the r.Stored bets the central stores: they must be the
// file's first ones (same number, same chain). With the FIN recorded it reads on to the end,
// which must hold no other bet. src is then positioned at bet r.Stored+1.
func (c checker) verify(src *source, r protocol.Resume) error {
	if err := src.rewind(); err != nil {
		return err
	}
	n, chain, err := skipBets(src.next, r.Stored, 0)
	if err != nil {
		return err
	}
	if n < r.Stored || chain != r.Chain {
		return c.mismatch(r, chain, c.reasonDiffers())
	}
	if r.Finished {
		more, all, err := skipBets(src.next, math.MaxUint32, chain)
		if err != nil {
			return err
		}
		if more > 0 {
			return c.mismatch(r, all, c.reasonAfterFin())
		}
	}
	if r.Stored > 0 {
		c.log.Info("verificar_apuestas", logs.Success, "stored", r.Stored)
	}
	return nil
}

func (c checker) reasonDiffers() string {
	return fmt.Sprintf("the bets file differs from the bets stored for this agency (changed, or another program claims agency %d)", c.id)
}

func (c checker) reasonAfterFin() string {
	return fmt.Sprintf("the bets file holds bets after the ones stored with this agency's FIN, and bets after the recorded FIN cannot be stored (changed, or another program claims agency %d)", c.id)
}

// mismatch logs why the bets file does not match what the central stores and returns the
// error that ends the run. fileChain is the chain of the file's bets that should be the stored
// ones: its first r.Stored (all of them if it holds fewer), or all of them after a FIN.
func (c checker) mismatch(r protocol.Resume, fileChain uint32, reason string) error {
	c.log.Error("verificar_apuestas", logs.Fail, "stored", r.Stored, "chain", fmt.Sprintf("%08x", r.Chain),
		"file_chain", fmt.Sprintf("%08x", fileChain), "reason", reason)
	return fmt.Errorf("%w: stored %d bets with chain %08x, the file's chain is %08x", ErrBetsMismatch, r.Stored, r.Chain, fileChain)
}

// fileChain is the chain of the file's first n valid bets (of all of them if it holds fewer),
// read again from the start with a reader of its own: the session's reader is past them.
func (c checker) fileChain(n uint32) (uint32, error) {
	f, err := os.Open(c.path)
	if err != nil {
		return 0, fmt.Errorf("data.path: %w", err)
	}
	defer f.Close()
	r := bets.NewReader(f)
	next := func() ([]byte, error) { return nextBet(r, func(*bets.RowError) {}) }
	_, chain, err := skipBets(next, n, 0)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", c.path, err)
	}
	return chain, nil
}

// skipBets reads up to n valid bets with next and returns how many it read and their chain
// continued from chain.
func skipBets(next func() ([]byte, error), n, chain uint32) (uint32, uint32, error) {
	var read uint32
	for read < n {
		line, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return read, chain, err
		}
		read++
		chain = protocol.Chain(chain, line)
	}
	return read, chain, nil
}
