// This file owns the bet line rules of docs/protocol.md (the same rules as
// server/lottery/protocol.py): the canonical line of a bet, the parser of a line off the wire,
// and the checksum chain of an agency's lines.

package protocol

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"unicode/utf8"
)

// Reasons a bet is invalid: the name of the first offending field, "fields" for a wrong number
// of fields, "quoting" for broken RFC 4180 quotes, or "not UTF-8".
const (
	ReasonFirstName = "first_name"
	ReasonLastName  = "last_name"
	ReasonDocument  = "document"
	ReasonBirthdate = "birthdate"
	ReasonNumber    = "number"
	ReasonFields    = "fields"
	ReasonQuoting   = "quoting"
	ReasonUTF8      = "not UTF-8"
)

// Field limits.
const (
	fieldCount   = 5
	MaxNameBytes = 100 // the name itself, not its quotes
	MaxDigits    = 10
	// MaxBetLineSize is the longest bet line without its '\n': two names of 100 '"', each
	// written as 202 bytes, the longest document and number, a date and four commas.
	MaxBetLineSize = 2*(2+2*MaxNameBytes) + 2*MaxDigits + len("YYYY-MM-DD") + 4 // 438
)

// BetFields are the five field values of one bet line. They alias the line, but for a quoted
// name holding a '"', which is a copy with its doubled quotes undone.
type BetFields struct {
	FirstName, LastName, Document, Birthdate, Number []byte
}

// Chain continues the checksum chain prev over lines (whole bet lines, '\n' included): the
// chain of an agency's bets is the CRC-32 (IEEE) of all their lines in position order.
func Chain(prev uint32, lines []byte) uint32 {
	return crc32.Update(prev, crc32.IEEETable, lines)
}

// AppendBetLine appends to dst the canonical line of a bet, '\n' included, from its field
// values (first name, last name, document, birthdate, number): a name is quoted, its '"'
// doubled, exactly when it holds a ',' or a '"', so every bet has one encoding (and one
// chain). The values are checked first with the rules the central applies to the line
// (ParseBetLine): reason is "" when they make a valid bet, else the rule they break (see the
// Reason constants) and dst is returned unchanged. The values are strings (what encoding/csv
// returns) or byte slices (the agency's fast path, which splits lines without copying them).
func AppendBetLine[S string | []byte](dst []byte, fields []S) (line []byte, reason string) {
	if reason := valuesError(fields); reason != "" {
		return dst, reason
	}
	for i, v := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		if i < 2 && needsQuotes(v) { // a valid document, date or number needs none
			dst = appendQuoted(dst, v)
		} else {
			dst = append(dst, v...)
		}
	}
	return append(dst, '\n'), ""
}

// valuesError is fieldError for field values before they are encoded: the same rules, in the
// same order, UTF-8 first. (A document, date or number holding ',' or '"' would be written
// quoted, and fails its digit or date rule here just as it fails "never quoted" on the wire.)
func valuesError[S string | []byte](fields []S) string {
	for _, v := range fields {
		if !validUTF8(v) {
			return ReasonUTF8
		}
	}
	if len(fields) != fieldCount {
		return ReasonFields
	}
	switch {
	case !validName(fields[0]):
		return ReasonFirstName
	case !validName(fields[1]):
		return ReasonLastName
	case !validDigits(fields[2]):
		return ReasonDocument
	case !validDate(fields[3]):
		return ReasonBirthdate
	case !validDigits(fields[4]):
		return ReasonNumber
	}
	return ""
}

// validUTF8 is utf8.ValidString or utf8.Valid, whichever fits v, without converting it (which
// would copy a []byte).
func validUTF8[T string | []byte](v T) bool {
	switch v := any(v).(type) {
	case string:
		return utf8.ValidString(v)
	case []byte:
		return utf8.Valid(v)
	}
	panic("unreachable")
}

func appendQuoted[T string | []byte](dst []byte, v T) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, v[i])
	}
	return append(dst, '"')
}

// ParseBetLine splits and checks one bet line off the wire, given without its '\n': one
// RFC 4180 record of five fields in their canonical encoding. reason is "" when the line is
// valid, else the first rule it breaks, checked in the order of server/lottery/protocol.py:
// UTF-8, quoting, number of fields, then the fields in order.
func ParseBetLine(line []byte) (f BetFields, reason string) {
	if !utf8.Valid(line) {
		return f, ReasonUTF8
	}
	var raw [fieldCount][]byte
	var quoted [fieldCount]bool
	n := 0
	for rest, more := line, true; more; n++ {
		var field []byte
		var q, ok bool
		field, q, rest, more, ok = splitField(rest)
		if !ok {
			return f, ReasonQuoting
		}
		if n < fieldCount {
			raw[n], quoted[n] = field, q
		}
	}
	if n != fieldCount {
		return f, ReasonFields
	}
	for i, q := range quoted {
		if q {
			raw[i] = unquote(raw[i])
		}
	}
	if reason := fieldError(&raw, &quoted); reason != "" {
		return f, reason
	}
	return BetFields{FirstName: raw[0], LastName: raw[1], Document: raw[2], Birthdate: raw[3], Number: raw[4]}, ""
}

// splitField splits the first RFC 4180 field off line: its raw bytes (inside the quotes, with
// doubled quotes still doubled, if quoted), whether it was quoted, and what follows the ','
// after it; more is false after the last field. ok is false when the quoting is broken: a
// quote that is never closed, a '"' inside a plain field, text after a closing quote.
func splitField(line []byte) (raw []byte, quoted bool, rest []byte, more, ok bool) {
	var after []byte
	if len(line) > 0 && line[0] == '"' {
		i := 1
		for {
			j := bytes.IndexByte(line[i:], '"')
			if j < 0 {
				return nil, false, nil, false, false
			}
			i += j
			if i+1 < len(line) && line[i+1] == '"' {
				i += 2 // a doubled quote inside the field
				continue
			}
			break
		}
		raw, quoted, after = line[1:i], true, line[i+1:]
	} else {
		end := bytes.IndexByte(line, ',')
		if end < 0 {
			end = len(line)
		}
		if bytes.IndexByte(line[:end], '"') >= 0 {
			return nil, false, nil, false, false
		}
		raw, after = line[:end], line[end:]
	}
	switch {
	case len(after) == 0:
		return raw, quoted, nil, false, true
	case after[0] == ',':
		return raw, quoted, after[1:], true, true
	}
	return nil, false, nil, false, false
}

// unquote undoes the doubled quotes of a quoted field's inside, copying only when it has any.
func unquote(raw []byte) []byte {
	if bytes.IndexByte(raw, '"') < 0 {
		return raw
	}
	return bytes.ReplaceAll(raw, []byte(`""`), []byte(`"`))
}

// fieldError checks five UTF-8 field values (first name, last name, document, birthdate,
// number), of which quoted were written quoted, and returns the reason for the first one that
// breaks its rule, or "". A name is quoted exactly when it holds a ',' or a '"' (a plain field
// never holds either: splitField refuses it); the other fields are never quoted.
func fieldError(v *[fieldCount][]byte, quoted *[fieldCount]bool) string {
	switch {
	case quoted[0] && !needsQuotes(v[0]) || !validName(v[0]):
		return ReasonFirstName
	case quoted[1] && !needsQuotes(v[1]) || !validName(v[1]):
		return ReasonLastName
	case quoted[2] || !validDigits(v[2]):
		return ReasonDocument
	case quoted[3] || !validDate(v[3]):
		return ReasonBirthdate
	case quoted[4] || !validDigits(v[4]):
		return ReasonNumber
	}
	return ""
}

// needsQuotes reports whether a field holds a ',' or a '"'. Fields are short: a loop beats
// strings.ContainsAny's calls.
func needsQuotes[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == ',' || v[i] == '"' {
			return true
		}
	}
	return false
}

// validName: 1 to 100 bytes of UTF-8 (checked by the caller) with no control character
// (unicode.IsControl: U+0000 to U+001F, U+007F to U+009F). The C1 controls U+0080 to U+009F
// are 0xC2 0x80 to 0xC2 0x9F in UTF-8, and 0xC2 is only ever a lead byte, so a byte scan
// finds them all.
func validName[T string | []byte](v T) bool {
	if len(v) < 1 || len(v) > MaxNameBytes {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7F || (c == 0xC2 && i+1 < len(v) && v[i+1] < 0xA0) {
			return false
		}
	}
	return true
}

// validDigits: 1 to 10 ASCII digits.
func validDigits[T string | []byte](v T) bool {
	if len(v) < 1 || len(v) > MaxDigits {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// number is the value of the ASCII digits v[i:j], or -1 if one is not a digit.
func number[T string | []byte](v T, i, j int) int {
	n := 0
	for ; i < j; i++ {
		if v[i] < '0' || v[i] > '9' {
			return -1
		}
		n = n*10 + int(v[i]-'0')
	}
	return n
}

// validDate: YYYY-MM-DD, a real calendar date with year 0001 to 9999.
func validDate[T string | []byte](v T) bool {
	if len(v) != 10 || v[4] != '-' || v[7] != '-' {
		return false
	}
	y, m, d := number(v, 0, 4), number(v, 5, 7), number(v, 8, 10)
	if y < 1 || m < 1 || m > 12 || d < 1 {
		return false
	}
	return d <= daysIn(y, m)
}

// daysIn is the length of month m (1 to 12) of year y: the table, but for February outside a
// leap year (divisible by 4, and by 400 if by 100). A table, not a switch on the month: a random
// month is a branch the processor cannot guess (plainDate is on the agency's hot path).
func daysIn(y, m int) int {
	if m == 2 && (y%4 != 0 || y%100 == 0 && y%400 != 0) {
		return 28
	}
	return monthDays[m]
}

// monthDays is the length of each month, February's in a leap year.
var monthDays = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// ValidateBets checks a BET lines block: exactly count '\n'-terminated lines (else
// ErrMalformed), each a valid bet (else ErrInvalidBet naming the first bad bet, 1-based).
func ValidateBets(bets []byte, count int) error {
	if n := bytes.Count(bets, []byte{'\n'}); n != count || (len(bets) > 0 && bets[len(bets)-1] != '\n') {
		return fmt.Errorf("count is %d but the batch does not hold exactly %d lines: %w", count, count, ErrMalformed)
	}
	for i := 1; len(bets) > 0; i++ {
		j := bytes.IndexByte(bets, '\n')
		if _, reason := ParseBetLine(bets[:j]); reason != "" {
			return fmt.Errorf("bet %d: %s: %w", i, reason, ErrInvalidBet)
		}
		bets = bets[j+1:]
	}
	return nil
}
