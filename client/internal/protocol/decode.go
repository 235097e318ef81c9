// This file owns decoding: a payload of a given type into its message, every field checked
// (ErrMalformed, ErrInvalidBet, ErrUnknownType).

package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

func malformed(t Type, format string, args ...any) error {
	return fmt.Errorf("proto: decode %s: %s: %w", t, fmt.Sprintf(format, args...), ErrMalformed)
}

func fixed(t Type, p []byte, size int) error {
	if len(p) != size {
		return malformed(t, "payload is %d bytes, want %d", len(p), size)
	}
	return nil
}

func nonZero(t Type, name string, v uint32) error {
	if v == 0 {
		return malformed(t, "%s must not be 0", name)
	}
	return nil
}

// agencyOnly decodes a payload that is only a nonzero u32 agency (HELLO, FIN_ACK, WINNERS_QUERY).
func agencyOnly(t Type, p []byte) (uint32, error) {
	if err := fixed(t, p, 4); err != nil {
		return 0, err
	}
	agency := binary.BigEndian.Uint32(p)
	return agency, nonZero(t, "agency", agency)
}

// flag decodes a u8 that must be 0 or 1.
func flag(t Type, name string, b byte) (bool, error) {
	if b > 1 {
		return false, malformed(t, "%s is %d, want 0 or 1", name, b)
	}
	return b == 1, nil
}

// DecodePayload decodes the payload of a message of type t. The returned message may alias p.
// BET batches are validated bet by bet (ErrInvalidBet names the first bad bet).
func DecodePayload(t Type, p []byte) (Message, error) {
	be := binary.BigEndian
	switch t {
	case TypeEcho:
		return Echo{Payload: p}, nil
	case TypeBet:
		if len(p) < BetHeaderSize {
			return nil, malformed(t, "payload is %d bytes, want at least %d", len(p), BetHeaderSize)
		}
		m := Bet{Agency: be.Uint32(p), First: be.Uint32(p[4:]), Count: be.Uint16(p[8:]), Chain: be.Uint32(p[10:]), Bets: p[BetHeaderSize:]}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		if err := nonZero(t, "first", m.First); err != nil {
			return nil, err
		}
		if m.Count == 0 {
			return nil, malformed(t, "count must not be 0")
		}
		if uint64(m.First)+uint64(m.Count)-1 > MaxPosition {
			return nil, malformed(t, "bets %d.. (%d) pass position %d", m.First, m.Count, uint64(MaxPosition))
		}
		if err := ValidateBets(m.Bets, int(m.Count)); err != nil {
			return nil, fmt.Errorf("proto: decode BET first %d: %w", m.First, err)
		}
		return m, nil
	case TypeAck:
		if err := fixed(t, p, 8); err != nil {
			return nil, err
		}
		m := Ack{Agency: be.Uint32(p), Stored: be.Uint32(p[4:])}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		if err := nonZero(t, "stored", m.Stored); err != nil {
			return nil, err
		}
		return m, nil
	case TypeFin:
		if err := fixed(t, p, 12); err != nil {
			return nil, err
		}
		m := Fin{Agency: be.Uint32(p), Bets: be.Uint32(p[4:]), Chain: be.Uint32(p[8:])}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		return m, nil
	case TypeHello:
		agency, err := agencyOnly(t, p)
		if err != nil {
			return nil, err
		}
		return Hello{Agency: agency}, nil
	case TypeResume:
		if err := fixed(t, p, 13); err != nil {
			return nil, err
		}
		m := Resume{Agency: be.Uint32(p), Stored: be.Uint32(p[4:]), Chain: be.Uint32(p[8:])}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		var err error
		if m.Finished, err = flag(t, "finished", p[12]); err != nil {
			return nil, err
		}
		return m, nil
	case TypeFinAck:
		agency, err := agencyOnly(t, p)
		if err != nil {
			return nil, err
		}
		return FinAck{Agency: agency}, nil
	case TypeWinnersQuery:
		agency, err := agencyOnly(t, p)
		if err != nil {
			return nil, err
		}
		return WinnersQuery{Agency: agency}, nil
	case TypeWinners:
		if len(p) < WinnersHeader {
			return nil, malformed(t, "payload is %d bytes, want at least %d", len(p), WinnersHeader)
		}
		m := Winners{Agency: be.Uint32(p)}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		var err error
		if m.Last, err = flag(t, "last", p[4]); err != nil {
			return nil, err
		}
		count := int(be.Uint16(p[5:]))
		docs, err := splitLines(p[WinnersHeader:], count)
		if err != nil {
			return nil, malformed(t, "documents: %v", err)
		}
		m.Documents = docs
		return m, nil
	case TypeError:
		if len(p) < ErrorHeader {
			return nil, malformed(t, "payload is %d bytes, want at least %d", len(p), ErrorHeader)
		}
		m := Error{Code: ErrorCode(be.Uint16(p)), Position: be.Uint32(p[2:])}
		if !m.Code.Known() {
			return nil, malformed(t, "unknown code %d", uint16(m.Code))
		}
		reason := p[ErrorHeader:]
		if len(reason) > MaxReasonBytes {
			return nil, malformed(t, "reason is %d bytes, at most %d", len(reason), MaxReasonBytes)
		}
		if !utf8.Valid(reason) {
			return nil, malformed(t, "reason is not UTF-8")
		}
		m.Reason = string(reason)
		return m, nil
	}
	return nil, fmt.Errorf("proto: decode: type 0x%02x: %w", uint8(t), ErrUnknownType)
}

// splitLines splits a lines block holding exactly count '\n'-terminated UTF-8 lines.
func splitLines(b []byte, count int) ([]string, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("not UTF-8")
	}
	if n := bytes.Count(b, []byte{'\n'}); n != count || (len(b) > 0 && b[len(b)-1] != '\n') {
		return nil, fmt.Errorf("count is %d but the block does not hold exactly %d lines", count, count)
	}
	out := make([]string, 0, count)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out, nil
}
