// Package protocol owns the bytes of the lottery wire protocol, version 2 (docs/protocol.md):
// the 6-byte frame header, the ten message types, their encoders and decoders, the sentinel
// errors, the bet line rules (RFC 4180 records with canonical quoting) and the checksum chain
// of an agency's bets. Nothing here dials or sets deadlines; callers own the socket.
package protocol
