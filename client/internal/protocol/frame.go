// This file owns the frame header, the message type and error code enumerations, the sentinel
// errors and ReadFrame / WriteFrame.

package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame limits.
const (
	Version        = 2
	HeaderSize     = 6
	MaxFrame       = 8192
	MaxPayload     = MaxFrame - HeaderSize      // 8186
	BetHeaderSize  = 14                         // agency u32, first u32, count u16, chain u32
	MaxBetsBytes   = MaxPayload - BetHeaderSize // 8172
	WinnersHeader  = 7                          // agency u32, last u8, count u16
	ErrorHeader    = 6                          // code u16, position u32
	MaxReasonBytes = 255
	MaxPosition    = 1<<32 - 1 // the last position a bet can have: positions are u32
)

// Type is a message type (the second header byte).
type Type uint8

// The message types of version 2.
const (
	TypeEcho         Type = 0x01
	TypeBet          Type = 0x02
	TypeAck          Type = 0x03
	TypeFin          Type = 0x04
	TypeFinAck       Type = 0x05
	TypeWinnersQuery Type = 0x06
	TypeWinners      Type = 0x07
	TypeError        Type = 0x08
	TypeHello        Type = 0x09
	TypeResume       Type = 0x0A
)

var typeNames = map[Type]string{
	TypeEcho:         "ECHO",
	TypeBet:          "BET",
	TypeAck:          "ACK",
	TypeFin:          "FIN",
	TypeFinAck:       "FIN_ACK",
	TypeWinnersQuery: "WINNERS_QUERY",
	TypeWinners:      "WINNERS",
	TypeError:        "ERROR",
	TypeHello:        "HELLO",
	TypeResume:       "RESUME",
}

// String returns the protocol name of the type, e.g. "FIN_ACK".
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("TYPE_0x%02x", uint8(t))
}

// ErrorCode is the code carried by an ERROR message.
type ErrorCode uint16

// The error codes of version 2.
const (
	CodeUnsupportedVersion ErrorCode = 1
	CodeUnknownType        ErrorCode = 2
	CodeFrameTooLarge      ErrorCode = 3
	CodeMalformed          ErrorCode = 4
	CodeInvalidBet         ErrorCode = 5
	CodeUnknownAgency      ErrorCode = 6
	CodeSequenceGap        ErrorCode = 7
	CodeAgencyFinished     ErrorCode = 8
	CodeDuplicateFin       ErrorCode = 9
	CodeIdleTimeout        ErrorCode = 10
	CodeShuttingDown       ErrorCode = 11
	CodeInternalError      ErrorCode = 12
	CodeRoundClosed        ErrorCode = 13 // the draw has already happened: a new batch or FIN is refused
	CodeBetsMismatch       ErrorCode = 14 // the request does not continue the agency's stored bets (chain)
	CodeAgencyMismatch     ErrorCode = 15 // the message names an agency other than the one its connection's certificate proves
)

var codeNames = map[ErrorCode]string{
	CodeUnsupportedVersion: "UNSUPPORTED_VERSION",
	CodeUnknownType:        "UNKNOWN_TYPE",
	CodeFrameTooLarge:      "FRAME_TOO_LARGE",
	CodeMalformed:          "MALFORMED",
	CodeInvalidBet:         "INVALID_BET",
	CodeUnknownAgency:      "UNKNOWN_AGENCY",
	CodeSequenceGap:        "SEQUENCE_GAP",
	CodeAgencyFinished:     "AGENCY_FINISHED",
	CodeDuplicateFin:       "DUPLICATE_FIN",
	CodeIdleTimeout:        "IDLE_TIMEOUT",
	CodeShuttingDown:       "SHUTTING_DOWN",
	CodeInternalError:      "INTERNAL_ERROR",
	CodeRoundClosed:        "ROUND_CLOSED",
	CodeBetsMismatch:       "BETS_MISMATCH",
	CodeAgencyMismatch:     "AGENCY_MISMATCH",
}

// String returns the protocol name of the code, e.g. "DUPLICATE_FIN".
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Known reports whether c is one of the codes of version 2.
func (c ErrorCode) Known() bool {
	_, ok := codeNames[c]
	return ok
}

// Sentinel errors. Every error returned by this package wraps exactly one of them (or an I/O
// error from the underlying reader/writer), so callers test with errors.Is.
var (
	ErrUnsupportedVersion = errors.New("unsupported protocol version")
	ErrUnknownType        = errors.New("unknown message type")
	ErrFrameTooLarge      = errors.New("frame too large")
	ErrMalformed          = errors.New("malformed payload")
	ErrInvalidBet         = errors.New("invalid bet")
)

// CodeOf maps an error of this package to the ERROR code a receiver would answer with; ok is
// false for errors that are not protocol violations (I/O errors, truncated frames).
func CodeOf(err error) (code ErrorCode, ok bool) {
	switch {
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupportedVersion, true
	case errors.Is(err, ErrUnknownType):
		return CodeUnknownType, true
	case errors.Is(err, ErrFrameTooLarge):
		return CodeFrameTooLarge, true
	case errors.Is(err, ErrMalformed):
		return CodeMalformed, true
	case errors.Is(err, ErrInvalidBet):
		return CodeInvalidBet, true
	}
	return 0, false
}

// ParseHeader checks a 6-byte header and returns its type and payload length. The version is
// checked first, then the length, so nothing is allocated for a frame that will be refused.
func ParseHeader(h [HeaderSize]byte) (Type, int, error) {
	if h[0] != Version {
		return 0, 0, fmt.Errorf("proto: header: version %d, want %d: %w", h[0], Version, ErrUnsupportedVersion)
	}
	n := binary.BigEndian.Uint32(h[2:6])
	if n > MaxPayload {
		return 0, 0, fmt.Errorf("proto: header: length %d exceeds %d: %w", n, MaxPayload, ErrFrameTooLarge)
	}
	return Type(h[1]), int(n), nil
}

// ReadFrame reads exactly one frame from r and decodes it. The header is read with
// io.ReadFull and checked before the payload is allocated. A payload of an unknown type is
// still read (so the stream stays in step) and ErrUnknownType is returned.
//
// A clean close before the first header byte yields an error wrapping io.EOF; a close in the
// middle of a frame yields one wrapping io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader) (Message, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("proto: read header: %w", err)
	}
	t, n, err := ParseHeader(h)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("proto: read %s payload: %w", t, err)
	}
	return DecodePayload(t, payload)
}

// WriteFrame encodes m and writes it to w without flushing: callers write one message or a
// pipelined group and then Flush once.
func WriteFrame(w *bufio.Writer, m Message) error {
	buf, err := Encode(m)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("proto: write %s: %w", m.Type(), err)
	}
	return nil
}

// Send writes one message and flushes w: one Flush per message.
func Send(w *bufio.Writer, m Message) error {
	if err := WriteFrame(w, m); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("proto: flush %s: %w", m.Type(), err)
	}
	return nil
}
