//go:build race

// This file owns the race-detector flag of the bets tests (timing bounds are meaningless under
// -race, which slows the reader about twentyfold).
package bets

const raceEnabled = true
