// Package bets owns the agency's bets on the client side: the streaming reader of its RFC 4180
// CSV file (one bounded record at a time, never the whole file: encoding/csv, with a fast path
// of the same rules for a line without quotes), which turns each valid row into its canonical
// wire line, and the batch builder that numbers the bets by
// position, keeps their checksum chain and packs their lines into BET frames within
// batch.maxAmount and the 8192-byte frame limit.
package bets
