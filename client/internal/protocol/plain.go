// This file owns the fast path of the bet line rules for the agency's reader: a CSV line with
// no quote, checked in place.

package protocol

import (
	"bytes"
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
func ValidPlainLine(line []byte) bool {
	var commas [fieldCount - 1]int
	n := 0
	for i := 0; i < len(line); i++ {
		switch plainClass[line[i]] {
		case plainText:
		case plainComma:
			if n == len(commas) {
				return false
			}
			commas[n] = i
			n++
		case plainMultiByte: // a name's letter past ASCII: valid UTF-8, and not a C1 control
			r, size := utf8.DecodeRune(line[i:])
			if size == 1 || r < 0xA0 {
				return false
			}
			i += size - 1
		default: // a control character, DEL, or a quote (the reader's encoding/csv path)
			return false
		}
	}
	if n != len(commas) {
		return false
	}
	first, last := commas[0], commas[1]-commas[0]-1 // the names' lengths in bytes
	return first >= 1 && first <= MaxNameBytes && last >= 1 && last <= MaxNameBytes &&
		plainDigits(line[commas[1]+1:commas[2]]) && validDate(line[commas[2]+1:commas[3]]) &&
		plainDigits(line[commas[3]+1:])
}

// The classes of a byte for ValidPlainLine.
const (
	plainRefused   = iota // a control character, DEL or '"'
	plainText             // any other ASCII byte but ','
	plainComma            // ','
	plainMultiByte        // part of a character past ASCII
)

var plainClass = func() (class [256]uint8) {
	for c := range class {
		switch {
		case c >= 0x80:
			class[c] = plainMultiByte
		case c == ',':
			class[c] = plainComma
		case c >= 0x20 && c != 0x7F && c != '"':
			class[c] = plainText
		}
	}
	return class
}()

// plainName is validName for []byte, without the generic dictionary: it is the hot loop.
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
