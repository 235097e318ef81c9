// Tests of parseSimple, the fast path of the config file: whatever it reads, yaml.v3 (as Load
// uses it: KnownFields) must read too and to the same values, on every input; and it must
// take the repository's config.yaml, which is what it is for.

package config

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// yamlFile decodes raw as Load's slow path does.
func yamlFile(raw []byte) (file, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return file{}, err
	}
	return f, nil
}

// simpleAgrees fails t if parseSimple reads raw and yaml.v3 does not, or reads other values.
// It returns whether parseSimple read it.
func simpleAgrees(t *testing.T, raw []byte) bool {
	t.Helper()
	got, ok := parseSimple(raw)
	if !ok {
		return false
	}
	want, err := yamlFile(raw)
	if err != nil {
		t.Fatalf("%q: the fast path reads it, yaml.v3 fails: %v", raw, err)
	}
	for _, k := range keys {
		g, w := *got.slot(k.name), *want.slot(k.name)
		if (g == nil) != (w == nil) || g != nil && *g != *w {
			t.Fatalf("%q: %s: the fast path reads %s, yaml.v3 %s", raw, k.name, show(g), show(w))
		}
	}
	return true
}

func show(p *string) string {
	if p == nil {
		return "nothing"
	}
	return "\"" + *p + "\""
}

// TestEveryKeyHasASlot: Load looks every key up with slot.
func TestEveryKeyHasASlot(t *testing.T) {
	var f file
	for _, k := range keys {
		if f.slot(k.name) == nil {
			t.Errorf("key %s has no slot", k.name)
		}
	}
}

func TestSimpleTakesTheRepositoryFile(t *testing.T) {
	raw, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !simpleAgrees(t, raw) {
		t.Fatal("the fast path does not read config.yaml")
	}
}

func TestSimple(t *testing.T) {
	tests := []struct {
		body string
		ok   bool // the fast path reads it
	}{
		{"", true},
		{"# only a comment\n\n", true},
		{"id: 3\n", true},
		{"id: 3   # the agency\nserver:\n    address: a.b:1\n", true},
		{"server: # comment\n  address: x:1\n  # indented comment\n# column 0 comment\n  \nlog:\n level: DEBUG\n", true},
		{"tls:\n  ca: /run/secrets/ca.pem\n  serverName: server\nid: 1", true},
		{"retry:\n  attempts: 0x1F\n  initialBackoff: .5s\n  maxBackoff: 1e3\n", true},
		{"id: true\nlog:\n  level: yes\n", true},
		{"# (\"Pérez, Juan\") €\nid: 1 # ñ\n", true},
		{"# a\u2028id: 1\n", false},                          // a line separator: a line break to YAML
		{"# a\u0085id: 1\n", false},                          // NEL
		{"# a\xff\nid: 1\n", false},                          // not UTF-8
		{"# \U0001F600\nid: 1\n", false},                     // yaml.v3 refuses characters past U+FFFF
		{"id: \"3\"\n", false},                               // quotes
		{"id: 3 4\n", false},                                 // a value with a space
		{"id: null\n", false},                                // null
		{"id: ~\n", false},                                   // null
		{"id:\n", false},                                     // null
		{"server:\nid: 1\n", false},                          // a null section
		{"server:\n", false},                                 // a null section
		{"server: x\n", false},                               // a section with a value
		{"id: 1\nid: 2\n", false},                            // a repeated key
		{"tls:\n  ca: a\ntls:\n  key: b\n", false},           // a repeated section
		{"server:\n  address: a\n   port: b\n", false},       // two indentations
		{"server:\n  address: a\n    b\n", false},            // a continued value
		{"  id: 1\n", false},                                 // an indented top level
		{"id: 1\r\n", false},                                 // CRLF
		{"server:\n\taddress: a\n", false},                   // a tab
		{"\xef\xbb\xbfid: 1\n", false},                       // a BOM
		{"bogus: 1\n", false},                                // an unknown key
		{"id: [1]\n", false},                                 // flow style
		{"id: -1\n", false},                                  // a leading indicator
		{"id: a:\n", false},                                  // a trailing ':'
		{"id: a#b\n", false},                                 // '#' inside a value
		{"id : 1\n", false},                                  // a space before ':'
		{"---\nid: 1\n", false},                              // a document marker
		{"server:\n  address:\n    deeper: x\n", false},      // deeper nesting
		{"data:\n  path: /datos/agencia-ñ.csv\n", false},     // not ASCII
		{"winners:\n  timeout: 10m\n  timeout: 5m\n", false}, // a repeated key in a section
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			if got := simpleAgrees(t, []byte(tt.body)); got != tt.ok {
				t.Fatalf("fast path reads it: %v, want %v", got, tt.ok)
			}
		})
	}
}

// TestSimpleRandom compares the two paths on random files built from pieces of config files,
// on every run (FuzzSimpleMatchesYAML explores further when fuzzing).
func TestSimpleRandom(t *testing.T) {
	pieces := []string{"é", "\u2028", "\u0085", "\xff", "id", "server", "address", "tls", "ca", "log", "level", "bogus", ":", ": ", " ", "  ", "\n",
		"\n  ", "# c", " # c", "1", "x:1", "a.b", "/p", "-", "@", "+", "_", "null", "~", "'", "\"", "[", "\t", "..."}
	rng := rand.New(rand.NewPCG(7574, 3))
	read := 0
	for range 100_000 {
		var b strings.Builder
		for k := rng.IntN(16); k >= 0; k-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		if simpleAgrees(t, []byte(b.String())) {
			read++
		}
	}
	if read < 100 {
		t.Fatalf("the fast path read only %d of the random files: the test checks too little", read)
	}
}

// FuzzSimpleMatchesYAML: on any input, what the fast path reads yaml.v3 reads the same.
func FuzzSimpleMatchesYAML(f *testing.F) {
	if raw, err := os.ReadFile("../../config.yaml"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("id: 3\nserver:\n  address: a:1\ntls:\n    serverName: x # c\n"))
	f.Add([]byte("retry:\n  attempts: 0x1F\n  initialBackoff: .5s\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		simpleAgrees(t, raw)
	})
}

// BenchmarkLoadRepositoryFile measures Load of config.yaml (the fast path) against yaml.v3
// decoding the same file (BenchmarkYAMLRepositoryFile), warm: a cold start costs more.
func BenchmarkLoadRepositoryFile(b *testing.B) {
	getenv := env(map[string]string{"CLI_ID": "1"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load("../../config.yaml", getenv); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkYAMLRepositoryFile(b *testing.B) {
	raw, err := os.ReadFile("../../config.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := yamlFile(raw); err != nil {
			b.Fatal(err)
		}
	}
}
