// Package protocol owns the bytes of the lottery wire protocol, version 1 (docs/protocol.md):
// the 6-byte frame header, the eight message types, their encoders and decoders, the sentinel
// errors and the bet line rules. Nothing here dials or sets deadlines; callers own the socket.
package protocol
