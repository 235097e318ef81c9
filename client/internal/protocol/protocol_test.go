// Tests of the protocol package against testdata/protocol_vectors.json (shared with the Python
// server's tests): every frame vector both ways, every invalid frame, every bet line; plus
// FuzzReadFrame.

package protocol

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type vectorFields struct {
	PayloadHex *string     `json:"payload_hex"`
	Agency     uint32      `json:"agency"`
	Seq        uint32      `json:"seq"`
	Batches    uint32      `json:"batches"`
	Bets       [][5]string `json:"bets"`
	Last       bool        `json:"last"`
	Documents  []string    `json:"documents"`
	Code       uint16      `json:"code"`
	CodeName   string      `json:"code_name"`
	Reason     string      `json:"reason"`
}

type vectors struct {
	MaxFrame   int `json:"max_frame"`
	HeaderSize int `json:"header_size"`
	Frames     []struct {
		Name      string       `json:"name"`
		Type      string       `json:"type"`
		Direction string       `json:"direction"`
		Fields    vectorFields `json:"fields"`
		Hex       string       `json:"hex"`
	} `json:"frames"`
	InvalidFrames []struct {
		Name  string `json:"name"`
		Hex   string `json:"hex"`
		Error string `json:"error"`
		Note  string `json:"note"`
	} `json:"invalid_frames"`
	BetLines []struct {
		Line   string `json:"line"`
		Valid  bool   `json:"valid"`
		Reason string `json:"reason"`
	} `json:"bet_lines"`
}

// vectorsPath finds testdata/protocol_vectors.json by walking up from the package directory
// (../../../testdata from client/internal/protocol), so the test does not depend on the exact
// depth.
func vectorsPath(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "testdata", "protocol_vectors.json")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testdata/protocol_vectors.json not found above the package directory")
		}
		dir = parent
	}
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	raw, err := os.ReadFile(vectorsPath(t))
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	if len(v.Frames) == 0 || len(v.InvalidFrames) == 0 || len(v.BetLines) == 0 {
		t.Fatal("vectors file has an empty section")
	}
	return v
}

// decode decodes one whole frame held in buf, which must be exactly one frame long: the
// vectors are whole frames, and production code only ever reads frames from a stream.
func decode(buf []byte) (Message, error) {
	if len(buf) < HeaderSize {
		return nil, fmt.Errorf("decode: %d bytes is shorter than a header: %w", len(buf), ErrMalformed)
	}
	t, n, err := ParseHeader([HeaderSize]byte(buf[:HeaderSize]))
	if err != nil {
		return nil, err
	}
	if len(buf)-HeaderSize != n {
		return nil, fmt.Errorf("decode: header says %d payload bytes, have %d: %w", n, len(buf)-HeaderSize, ErrMalformed)
	}
	return DecodePayload(t, buf[HeaderSize:])
}

// reasonOf returns "" when line (without '\n') is a valid bet, else the reason.
func reasonOf(line []byte) string {
	_, reason := ParseBetLine(line)
	return reason
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

// messageOf builds the message a frame vector describes.
func messageOf(t *testing.T, typ string, f vectorFields) Message {
	t.Helper()
	switch typ {
	case "ECHO":
		if f.PayloadHex == nil {
			t.Fatal("ECHO vector without payload_hex")
		}
		return Echo{Payload: mustHex(t, *f.PayloadHex)}
	case "BET":
		var lines []byte
		for _, b := range f.Bets {
			lines = append(lines, strings.Join(b[:], ",")...)
			lines = append(lines, '\n')
		}
		return Bet{Agency: f.Agency, Seq: f.Seq, Count: uint16(len(f.Bets)), Bets: lines}
	case "ACK":
		return Ack{Agency: f.Agency, Seq: f.Seq}
	case "FIN":
		return Fin{Agency: f.Agency, Batches: f.Batches}
	case "FIN_ACK":
		return FinAck{Agency: f.Agency}
	case "WINNERS_QUERY":
		return WinnersQuery{Agency: f.Agency}
	case "WINNERS":
		docs := f.Documents
		if docs == nil {
			docs = []string{}
		}
		return Winners{Agency: f.Agency, Last: f.Last, Documents: docs}
	case "ERROR":
		if ErrorCode(f.Code).String() != f.CodeName {
			t.Fatalf("code %d is %s here, %s in the vector", f.Code, ErrorCode(f.Code), f.CodeName)
		}
		return Error{Code: ErrorCode(f.Code), Seq: f.Seq, Reason: f.Reason}
	}
	t.Fatalf("unknown vector type %q", typ)
	return nil
}

func TestConstantsMatchVectors(t *testing.T) {
	v := loadVectors(t)
	if v.MaxFrame != MaxFrame || v.HeaderSize != HeaderSize {
		t.Fatalf("vectors say max_frame=%d header=%d, code says %d %d", v.MaxFrame, v.HeaderSize, MaxFrame, HeaderSize)
	}
}

func TestFrameVectors(t *testing.T) {
	v := loadVectors(t)
	seen := map[Type]bool{}
	for _, fv := range v.Frames {
		t.Run(fv.Name, func(t *testing.T) {
			want := mustHex(t, fv.Hex)
			msg := messageOf(t, fv.Type, fv.Fields)
			seen[msg.Type()] = true
			if msg.Type().String() != fv.Type {
				t.Fatalf("type name %s, vector says %s", msg.Type(), fv.Type)
			}

			got, err := Encode(msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode:\n got %x\nwant %x", got, want)
			}

			dec, err := decode(want)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(dec, msg) {
				t.Fatalf("Decode:\n got %#v\nwant %#v", dec, msg)
			}

			// The same through a stream, fed one byte at a time (short reads).
			rd, err := ReadFrame(iotestOneByte(bytes.NewReader(want)))
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if !reflect.DeepEqual(rd, msg) {
				t.Fatalf("ReadFrame:\n got %#v\nwant %#v", rd, msg)
			}

			// And through WriteFrame / Send.
			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			if err := Send(w, msg); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("Send wrote %x", buf.Bytes())
			}
		})
	}
	for typ := TypeEcho; typ <= TypeError; typ++ {
		if !seen[typ] {
			t.Errorf("no frame vector for %s", typ)
		}
	}
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func iotestOneByte(r io.Reader) io.Reader { return oneByteReader{r} }

var sentinels = map[string]error{
	"UNSUPPORTED_VERSION": ErrUnsupportedVersion,
	"UNKNOWN_TYPE":        ErrUnknownType,
	"FRAME_TOO_LARGE":     ErrFrameTooLarge,
	"MALFORMED":           ErrMalformed,
	"INVALID_BET":         ErrInvalidBet,
}

func TestInvalidFrameVectors(t *testing.T) {
	v := loadVectors(t)
	for _, iv := range v.InvalidFrames {
		t.Run(iv.Name, func(t *testing.T) {
			want, ok := sentinels[iv.Error]
			if !ok {
				t.Fatalf("no sentinel for %s", iv.Error)
			}
			raw := mustHex(t, iv.Hex)
			r := bytes.NewReader(raw)
			_, err := ReadFrame(r)
			if !errors.Is(err, want) {
				t.Fatalf("ReadFrame error %v, want %s", err, iv.Error)
			}
			if code, ok := CodeOf(err); !ok || code.String() != iv.Error {
				t.Fatalf("CodeOf = %s, %v; want %s", code, ok, iv.Error)
			}
			if iv.Error == "FRAME_TOO_LARGE" || iv.Error == "UNSUPPORTED_VERSION" {
				// Rejected from the header alone: nothing past it was read.
				if consumed := len(raw) - r.Len(); consumed != HeaderSize {
					t.Fatalf("consumed %d bytes, want only the %d header bytes", consumed, HeaderSize)
				}
			}
			// A whole-frame decode refuses the frame with the same code as the stream reader.
			_, err = decode(raw)
			if !errors.Is(err, want) {
				t.Fatalf("decode error %v, want %s", err, iv.Error)
			}
			if code, ok := CodeOf(err); !ok || code.String() != iv.Error {
				t.Fatalf("decode: CodeOf = %s, %v; want %s", code, ok, iv.Error)
			}
		})
	}
}

func TestBetLineVectors(t *testing.T) {
	v := loadVectors(t)
	for i, bl := range v.BetLines {
		name := bl.Reason
		if bl.Valid {
			name = "valid"
		}
		t.Run(name, func(t *testing.T) {
			reason := reasonOf([]byte(bl.Line))
			if bl.Valid && reason != "" {
				t.Fatalf("line %d %q: invalid (%s), want valid", i, bl.Line, reason)
			}
			if !bl.Valid && reason != bl.Reason {
				t.Fatalf("line %d %q: reason %q, want %q", i, bl.Line, reason, bl.Reason)
			}
			// A one-bet BET frame with the line is accepted or refused accordingly.
			frame, err := Encode(Bet{Agency: 1, Seq: 1, Count: 1, Bets: []byte(bl.Line + "\n")})
			if err != nil {
				t.Fatal(err)
			}
			_, err = decode(frame)
			if bl.Valid != (err == nil) {
				t.Fatalf("Decode of a BET with the line: %v", err)
			}
			if !bl.Valid && !errors.Is(err, ErrInvalidBet) {
				t.Fatalf("Decode error %v, want INVALID_BET", err)
			}
		})
	}
}

func TestBetLineExtra(t *testing.T) {
	tests := []struct {
		line   string
		reason string
	}{
		{"Ana,Lopez,1,2000-02-29,1", ""},
		{"Ana,Lopez,1,2004-02-29,1", ""},
		{"Ana,Lopez,1,2100-02-29,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-00,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-00-10,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-32,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990+01-01,1", ReasonBirthdate},
		{"Ana,Lopez,1,199a-01-01,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-01 ,1", ReasonBirthdate},
		{"Ana,Lopez,1,1990-01-01,1\r", ReasonNumber},
		{"Ana\x7f,Lopez,1,1990-01-01,1", ReasonFirstName},
		{"Ana\xff,Lopez,1,1990-01-01,1", ReasonUTF8},
		{"Ana,Lopez,,1990-01-01,1", ReasonDocument},
		{"", ReasonFields},
		{"Zoë Ñandú,Müller,12,1990-01-01,1", ""},
		{strings.Repeat("é", 50) + ",B,1,1990-01-01,1", ""},
		{strings.Repeat("é", 50) + "a,B,1,1990-01-01,1", ReasonFirstName},
	}
	for _, tt := range tests {
		if got := reasonOf([]byte(tt.line)); got != tt.reason {
			t.Errorf("%q: reason %q, want %q", tt.line, got, tt.reason)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	ok := []byte("Ana,Lopez,1,1990-01-01,1\n")
	enc := func(m Message) []byte {
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"bet count zero", enc(Bet{Agency: 1, Seq: 1, Count: 0, Bets: nil}), ErrMalformed},
		{"bet agency zero", enc(Bet{Agency: 0, Seq: 1, Count: 1, Bets: ok}), ErrMalformed},
		{"bet trailing partial line", enc(Bet{Agency: 1, Seq: 1, Count: 1, Bets: append(ok, 'x')}), ErrMalformed},
		{"bet second line bad", enc(Bet{Agency: 1, Seq: 1, Count: 2, Bets: append(append([]byte{}, ok...), "Ana,Lopez,1,1990-01-01,x\n"...)}), ErrInvalidBet},
		{"ack seq zero", enc(Ack{Agency: 1, Seq: 0}), ErrMalformed},
		{"fin_ack long", append(AppendHeader(nil, TypeFinAck, 5), 0, 0, 0, 1, 0), ErrMalformed},
		{"winners count mismatch", append(AppendHeader(nil, TypeWinners, 9), 0, 0, 0, 1, 1, 0, 2, '7', '\n'), ErrMalformed},
		{"winners no newline", append(AppendHeader(nil, TypeWinners, 8), 0, 0, 0, 1, 1, 0, 1, '7'), ErrMalformed},
		{"winners bad utf8", append(AppendHeader(nil, TypeWinners, 9), 0, 0, 0, 1, 1, 0, 1, 0xff, '\n'), ErrMalformed},
		{"error unknown code", append(AppendHeader(nil, TypeError, 6), 0, 99, 0, 0, 0, 0), ErrMalformed},
		{"error code 0", append(AppendHeader(nil, TypeError, 6), 0, 0, 0, 0, 0, 0), ErrMalformed},
		{"error code 14", append(AppendHeader(nil, TypeError, 6), 0, 14, 0, 0, 0, 0), ErrMalformed},
		{"error short", append(AppendHeader(nil, TypeError, 5), 0, 5, 0, 0, 0), ErrMalformed},
		{"error reason too long", append(append(AppendHeader(nil, TypeError, 6+256), 0, 5, 0, 0, 0, 0), bytes.Repeat([]byte("a"), 256)...), ErrMalformed},
		{"type zero", AppendHeader(nil, 0, 0), ErrUnknownType},
		{"header too short", []byte{1, 1, 0}, ErrMalformed},
		{"length mismatch", []byte{1, 1, 0, 0, 0, 2, 'a'}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decode(tt.raw); !errors.Is(err, tt.want) {
				t.Fatalf("Decode error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	names := []string{
		"UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "FRAME_TOO_LARGE", "MALFORMED", "INVALID_BET",
		"UNKNOWN_AGENCY", "SEQUENCE_GAP", "AGENCY_FINISHED", "DUPLICATE_FIN", "IDLE_TIMEOUT",
		"SHUTTING_DOWN", "INTERNAL_ERROR", "ROUND_CLOSED",
	}
	for i, name := range names {
		c := ErrorCode(i + 1)
		if c.String() != name || !c.Known() {
			t.Errorf("code %d: %s (known %v), want %s", uint16(c), c, c.Known(), name)
		}
	}
	if CodeRoundClosed != 13 {
		t.Errorf("CodeRoundClosed = %d, want 13", uint16(CodeRoundClosed))
	}
	for _, c := range []ErrorCode{0, ErrorCode(len(names) + 1), 0xFFFF} {
		if c.Known() {
			t.Errorf("code %d is known", uint16(c))
		}
	}
}

func TestReadFrameTruncated(t *testing.T) {
	frame, _ := Encode(Ack{Agency: 1, Seq: 1})
	if _, err := ReadFrame(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	for _, n := range []int{1, HeaderSize - 1, HeaderSize, len(frame) - 1} {
		if _, err := ReadFrame(bytes.NewReader(frame[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestReadFrameUnknownTypeSkipsPayload(t *testing.T) {
	stream := append(AppendHeader(nil, 0xee, 3), 'a', 'b', 'c')
	ack, _ := Encode(Ack{Agency: 1, Seq: 2})
	r := bytes.NewReader(append(stream, ack...))
	if _, err := ReadFrame(r); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	m, err := ReadFrame(r)
	if err != nil || !reflect.DeepEqual(m, Ack{Agency: 1, Seq: 2}) {
		t.Fatalf("next frame: %#v, %v", m, err)
	}
}

func TestEncodeRefusesLargeFrames(t *testing.T) {
	if _, err := Encode(Echo{Payload: make([]byte, MaxPayload)}); err != nil {
		t.Fatalf("largest ECHO: %v", err)
	}
	if _, err := Encode(Echo{Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ECHO of %d bytes: %v", MaxPayload+1, err)
	}
	if _, err := Encode(Bet{Agency: 1, Seq: 1, Count: 1, Bets: make([]byte, MaxBetsBytes+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized BET: %v", err)
	}
	// ERROR reasons are cut to 255 bytes on a rune boundary.
	b, err := Encode(Error{Code: CodeInternalError, Reason: strings.Repeat("é", 200)})
	if err != nil || len(b) != HeaderSize+ErrorHeader+254 {
		t.Fatalf("long reason: %d bytes, %v", len(b), err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to ReadFrame: it must not panic, every error must map to
// an ERROR code or be a truncation, and a frame it decodes must re-encode to exactly the bytes
// it consumed.
func FuzzReadFrame(f *testing.F) {
	v := loadVectors(f)
	for _, fv := range v.Frames {
		f.Add(mustHex(f, fv.Hex))
	}
	for _, iv := range v.InvalidFrames {
		f.Add(mustHex(f, iv.Hex))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		m, err := ReadFrame(r)
		if err != nil {
			// Every refusal is a protocol violation with its ERROR code, or a truncated stream.
			if _, ok := CodeOf(err); !ok && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v is neither a protocol code nor a truncation", err)
			}
			return
		}
		consumed := data[:len(data)-r.Len()]
		got, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %#v but cannot re-encode: %v", m, err)
		}
		if !bytes.Equal(got, consumed) {
			t.Fatalf("re-encoded %x, read %x", got, consumed)
		}
	})
}

func BenchmarkParseBetLine(b *testing.B) {
	line := []byte("Santiago Lionel,Lorca,30904465,1999-03-17,7574")
	for i := 0; i < b.N; i++ {
		if _, reason := ParseBetLine(line); reason != "" {
			b.Fatal("invalid")
		}
	}
}
