// This file owns the ten message structs, one per message type (docs/protocol.md); encode.go
// turns them into frames and decode.go payloads back into them.

package protocol

// Message is one decoded protocol message.
type Message interface {
	Type() Type
}

// Echo (0x01): any payload, echoed back unchanged.
type Echo struct {
	Payload []byte
}

// Bet (0x02): one batch, the agency's bets First .. First+Count-1 (positions among its valid
// bets, from 1). Chain is the chain of its bets before First; Bets is the raw lines block
// (each line ends with '\n'), whose number of lines Count must equal.
type Bet struct {
	Agency uint32
	First  uint32
	Count  uint16
	Chain  uint32
	Bets   []byte
}

// Ack (0x03): the agency's bets 1..Stored are durably stored; Stored is the last position of
// the batch answered.
type Ack struct {
	Agency uint32
	Stored uint32
}

// Fin (0x04): the agency has sent all its bets: Bets of them (the last position), whose chain
// is Chain.
type Fin struct {
	Agency uint32
	Bets   uint32
	Chain  uint32
}

// FinAck (0x05): the FIN is durably recorded.
type FinAck struct {
	Agency uint32
}

// WinnersQuery (0x06): ask for the agency's winners.
type WinnersQuery struct {
	Agency uint32
}

// Winners (0x07): one page of the agency's winning documents.
type Winners struct {
	Agency    uint32
	Last      bool
	Documents []string
}

// Error (0x08): a request was refused. Position is the First of the BET refused, else 0.
type Error struct {
	Code     ErrorCode
	Position uint32
	Reason   string
}

// Hello (0x09): the agency asks what the central holds of it; sent first on every connection.
type Hello struct {
	Agency uint32
}

// Resume (0x0A): the answer to Hello: the agency's bets 1..Stored are durably stored, Chain is
// their chain, and Finished says whether its FIN is recorded.
type Resume struct {
	Agency   uint32
	Stored   uint32
	Chain    uint32
	Finished bool
}

// Type implements Message.
func (Echo) Type() Type { return TypeEcho }

// Type implements Message.
func (Bet) Type() Type { return TypeBet }

// Type implements Message.
func (Ack) Type() Type { return TypeAck }

// Type implements Message.
func (Fin) Type() Type { return TypeFin }

// Type implements Message.
func (FinAck) Type() Type { return TypeFinAck }

// Type implements Message.
func (WinnersQuery) Type() Type { return TypeWinnersQuery }

// Type implements Message.
func (Winners) Type() Type { return TypeWinners }

// Type implements Message.
func (Error) Type() Type { return TypeError }

// Type implements Message.
func (Hello) Type() Type { return TypeHello }

// Type implements Message.
func (Resume) Type() Type { return TypeResume }
