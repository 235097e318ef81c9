// This file owns the fast path of the bet line rules for the agency's reader: a CSV line with
// no quote, checked in place.

package protocol

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// CheckPlainLine checks a line of the bets file that holds no '"' and no '\n', whose field
// values are therefore the line split on ','. It returns what AppendBetLine returns for those
// values: "" when they make a valid bet, else the rule they break (UTF-8 first, then the
// number of fields, then the fields in order). For a valid bet the canonical line is the line
// itself plus '\n': a value is quoted only when it holds a ',' or a '"', which none does.
//
// Why: the agency's reader checks nearly every row here. Splitting the line into a slice of
// fields for AppendBetLine, checking each field's UTF-8 on its own and then copying the line
// out cost about twice as much (BenchmarkCheckPlainLine against BenchmarkAppendBetLineBytes),
// and the reader can now hand the line on without a copy. FuzzCheckPlainLine checks that the
// two agree on every line.
func CheckPlainLine(line []byte) string {
	// ',' is ASCII and never part of a multi-byte sequence, so the values are all valid UTF-8
	// exactly when the whole line is.
	if !utf8.Valid(line) {
		return ReasonUTF8
	}
	var f [fieldCount][]byte
	rest := line
	for i := range fieldCount - 1 {
		j := bytes.IndexByte(rest, ',')
		if j < 0 {
			return ReasonFields
		}
		f[i], rest = rest[:j], rest[j+1:]
	}
	if bytes.IndexByte(rest, ',') >= 0 {
		return ReasonFields
	}
	f[fieldCount-1] = rest
	switch {
	case !plainName(f[0]):
		return ReasonFirstName
	case !plainName(f[1]):
		return ReasonLastName
	case !plainDigits(f[2]):
		return ReasonDocument
	case !validDate(f[3]):
		return ReasonBirthdate
	case !plainDigits(f[4]):
		return ReasonNumber
	}
	return ""
}

// ValidPlainLine reports whether line, which holds no '\n', is a valid bet line without a
// '"': for a line without a '"' it says what CheckPlainLine(line) == "" says, and for a line
// with one it says false. It is the reader's hot path: one pass over the bytes that finds the
// field boundaries on the way, where CheckPlainLine looks at each byte four times (the quote
// search, the UTF-8 check, the comma search, the name checks) in order to name the first rule
// a line breaks. The reader asks CheckPlainLine only about a line this refuses.
// FuzzCheckPlainLine checks that the two agree on every line.
//
// The pass looks at eight bytes at a time (SWAR: one 64-bit word, the bytes it refuses and its
// commas found with a few exact bitwise steps, no branch per byte): 31 ns a line, 40 with
// accented names, against 52 for a byte-at-a-time table (BenchmarkValidPlainLine). A byte past
// ASCII can only be part of a name (the other fields are digits and '-'), so the names alone
// are then checked for UTF-8 and C1 controls, eight bytes at a time too (twoByteUTF8).
func ValidPlainLine(line []byte) bool {
	if len(line) < 8 || len(line) > 64 {
		// Shorter than any valid bet line, or too long for the 64-bit bitmap of its commas
		// (names of about 40 bytes together: rare): the full rules decide.
		return len(line) > 64 && CheckPlainLine(line) == "" && bytes.IndexByte(line, '"') < 0
	}
	// Each whole word, then the last eight bytes (the line's length need not be a multiple of
	// eight): the bytes read twice only set again what they set the first time. The commas go
	// into a bitmap of the line (bit i: byte i is a comma), so no branch depends on where they
	// are.
	var refused, commas, high uint64
	for i := 0; i < len(line); i += 8 {
		at := min(i, len(line)-8)
		w := binary.LittleEndian.Uint64(line[at:])
		refused |= refusedBytes(w)
		high |= w
		commas |= gather(zeroBytes(w^(ones*','))) << at
	}
	if refused != 0 {
		return false
	}
	if bits.OnesCount64(commas) != fieldCount-1 {
		return false
	}
	c0 := bits.TrailingZeros64(commas)
	commas &= commas - 1
	c1 := bits.TrailingZeros64(commas)
	commas &= commas - 1
	c2 := bits.TrailingZeros64(commas)
	commas &= commas - 1
	c3 := bits.TrailingZeros64(commas)
	first, last := line[:c0], line[c0+1:c1]
	if len(first) < 1 || len(first) > MaxNameBytes || len(last) < 1 || len(last) > MaxNameBytes {
		return false
	}
	if high&highBits != 0 {
		valid, settled := false, false
		if c1+8 <= len(line) { // (a valid line has at least 14 bytes after its names)
			valid, settled = twoByteUTF8(line, c1)
		}
		if !settled {
			valid = plainUTF8Name(first) && plainUTF8Name(last)
		}
		if !valid {
			return false // (past ASCII in the other fields, the checks below refuse it)
		}
	}
	return plainDigits(line[c1+1:c2]) && plainDate(line[c2+1:c3]) && plainDigits(line[c3+1:])
}

// gather turns a mask with bit 7 set in some bytes into a byte with bit k set for byte k.
func gather(m uint64) uint64 { return (m >> 7) * 0x0102040810204080 >> 56 }

// Word-at-a-time masks for ValidPlainLine: each function sets bit 7 of exactly those bytes of
// a little-endian word that have the property, and no other bit (no carry crosses a byte: each
// byte's low seven bits plus at most 0x7F stay under 0x100).
const (
	ones     = 0x0101010101010101
	highBits = 0x8080808080808080
	low7Bits = 0x7F7F7F7F7F7F7F7F
)

// zeroBytes marks the bytes of w that are 0.
func zeroBytes(w uint64) uint64 { return ^((w&low7Bits + low7Bits) | w | low7Bits) }

// refusedBytes marks the bytes of w a plain line may not hold: an ASCII control character
// (under 0x20), DEL, or '"'.
func refusedBytes(w uint64) uint64 {
	controls := ^((w&low7Bits + ones*(0x80-0x20)) | w | low7Bits)
	return controls | zeroBytes(w^(ones*0x7F)) | zeroBytes(w^(ones*'"'))
}

// twoByteUTF8 checks the UTF-8 of line[:n], the names and their comma (line holds n+8 bytes at
// least), for the common case of names in Latin script: every byte past ASCII in a two-byte
// sequence whose lead is 0xC3..0xDF (U+00C0..U+07FF, which holds no control character). It
// looks at eight bytes at a time: in each word the leads (bits 11) and the continuations (bits
// 10) are marked, and the sequences are whole exactly when the continuations are the leads
// moved one byte on, carried from one word to the next. settled is false when some byte is
// another lead (0xC0 and 0xC1, always overlong; 0xC2, which begins the C1 controls; 0xE0..0xFF,
// longer sequences or none): plainUTF8Name decides those lines. The words may run past n into
// the document, digits that hold no lead; a lead left open at the last word's end is invalid
// either way (its next byte is the comma, or the line's document is not digits).
//
// Why: plainUTF8Name, a branch per byte, took 8 % of an agency's CPU in the real run (set
// against the run without the check), though its benchmark says 23 ns a line: a name's accent
// falls anywhere, so in a process competing for its core the branches mispredict. This check
// has no branch per byte: 45 against 61 ns a line on BenchmarkValidPlainLineMixed's varied
// lines (38 without any UTF-8 check).
func twoByteUTF8(line []byte, n int) (valid, settled bool) {
	var broken, carry, otherLeads uint64
	for i := 0; i < n; i += 8 {
		w := binary.LittleEndian.Uint64(line[i:])
		high, bit6 := w&highBits, w<<1&highBits // bit 6 of each byte, moved to its bit 7
		leads, continuations := high&bit6, high&^bit6
		broken |= continuations ^ (leads<<8 | carry)
		carry = leads >> 56 // a lead in the last byte wants a continuation in the next word's first
		otherLeads |= leads & (w<<2&highBits | lowFiveUnder3(w))
	}
	return broken|carry == 0, otherLeads == 0
}

// lowFiveUnder3 marks (bit 7) the bytes of w whose low five bits are under 3: among the leads,
// 0xC0, 0xC1, 0xC2 and 0xE0..0xE2, 0xF0..0xF2.
func lowFiveUnder3(w uint64) uint64 { return ^(w&(ones*0x1F) + ones*(0x80-3)) & highBits }

// plainUTF8Name reports whether a name's bytes are valid UTF-8 without a C1 control
// (U+0080..U+009F). A letter of the Latin-1 range, the common case, is two bytes checked here;
// any other sequence goes to utf8.DecodeRune.
func plainUTF8Name(v []byte) bool {
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c < utf8.RuneSelf:
			i++
		case c >= 0xC2 && c <= 0xDF && i+1 < len(v) && v[i+1]&0xC0 == 0x80:
			if c == 0xC2 && v[i+1] < 0xA0 {
				return false // U+0080..U+009F
			}
			i += 2
		default:
			r, size := utf8.DecodeRune(v[i:])
			if size == 1 || r < 0xA0 {
				return false
			}
			i += size
		}
	}
	return true
}

// plainName is validName for []byte, without the generic dictionary, for CheckPlainLine (a line
// ValidPlainLine refuses, or one past its 64 bytes).
func plainName(v []byte) bool {
	if len(v) < 1 || len(v) > MaxNameBytes {
		return false
	}
	for i, c := range v {
		if c < 0x20 || c == 0x7F || (c == 0xC2 && i+1 < len(v) && v[i+1] < 0xA0) {
			return false
		}
	}
	return true
}

// plainDate is validDate for ValidPlainLine: the first eight bytes, "YYYY-MM-", checked as one
// word instead of a loop per field. FuzzCheckPlainLine and TestPlainDateIsValidDate hold it to
// validDate.
func plainDate(v []byte) bool {
	if len(v) != 10 || v[8]-'0' > 9 || v[9]-'0' > 9 {
		return false
	}
	// Little-endian, so the first byte is the word's lowest: digits at bytes 0 to 3, 5 and 6,
	// '-' at 4 and 7. A digit is 0x30 to 0x39: its high nibble is 3 before and after adding 6.
	const digits, dashes = 0x00F0F000F0F0F0F0, 0xFF0000FF00000000
	w := binary.LittleEndian.Uint64(v)
	if w&digits != 0x0030300030303030 || (w+0x0006060006060606)&digits != 0x0030300030303030 ||
		w&dashes != 0x2D00002D00000000 {
		return false
	}
	y := int(v[0]-'0')*1000 + int(v[1]-'0')*100 + int(v[2]-'0')*10 + int(v[3]-'0')
	m := int(v[5]-'0')*10 + int(v[6]-'0')
	d := int(v[8]-'0')*10 + int(v[9]-'0')
	return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= daysIn(y, m)
}

// plainDigits is validDigits for []byte.
func plainDigits(v []byte) bool {
	if len(v) < 1 || len(v) > MaxDigits {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
