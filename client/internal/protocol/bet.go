// This file owns the bet line rules of docs/protocol.md (the same rules as
// server/lottery/protocol.py), checked by a hand-written single-pass parser.

package protocol

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// Reasons a bet line is invalid: the name of the first offending field, "fields" for a wrong
// number of fields, or "not UTF-8".
const (
	ReasonFirstName = "first_name"
	ReasonLastName  = "last_name"
	ReasonDocument  = "document"
	ReasonBirthdate = "birthdate"
	ReasonNumber    = "number"
	ReasonFields    = "fields"
	ReasonUTF8      = "not UTF-8"
)

// Field limits.
const (
	MaxNameBytes   = 100
	MaxDigits      = 10
	MaxBetLineSize = 2*MaxNameBytes + 2*MaxDigits + 10 + 4 // 234 bytes without the '\n'
)

// BetFields are the five fields of one bet line; the slices alias the line.
type BetFields struct {
	FirstName, LastName, Document, Birthdate, Number []byte
}

// ParseBetLine splits and checks one bet line, given without its '\n'. reason is "" when the
// line is valid, else the name of the first rule it breaks (see the Reason constants).
func ParseBetLine(line []byte) (f BetFields, reason string) {
	if !utf8.Valid(line) {
		return f, ReasonUTF8
	}
	var parts [5][]byte
	rest := line
	for i := 0; i < 4; i++ {
		j := bytes.IndexByte(rest, ',')
		if j < 0 {
			return f, ReasonFields
		}
		parts[i] = rest[:j]
		rest = rest[j+1:]
	}
	if bytes.IndexByte(rest, ',') >= 0 {
		return f, ReasonFields
	}
	parts[4] = rest
	f = BetFields{FirstName: parts[0], LastName: parts[1], Document: parts[2], Birthdate: parts[3], Number: parts[4]}
	switch {
	case !validName(f.FirstName):
		return f, ReasonFirstName
	case !validName(f.LastName):
		return f, ReasonLastName
	case !validDigits(f.Document):
		return f, ReasonDocument
	case !ValidDate(f.Birthdate):
		return f, ReasonBirthdate
	case !validDigits(f.Number):
		return f, ReasonNumber
	}
	return f, ""
}

// validName: 1 to 100 bytes, no ',', no '"', no control character. UTF-8 validity is checked
// on the whole line; multi-byte sequences only hold bytes >= 0x80, so a byte scan suffices.
func validName(b []byte) bool {
	if len(b) < 1 || len(b) > MaxNameBytes {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7F || c == ',' || c == '"' {
			return false
		}
	}
	return true
}

// validDigits: 1 to 10 ASCII digits.
func validDigits(b []byte) bool {
	if len(b) < 1 || len(b) > MaxDigits {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func digit(c byte) (int, bool) {
	if c < '0' || c > '9' {
		return 0, false
	}
	return int(c - '0'), true
}

func number(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		d, ok := digit(c)
		if !ok {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// ValidDate reports whether b is YYYY-MM-DD, a real calendar date with year 0001 to 9999.
func ValidDate(b []byte) bool {
	if len(b) != 10 || b[4] != '-' || b[7] != '-' {
		return false
	}
	y, ok1 := number(b[0:4])
	m, ok2 := number(b[5:7])
	d, ok3 := number(b[8:10])
	if !ok1 || !ok2 || !ok3 || y < 1 || m < 1 || m > 12 || d < 1 {
		return false
	}
	return d <= daysIn(y, m)
}

func daysIn(y, m int) int {
	switch m {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
}

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
