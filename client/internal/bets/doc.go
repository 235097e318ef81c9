// Package bets owns the agency's bets on the client side: the streaming CSV reader (one row at
// a time, never the whole file) and the batch builder that packs valid bet lines into BET
// frames within batch.maxAmount and the 8192-byte frame limit.
package bets
