// Tests of the protocol package against testdata/protocol_vectors.json (shared with the Python
// server's tests): every frame vector both ways, every invalid frame, every bet line; the
// canonical encoding of bet lines and the chain; plus FuzzReadFrame.

package protocol

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type vectorFields struct {
	PayloadHex *string         `json:"payload_hex"`
	Agency     uint32          `json:"agency"`
	First      uint32          `json:"first"`
	Chain      uint32          `json:"chain"`
	Bets       json.RawMessage `json:"bets"` // BET: the field values of each bet; FIN: how many
	Stored     uint32          `json:"stored"`
	Finished   bool            `json:"finished"`
	Last       bool            `json:"last"`
	Documents  []string        `json:"documents"`
	Code       uint16          `json:"code"`
	CodeName   string          `json:"code_name"`
	Position   uint32          `json:"position"`
	Reason     string          `json:"reason"`
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
		// The vector gives field values: the lines are their canonical encoding.
		var bets [][]string
		if err := json.Unmarshal(f.Bets, &bets); err != nil {
			t.Fatalf("BET bets: %v", err)
		}
		var lines []byte
		for _, b := range bets {
			var reason string
			if lines, reason = AppendBetLine(lines, b); reason != "" {
				t.Fatalf("bet %q: %s", b, reason)
			}
		}
		return Bet{Agency: f.Agency, First: f.First, Count: uint16(len(bets)), Chain: f.Chain, Bets: lines}
	case "ACK":
		return Ack{Agency: f.Agency, Stored: f.Stored}
	case "FIN":
		var n uint32
		if err := json.Unmarshal(f.Bets, &n); err != nil {
			t.Fatalf("FIN bets: %v", err)
		}
		return Fin{Agency: f.Agency, Bets: n, Chain: f.Chain}
	case "HELLO":
		return Hello{Agency: f.Agency}
	case "RESUME":
		return Resume{Agency: f.Agency, Stored: f.Stored, Chain: f.Chain, Finished: f.Finished}
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
		return Error{Code: ErrorCode(f.Code), Position: f.Position, Reason: f.Reason}
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

			// The same through a stream: whole, one byte at a time, in halves, with io.EOF
			// along with the last bytes.
			for name, r := range map[string]io.Reader{
				"whole":     bytes.NewReader(want),
				"one byte":  iotest.OneByteReader(bytes.NewReader(want)),
				"halves":    iotest.HalfReader(bytes.NewReader(want)),
				"EOF early": iotest.DataErrReader(bytes.NewReader(want)),
			} {
				rd, err := ReadFrame(r)
				if err != nil {
					t.Fatalf("ReadFrame (%s): %v", name, err)
				}
				if !reflect.DeepEqual(rd, msg) {
					t.Fatalf("ReadFrame (%s):\n got %#v\nwant %#v", name, rd, msg)
				}
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
	for typ := TypeEcho; typ <= TypeResume; typ++ {
		if !seen[typ] {
			t.Errorf("no frame vector for %s", typ)
		}
	}
}

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
			f, reason := ParseBetLine([]byte(bl.Line))
			if bl.Valid && reason != "" {
				t.Fatalf("line %d %q: invalid (%s), want valid", i, bl.Line, reason)
			}
			// The vectors' reasons are what a reason must contain: the Python server's
			// "6 fields, want 5" is "fields".
			if !bl.Valid && (reason == "" || !strings.Contains(reason, bl.Reason)) {
				t.Fatalf("line %d %q: reason %q, want %q", i, bl.Line, reason, bl.Reason)
			}
			if bl.Valid {
				// A valid line is canonical: its field values encode back to it.
				values := []string{string(f.FirstName), string(f.LastName), string(f.Document), string(f.Birthdate), string(f.Number)}
				if got, reason := AppendBetLine(nil, values); reason != "" || string(got) != bl.Line+"\n" {
					t.Fatalf("AppendBetLine(%q) = %q, %q; want the line", values, got, reason)
				}
			}
			// A one-bet BET frame with the line is accepted or refused accordingly.
			frame, err := Encode(Bet{Agency: 1, First: 1, Count: 1, Bets: []byte(bl.Line + "\n")})
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
	quotes := `"` + strings.Repeat(`""`, MaxNameBytes) + `"` // a name of 100 '"'
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
		{"Ana\u0085,Lopez,1,1990-01-01,1", ReasonFirstName}, // C1 control
		{"Ana\u009f,Lopez,1,1990-01-01,1", ReasonFirstName},
		{"Ana\u00a0,Lopez,1,1990-01-01,1", ""}, // no-break space: not a control character
		{"Ana\xff,Lopez,1,1990-01-01,1", ReasonUTF8},
		{"\"Ana,\xff\",Lopez,1,1990-01-01,1", ReasonUTF8},
		{"Ana,Lopez,,1990-01-01,1", ReasonDocument},
		{"", ReasonFields},
		{"Ana,Lopez,1,1990-01-01,1,", ReasonFields},
		{"Zoë Ñandú,Müller,12,1990-01-01,1", ""},
		{strings.Repeat("é", 50) + ",B,1,1990-01-01,1", ""},
		{strings.Repeat("é", 50) + "a,B,1,1990-01-01,1", ReasonFirstName},

		// Quoting: a name is quoted exactly when it holds ',' or '"'.
		{`"Ana, María",Paz,1,1990-01-01,1`, ""},
		{`"Ana""",Paz,1,1990-01-01,1`, ""},            // the name Ana"
		{`"""",Paz,1,1990-01-01,1`, ""},               // the name "
		{`"Ana",Paz,1,1990-01-01,1`, ReasonFirstName}, // needlessly quoted
		{`Ana,"Paz",1,1990-01-01,1`, ReasonLastName},
		{`Ana,Paz,1,1990-01-01,"1"`, ReasonNumber},
		{`"Ana""",Paz,1,1990-01-01,1,"x"`, ReasonFields}, // quoting is checked before the count
		{`"Ana`, ReasonQuoting},
		{`"Ana""`, ReasonQuoting},
		{`"Ana"",Paz,1,1990-01-01,1`, ReasonQuoting},
		{`"Ana" ,Paz,1,1990-01-01,1`, ReasonQuoting},
		{`Ana,Paz,1,1990-01-01,1"`, ReasonQuoting},
		{`Ana,Paz,1,1990-01-01,1,x"y`, ReasonQuoting},
		{`"A` + strings.Repeat("a", 99) + `,",Paz,1,1990-01-01,1`, ReasonFirstName}, // 101 bytes
		{quotes + "," + quotes + ",1234567890,1990-01-01,1234567890", ""},
	}
	for _, tt := range tests {
		if _, got := ParseBetLine([]byte(tt.line)); got != tt.reason {
			t.Errorf("%q: reason %q, want %q", tt.line, got, tt.reason)
		}
	}
}

func TestParseBetLineFields(t *testing.T) {
	f, reason := ParseBetLine([]byte(`"Ana ""la Tana""",O'Neill,123,1990-01-01,45`))
	got := []string{string(f.FirstName), string(f.LastName), string(f.Document), string(f.Birthdate), string(f.Number)}
	want := []string{`Ana "la Tana"`, "O'Neill", "123", "1990-01-01", "45"}
	if reason != "" || !reflect.DeepEqual(got, want) {
		t.Fatalf("fields %q (%q), want %q", got, reason, want)
	}
}

func TestAppendBetLine(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		line   string // with its '\n'; "" when invalid
		reason string
	}{
		{"plain", []string{"Ana María", "Núñez", "1", "1990-01-01", "7574"}, "Ana María,Núñez,1,1990-01-01,7574\n", ""},
		{"comma", []string{"Pérez, Juan", "Gómez", "2", "1985-06-01", "1"}, "\"Pérez, Juan\",Gómez,2,1985-06-01,1\n", ""},
		{"quotes", []string{"Ana", `Paz "la Tana"`, "3", "1990-01-01", "12"}, "Ana,\"Paz \"\"la Tana\"\"\",3,1990-01-01,12\n", ""},
		{"semicolon and apostrophe", []string{"José; María", "D'Alessandro", "4", "1970-12-31", "99"}, "José; María,D'Alessandro,4,1970-12-31,99\n", ""},
		{"longest", []string{strings.Repeat(`"`, 100), strings.Repeat(`"`, 100), "1234567890", "1990-01-01", "1234567890"}, "", ""},
		{"four fields", []string{"Ana", "Paz", "1", "1990-01-01"}, "", ReasonFields},
		{"six fields", []string{"Ana", "Paz", "1", "1990-01-01", "1", ""}, "", ReasonFields},
		{"not UTF-8", []string{"Ana\xff", "Paz", "1", "1990-01-01", "1"}, "", ReasonUTF8},
		{"empty name", []string{"", "Paz", "1", "1990-01-01", "1"}, "", ReasonFirstName},
		{"newline in a name", []string{"Ana", "Paz\nRuiz", "1", "1990-01-01", "1"}, "", ReasonLastName},
		{"101 bytes", []string{strings.Repeat(",", 101), "Paz", "1", "1990-01-01", "1"}, "", ReasonFirstName},
		{"comma in a document", []string{"Ana", "Paz", "1,2", "1990-01-01", "1"}, "", ReasonDocument},
		{"bad date", []string{"Ana", "Paz", "1", "2001-02-29", "1"}, "", ReasonBirthdate},
		{"bad number", []string{"Ana", "Paz", "1", "1990-01-01", "-5"}, "", ReasonNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := AppendBetLine([]byte("prefix:"), tt.fields)
			if reason != tt.reason {
				t.Fatalf("reason %q, want %q", reason, tt.reason)
			}
			if reason != "" {
				if string(got) != "prefix:" {
					t.Fatalf("an invalid bet appended %q", got)
				}
				return
			}
			line := strings.TrimPrefix(string(got), "prefix:")
			if tt.line != "" && line != tt.line {
				t.Fatalf("line %q, want %q", line, tt.line)
			}
			if len(line) > MaxBetLineSize+1 {
				t.Fatalf("line of %d bytes, longer than MaxBetLineSize+1", len(line))
			}
			// What the agency encodes, the central accepts, with the same values.
			f, reason := ParseBetLine([]byte(strings.TrimSuffix(line, "\n")))
			back := []string{string(f.FirstName), string(f.LastName), string(f.Document), string(f.Birthdate), string(f.Number)}
			if reason != "" || !reflect.DeepEqual(back, tt.fields) {
				t.Fatalf("ParseBetLine(%q) = %q, %q", line, back, reason)
			}
		})
	}
	longest, _ := AppendBetLine(nil, tests[4].fields)
	if len(longest) != MaxBetLineSize+1 {
		t.Fatalf("the longest bet line is %d bytes with its newline, MaxBetLineSize is %d", len(longest), MaxBetLineSize)
	}
}

func TestChain(t *testing.T) {
	lines := []byte("Ana,Paz,1,1990-01-01,1\n\"Paz, Juan\",Ruiz,2,1990-01-01,2\n")
	whole := Chain(0, lines)
	if whole != crc32.ChecksumIEEE(lines) {
		t.Fatalf("Chain(0, lines) = %08x, want the CRC-32 of the lines", whole)
	}
	// Chaining batch by batch gives the chain of all the lines, however they are cut.
	for cut := 0; cut <= len(lines); cut++ {
		if got := Chain(Chain(0, lines[:cut]), lines[cut:]); got != whole {
			t.Fatalf("cut at %d: %08x, want %08x", cut, got, whole)
		}
	}
	if Chain(0, nil) != 0 || Chain(0, []byte("123456789")) != 0xCBF43926 {
		t.Fatal("Chain is not CRC-32 (IEEE) from 0")
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
		{"bet count zero", enc(Bet{Agency: 1, First: 1, Count: 0, Bets: nil}), ErrMalformed},
		{"bet agency zero", enc(Bet{Agency: 0, First: 1, Count: 1, Bets: ok}), ErrMalformed},
		{"bet last position", enc(Bet{Agency: 1, First: MaxPosition, Count: 1, Bets: ok}), nil},
		{"bet past the last position", enc(Bet{Agency: 1, First: MaxPosition, Count: 2, Bets: append(append([]byte{}, ok...), ok...)}), ErrMalformed},
		{"bet trailing partial line", enc(Bet{Agency: 1, First: 1, Count: 1, Bets: append(ok, 'x')}), ErrMalformed},
		{"bet second line bad", enc(Bet{Agency: 1, First: 1, Count: 2, Bets: append(append([]byte{}, ok...), "Ana,Lopez,1,1990-01-01,x\n"...)}), ErrInvalidBet},
		{"bet quote across lines", enc(Bet{Agency: 1, First: 1, Count: 2, Bets: []byte("\"Ana,\nx\",Lopez,1,1990-01-01,1\n")}), ErrInvalidBet},
		{"ack short", append(AppendHeader(nil, TypeAck, 4), 0, 0, 0, 1), ErrMalformed},
		{"ack agency zero", enc(Ack{Agency: 0, Stored: 1}), ErrMalformed},
		{"fin long", append(AppendHeader(nil, TypeFin, 13), make([]byte, 13)...), ErrMalformed},
		{"hello agency zero", enc(Hello{Agency: 0}), ErrMalformed},
		{"hello long", append(AppendHeader(nil, TypeHello, 5), 0, 0, 0, 1, 0), ErrMalformed},
		{"resume agency zero", enc(Resume{Agency: 0, Stored: 1}), ErrMalformed},
		{"resume short", append(AppendHeader(nil, TypeResume, 12), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0), ErrMalformed},
		{"resume nothing stored", enc(Resume{Agency: 1}), nil},
		{"fin_ack long", append(AppendHeader(nil, TypeFinAck, 5), 0, 0, 0, 1, 0), ErrMalformed},
		{"winners count mismatch", append(AppendHeader(nil, TypeWinners, 9), 0, 0, 0, 1, 1, 0, 2, '7', '\n'), ErrMalformed},
		{"winners no newline", append(AppendHeader(nil, TypeWinners, 8), 0, 0, 0, 1, 1, 0, 1, '7'), ErrMalformed},
		{"winners bad utf8", append(AppendHeader(nil, TypeWinners, 9), 0, 0, 0, 1, 1, 0, 1, 0xff, '\n'), ErrMalformed},
		{"error unknown code", append(AppendHeader(nil, TypeError, 6), 0, 99, 0, 0, 0, 0), ErrMalformed},
		{"error code 0", append(AppendHeader(nil, TypeError, 6), 0, 0, 0, 0, 0, 0), ErrMalformed},
		{"error code 15", append(AppendHeader(nil, TypeError, 6), 0, 15, 0, 0, 0, 0), nil},
		{"error code 16", append(AppendHeader(nil, TypeError, 6), 0, 16, 0, 0, 0, 0), ErrMalformed},
		{"error short", append(AppendHeader(nil, TypeError, 5), 0, 5, 0, 0, 0), ErrMalformed},
		{"error reason too long", append(append(AppendHeader(nil, TypeError, 6+256), 0, 5, 0, 0, 0, 0), bytes.Repeat([]byte("a"), 256)...), ErrMalformed},
		{"type zero", AppendHeader(nil, 0, 0), ErrUnknownType},
		{"type 0x0b", AppendHeader(nil, 0x0b, 0), ErrUnknownType},
		{"header too short", []byte{2, 1, 0}, ErrMalformed},
		{"length mismatch", []byte{2, 1, 0, 0, 0, 2, 'a'}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decode(tt.raw); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Decode error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	names := []string{
		"UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "FRAME_TOO_LARGE", "MALFORMED", "INVALID_BET",
		"UNKNOWN_AGENCY", "SEQUENCE_GAP", "AGENCY_FINISHED", "DUPLICATE_FIN", "IDLE_TIMEOUT",
		"SHUTTING_DOWN", "INTERNAL_ERROR", "ROUND_CLOSED", "BETS_MISMATCH", "AGENCY_MISMATCH",
	}
	for i, name := range names {
		c := ErrorCode(i + 1)
		if c.String() != name || !c.Known() {
			t.Errorf("code %d: %s (known %v), want %s", uint16(c), c, c.Known(), name)
		}
	}
	for _, c := range []ErrorCode{0, ErrorCode(len(names) + 1), 0xFFFF} {
		if c.Known() {
			t.Errorf("code %d is known", uint16(c))
		}
	}
}

func TestReadFrameTruncated(t *testing.T) {
	frame, _ := Encode(Ack{Agency: 1, Stored: 1})
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
	ack, _ := Encode(Ack{Agency: 1, Stored: 2})
	r := bytes.NewReader(append(stream, ack...))
	if _, err := ReadFrame(r); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	m, err := ReadFrame(r)
	if err != nil || !reflect.DeepEqual(m, Ack{Agency: 1, Stored: 2}) {
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
	if _, err := Encode(Bet{Agency: 1, First: 1, Count: 1, Bets: make([]byte, MaxBetsBytes+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized BET: %v", err)
	}
	// ERROR reasons are cut to 255 bytes on a rune boundary.
	b, err := Encode(Error{Code: CodeInternalError, Reason: strings.Repeat("é", 200)})
	if err != nil || len(b) != HeaderSize+ErrorHeader+254 {
		t.Fatalf("long reason: %d bytes, %v", len(b), err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to ReadFrame: it must not panic, every error must map to
// an ERROR code or be a truncation, a frame it decodes must re-encode to exactly the bytes it
// consumed, and every bet of a BET it accepts must be in its one canonical encoding.
func FuzzReadFrame(f *testing.F) {
	v := loadVectors(f)
	for _, fv := range v.Frames {
		f.Add(mustHex(f, fv.Hex))
	}
	for _, iv := range v.InvalidFrames {
		f.Add(mustHex(f, iv.Hex))
	}
	for _, bl := range v.BetLines {
		frame, err := Encode(Bet{Agency: 1, First: 1, Count: 1, Bets: []byte(bl.Line + "\n")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
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
		bet, ok := m.(Bet)
		if !ok {
			return
		}
		for _, line := range bytes.SplitAfter(bet.Bets, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			f, reason := ParseBetLine(line[:len(line)-1])
			values := []string{string(f.FirstName), string(f.LastName), string(f.Document), string(f.Birthdate), string(f.Number)}
			if again, r := AppendBetLine(nil, values); reason != "" || r != "" || !bytes.Equal(again, line) {
				t.Fatalf("accepted line %q encodes as %q (%q %q)", line, again, reason, r)
			}
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

func BenchmarkAppendBetLine(b *testing.B) {
	fields := []string{"Santiago Lionel", "Lorca", "30904465", "1999-03-17", "7574"}
	buf := make([]byte, 0, MaxBetLineSize+1)
	for i := 0; i < b.N; i++ {
		if _, reason := AppendBetLine(buf, fields); reason != "" {
			b.Fatal("invalid")
		}
	}
}

// TestAppendBetLineAgreesWithTheWireRules checks, on random field values, that AppendBetLine
// (which checks the values before encoding them) gives exactly the reason ParseBetLine gives
// for the canonical encoding of the same values.
func TestAppendBetLineAgreesWithTheWireRules(t *testing.T) {
	pieces := []string{"", "a", "Ñ", ",", "\"", ";", "'", " ", "\t", "\x7f", "\u0085", "\u2028", "\xff", "0", "9",
		"-", "1990-01-01", "2001-02-29", "2000-02-29", "12345678901", "x", strings.Repeat("b", 99)}
	rng := rand.New(rand.NewPCG(7574, 1))
	for i := 0; i < 200000; i++ {
		fields := make([]string, 4+rng.IntN(3))
		for j := range fields {
			var b strings.Builder
			for k := rng.IntN(4); k >= 0; k-- {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
			fields[j] = b.String()
		}
		var encoded []byte
		for j, v := range fields {
			if j > 0 {
				encoded = append(encoded, ',')
			}
			if strings.ContainsAny(v, ",\"") {
				encoded = appendQuoted(encoded, v)
			} else {
				encoded = append(encoded, v...)
			}
		}
		_, want := ParseBetLine(encoded)
		line, got := AppendBetLine(nil, fields)
		if got != want {
			t.Fatalf("%q: AppendBetLine says %q, the wire rules %q", fields, got, want)
		}
		if got == "" && string(line) != string(encoded)+"\n" {
			t.Fatalf("%q: line %q, want %q", fields, line, encoded)
		}
	}
}

// TestDaysInIsTheCalendars: the month lengths the date rules use are the proleptic Gregorian
// calendar's, as package time computes them, for every month of years from 1 to 9999 (each
// century, each leap year around them, and more).
func TestDaysInIsTheCalendars(t *testing.T) {
	for y := 1; y <= 9999; y += 3 {
		for m := 1; m <= 12; m++ {
			want := time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
			if got := daysIn(y, m); got != want {
				t.Fatalf("%04d-%02d: daysIn says %d, the calendar %d", y, m, got, want)
			}
		}
	}
	for _, y := range []int{1600, 1700, 1800, 1900, 2000, 2100, 2400, 9600, 9900} {
		if got, want := daysIn(y, 2), time.Date(y, 3, 0, 0, 0, 0, 0, time.UTC).Day(); got != want {
			t.Fatalf("%04d-02: daysIn says %d, the calendar %d", y, got, want)
		}
	}
}
