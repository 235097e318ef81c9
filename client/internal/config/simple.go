// This file owns the fast path of the config file: a file in the plain layout of config.yaml
// (comments, "key: value" lines, one level of sections) is read here; any other file goes to
// gopkg.in/yaml.v3, which reads and reports on everything.

package config

import (
	"bytes"
	"unicode/utf8"
)

// parseSimple reads raw when it is in config.yaml's plain layout, and reports whether it was:
// printable ASCII but in comments (see printable); blank and comment lines anywhere; at column 0 "id: <value>" or a
// section key alone ("server:"), followed by its keys "key: <value>", all at one indentation
// of spaces; a value a plain word (letters, digits and "_./:@+-", not starting with one of
// ":@+-", not ending with ':', not a null) optionally followed by a " # comment"; every key
// known and given once, every section holding at least one key. What it reads is exactly what
// yaml.v3 (KnownFields) decodes from the same file: FuzzSimpleMatchesYAML checks it. Anything
// else, quotes, flow style, tabs, a BOM, an unknown or repeated key, makes ok false and
// changes nothing: yaml.v3 then reads the file and reports its errors as before.
//
// Why: decoding config.yaml with yaml.v3 cost about 0.3 ms of CPU at every agency start
// (its scanner keeps every comment, and config.yaml is mostly comments), some 7% of an agency
// run of 1,000 bets. This reads it in a few microseconds.
func parseSimple(raw []byte) (f file, ok bool) {
	section := "" // the current section, "" at the top level
	indent := 0   // the indentation of the current section's keys, 0 before its first
	var sections []string
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte{'\n'})
		if !printable(line) {
			return file{}, false
		}
		text := bytes.TrimLeft(line, " ")
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		key, value, ok := simpleKeyValue(text)
		if !ok {
			return file{}, false
		}
		at := len(line) - len(text)
		switch {
		case at == 0 && section != "" && indent == 0:
			return file{}, false // a section with no key is null in YAML: left to yaml.v3
		case at == 0 && value == "":
			if !isSection(key) || contains(sections, key) {
				return file{}, false
			}
			sections = append(sections, key)
			section, indent = key, 0
		case at == 0:
			section = ""
			if !f.setOnce(key, value) {
				return file{}, false
			}
		default:
			if section == "" || value == "" || indent != 0 && at != indent {
				return file{}, false
			}
			indent = at
			if !f.setOnce(section+"."+key, value) {
				return file{}, false
			}
		}
	}
	if section != "" && indent == 0 {
		return file{}, false
	}
	return f, true
}

// printable reports whether line holds only printable ASCII and characters that yaml.v3 takes
// as printable and not as a line break: U+00A0 to U+D7FF and U+E000 to U+FFFD, but U+FEFF
// (a BOM), U+2028 and U+2029 (line and paragraph separators), in valid UTF-8. Keys and values
// are ASCII (simpleKeyValue), so the others can only be in a comment.
func printable(line []byte) bool {
	for i := 0; i < len(line); {
		c := line[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7F {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(line[i:])
		if size == 1 || r < 0xA0 || r > 0xD7FF && r < 0xE000 || r > 0xFFFD || r == 0xFEFF || r == 0x2028 || r == 0x2029 {
			return false
		}
		i += size
	}
	return true
}

// simpleKeyValue splits a line without its indentation, "key:", "key: value" or either with a
// " # comment", into its key (letters) and its plain value ("" for none).
func simpleKeyValue(text []byte) (key, value string, ok bool) {
	k, rest, found := bytes.Cut(text, []byte{':'})
	if !found || len(k) == 0 || len(rest) > 0 && rest[0] != ' ' {
		return "", "", false
	}
	for _, c := range k {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return "", "", false
		}
	}
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) == 0 || rest[0] == '#' {
		return string(k), "", true
	}
	v, after, _ := bytes.Cut(rest, []byte{' '})
	if after = bytes.TrimLeft(after, " "); len(after) > 0 && after[0] != '#' {
		return "", "", false // a value with spaces: left to yaml.v3
	}
	if !plainWord(v) {
		return "", "", false
	}
	return string(k), string(v), true
}

// plainWord reports whether v is a YAML plain scalar that yaml.v3 decodes into a string as it
// is: no indicator that starts another kind of node, no ": " or " #", not a null.
func plainWord(v []byte) bool {
	if len(v) == 0 || bytes.IndexByte([]byte(":@+-"), v[0]) >= 0 || v[len(v)-1] == ':' {
		return false
	}
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || bytes.IndexByte([]byte("_./:@+-"), c) >= 0) {
			return false
		}
	}
	switch string(v) {
	case "null", "Null", "NULL":
		return false
	}
	return true
}

// setOnce sets the value of the key named name ("id", "server.address"), which must be a key
// of the file not set before.
func (f *file) setOnce(name, value string) bool {
	p := f.slot(name)
	if p == nil || *p != nil {
		return false
	}
	*p = &value
	return true
}

// slot is where the value of the key named name goes, or nil for an unknown key.
func (f *file) slot(name string) **string {
	switch name {
	case "id":
		return &f.ID
	case "server.address":
		return &f.Server.Address
	case "log.level":
		return &f.Log.Level
	case "batch.maxAmount":
		return &f.Batch.MaxAmount
	case "batch.window":
		return &f.Batch.Window
	case "data.path":
		return &f.Data.Path
	case "retry.attempts":
		return &f.Retry.Attempts
	case "retry.initialBackoff":
		return &f.Retry.InitialBackoff
	case "retry.maxBackoff":
		return &f.Retry.MaxBackoff
	case "io.timeout":
		return &f.IO.Timeout
	case "winners.timeout":
		return &f.Winners.Timeout
	case "tls.ca":
		return &f.TLS.CA
	case "tls.cert":
		return &f.TLS.Cert
	case "tls.key":
		return &f.TLS.Key
	case "tls.serverName":
		return &f.TLS.ServerName
	}
	return nil
}

// isSection reports whether name is a section of the file (the first part of a dotted key).
func isSection(name string) bool {
	switch name {
	case "server", "log", "batch", "data", "retry", "io", "winners", "tls":
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
