// This file owns the ten message structs and their encoding to and decoding from payloads.

package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Message is one decoded protocol message.
type Message interface {
	Type() Type
}

// Echo (0x01): any payload, echoed back unchanged.
type Echo struct {
	Payload []byte
}

// Bet (0x02): one batch, the agency's bets First .. First+Count-1 (positions among its valid
// bets, from 1). Chain is the chain of its bets before First; Bets is the raw lines block
// (each line ends with '\n'), whose number of lines Count must equal.
type Bet struct {
	Agency uint32
	First  uint32
	Count  uint16
	Chain  uint32
	Bets   []byte
}

// Ack (0x03): the agency's bets 1..Stored are durably stored; Stored is the last position of
// the batch answered.
type Ack struct {
	Agency uint32
	Stored uint32
}

// Fin (0x04): the agency has sent all its bets: Bets of them (the last position), whose chain
// is Chain.
type Fin struct {
	Agency uint32
	Bets   uint32
	Chain  uint32
}

// FinAck (0x05): the FIN is durably recorded.
type FinAck struct {
	Agency uint32
}

// WinnersQuery (0x06): ask for the agency's winners.
type WinnersQuery struct {
	Agency uint32
}

// Winners (0x07): one page of the agency's winning documents.
type Winners struct {
	Agency    uint32
	Last      bool
	Documents []string
}

// Error (0x08): a request was refused. Position is the First of the BET refused, else 0.
type Error struct {
	Code     ErrorCode
	Position uint32
	Reason   string
}

// Hello (0x09): the agency asks what the central holds of it; sent first on every connection.
type Hello struct {
	Agency uint32
}

// Resume (0x0A): the answer to Hello: the agency's bets 1..Stored are durably stored, Chain is
// their chain, and Finished says whether its FIN is recorded.
type Resume struct {
	Agency   uint32
	Stored   uint32
	Chain    uint32
	Finished bool
}

// Type implements Message.
func (Echo) Type() Type { return TypeEcho }

// Type implements Message.
func (Bet) Type() Type { return TypeBet }

// Type implements Message.
func (Ack) Type() Type { return TypeAck }

// Type implements Message.
func (Fin) Type() Type { return TypeFin }

// Type implements Message.
func (FinAck) Type() Type { return TypeFinAck }

// Type implements Message.
func (WinnersQuery) Type() Type { return TypeWinnersQuery }

// Type implements Message.
func (Winners) Type() Type { return TypeWinners }

// Type implements Message.
func (Error) Type() Type { return TypeError }

// Type implements Message.
func (Hello) Type() Type { return TypeHello }

// Type implements Message.
func (Resume) Type() Type { return TypeResume }

// AppendHeader appends a frame header for a payload of n bytes.
func AppendHeader(dst []byte, t Type, n int) []byte {
	dst = append(dst, Version, byte(t))
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// Encode returns the whole frame (header and payload) of m. It refuses to build a frame
// larger than MaxFrame.
func Encode(m Message) ([]byte, error) {
	return AppendEncode(make([]byte, 0, HeaderSize+32), m)
}

// AppendEncode appends the whole frame of m to dst.
func AppendEncode(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	dst = AppendHeader(dst, m.Type(), 0) // length patched below
	be := binary.BigEndian
	switch v := m.(type) {
	case Echo:
		dst = append(dst, v.Payload...)
	case Bet:
		dst = be.AppendUint32(dst, v.Agency)
		dst = be.AppendUint32(dst, v.First)
		dst = be.AppendUint16(dst, v.Count)
		dst = be.AppendUint32(dst, v.Chain)
		dst = append(dst, v.Bets...)
	case Ack:
		dst = be.AppendUint32(dst, v.Agency)
		dst = be.AppendUint32(dst, v.Stored)
	case Fin:
		dst = be.AppendUint32(dst, v.Agency)
		dst = be.AppendUint32(dst, v.Bets)
		dst = be.AppendUint32(dst, v.Chain)
	case Hello:
		dst = be.AppendUint32(dst, v.Agency)
	case Resume:
		dst = be.AppendUint32(dst, v.Agency)
		dst = be.AppendUint32(dst, v.Stored)
		dst = be.AppendUint32(dst, v.Chain)
		dst = append(dst, boolByte(v.Finished))
	case FinAck:
		dst = be.AppendUint32(dst, v.Agency)
	case WinnersQuery:
		dst = be.AppendUint32(dst, v.Agency)
	case Winners:
		if len(v.Documents) > 0xFFFF {
			return dst[:start], fmt.Errorf("proto: encode WINNERS: %d documents: %w", len(v.Documents), ErrFrameTooLarge)
		}
		dst = be.AppendUint32(dst, v.Agency)
		dst = append(dst, boolByte(v.Last))
		dst = be.AppendUint16(dst, uint16(len(v.Documents)))
		for _, d := range v.Documents {
			dst = append(dst, d...)
			dst = append(dst, '\n')
		}
	case Error:
		dst = be.AppendUint16(dst, uint16(v.Code))
		dst = be.AppendUint32(dst, v.Position)
		dst = append(dst, truncateUTF8(v.Reason, MaxReasonBytes)...)
	default:
		return dst[:start], fmt.Errorf("proto: encode: not a message: %T", m)
	}
	n := len(dst) - start - HeaderSize
	if n > MaxPayload {
		return dst[:start], fmt.Errorf("proto: encode %s: payload of %d bytes exceeds %d: %w", m.Type(), n, MaxPayload, ErrFrameTooLarge)
	}
	be.PutUint32(dst[start+2:start+6], uint32(n))
	return dst, nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

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
		if err := fixed(t, p, 4); err != nil {
			return nil, err
		}
		m := Hello{Agency: be.Uint32(p)}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		return m, nil
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
		if err := fixed(t, p, 4); err != nil {
			return nil, err
		}
		m := FinAck{Agency: be.Uint32(p)}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		return m, nil
	case TypeWinnersQuery:
		if err := fixed(t, p, 4); err != nil {
			return nil, err
		}
		m := WinnersQuery{Agency: be.Uint32(p)}
		if err := nonZero(t, "agency", m.Agency); err != nil {
			return nil, err
		}
		return m, nil
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
