// This file owns encoding: a message into its frame (header and payload), refusing one larger
// than MaxFrame.

package protocol

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

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
