//go:build !race

// This file owns the race-detector flag of the bets tests (see race_test.go).
package bets

const raceEnabled = false
