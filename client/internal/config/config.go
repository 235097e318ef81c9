// Package config owns the client's configuration: the YAML file (CLI_CONFIG, or config.yaml in
// the working directory), the CLI_* environment overrides, the defaults and the validation.
// Every validation error names the key it is about: "<key>: <problem>".
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"lottery/client/internal/logs"
)

// DefaultPath is the config file read when neither -config nor CLI_CONFIG names one. A missing
// file at the default path is not an error (defaults and environment apply); a missing file
// that was named explicitly is.
const DefaultPath = "config.yaml"

// Config is the validated configuration.
type Config struct {
	ID                  uint32
	ServerAddress       string
	LogLevel            logs.Level
	BatchMaxAmount      int
	BatchWindow         int
	DataPath            string
	RetryAttempts       int
	RetryInitialBackoff time.Duration
	RetryMaxBackoff     time.Duration
	IOTimeout           time.Duration
	WinnersTimeout      time.Duration

	// The agency's mutual TLS credentials (PEM file paths) and the name the central's
	// certificate must hold. Only the paths are checked here; internal/transport reads and
	// verifies the files.
	TLSCA         string
	TLSCert       string
	TLSKey        string
	TLSServerName string
}

// key describes one configuration key: its dotted YAML path, its environment variable and its
// default ("" means required, except for tls.serverName, whose default is the host of
// server.address).
type key struct {
	name string
	env  string
	def  string
}

var keys = []key{
	{"id", "CLI_ID", ""},
	{"server.address", "CLI_SERVER_ADDRESS", "server:12345"},
	{"log.level", "CLI_LOG_LEVEL", "INFO"},
	// 500 is more bets than an 8 kB frame can hold (430 of the shortest bet lines), so by default
	// the frame limit cuts every batch: a full frame costs the central one decode, one journal
	// line, one log line and one ACK, whatever the number of bets in it.
	{"batch.maxAmount", "CLI_BATCH_MAXAMOUNT", "500"},
	// 32 full frames (256 kB held at most) in flight: with 16, a worker of the central that
	// syncs a group comes back to fewer batches, so its groups are smaller and its syncs more
	// (the default run 5 % shorter with 32; 64 is no shorter).
	{"batch.window", "CLI_BATCH_WINDOW", "32"},
	{"data.path", "CLI_DATA_PATH", "/data/agency.csv"},
	// 30 attempts with the backoff below wait about 1 to 2 minutes in all: long enough to ride
	// out a restart of the central (a few seconds, plus Docker's restart delay).
	{"retry.attempts", "CLI_RETRY_ATTEMPTS", "30"},
	{"retry.initialBackoff", "CLI_RETRY_INITIALBACKOFF", "100ms"},
	{"retry.maxBackoff", "CLI_RETRY_MAXBACKOFF", "5s"},
	{"io.timeout", "CLI_IO_TIMEOUT", "10s"},
	{"winners.timeout", "CLI_WINNERS_TIMEOUT", "10m"},
	{"tls.ca", "CLI_TLS_CA", "/run/secrets/ca.pem"},
	{"tls.cert", "CLI_TLS_CERT", "/run/secrets/agency.pem"},
	{"tls.key", "CLI_TLS_KEY", "/run/secrets/agency-key.pem"},
	{"tls.serverName", "CLI_TLS_SERVERNAME", ""},
}

// file mirrors the YAML layout; every leaf is read as a string and parsed here, so a bad value
// is reported with its key rather than as a YAML type error.
type file struct {
	ID     *string `yaml:"id"`
	Server struct {
		Address *string `yaml:"address"`
	} `yaml:"server"`
	Log struct {
		Level *string `yaml:"level"`
	} `yaml:"log"`
	Batch struct {
		MaxAmount *string `yaml:"maxAmount"`
		Window    *string `yaml:"window"`
	} `yaml:"batch"`
	Data struct {
		Path *string `yaml:"path"`
	} `yaml:"data"`
	Retry struct {
		Attempts       *string `yaml:"attempts"`
		InitialBackoff *string `yaml:"initialBackoff"`
		MaxBackoff     *string `yaml:"maxBackoff"`
	} `yaml:"retry"`
	IO struct {
		Timeout *string `yaml:"timeout"`
	} `yaml:"io"`
	Winners struct {
		Timeout *string `yaml:"timeout"`
	} `yaml:"winners"`
	TLS struct {
		CA         *string `yaml:"ca"`
		Cert       *string `yaml:"cert"`
		Key        *string `yaml:"key"`
		ServerName *string `yaml:"serverName"`
	} `yaml:"tls"`
}

// Load reads the configuration. path is the -config flag ("" if not given); then CLI_CONFIG;
// then DefaultPath. getenv is os.Getenv outside tests. An environment variable set to the empty
// string counts as unset.
func Load(path string, getenv func(string) string) (Config, error) {
	explicit := true
	if path == "" {
		path = getenv("CLI_CONFIG")
	}
	if path == "" {
		path, explicit = DefaultPath, false
	}
	raw, err := os.ReadFile(path)
	var f file
	switch {
	case err == nil:
		var simple bool
		if f, simple = parseSimple(raw); simple {
			break // config.yaml's plain layout: read as yaml.v3 would (simple.go)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		// io.EOF: an empty file.
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	case !explicit && errors.Is(err, fs.ErrNotExist):
		// No file at the default path: the defaults and the environment apply.
	default:
		return Config{}, fmt.Errorf("config file: %w", err)
	}

	vals := make(map[string]string, len(keys))
	for _, k := range keys {
		v := k.def
		if p := *f.slot(k.name); p != nil {
			v = *p
		}
		if e := getenv(k.env); e != "" {
			v = e
		}
		vals[k.name] = strings.TrimSpace(v)
	}
	return parse(vals)
}

func parse(v map[string]string) (Config, error) {
	var c Config
	id, err := intIn(v, "id", 1, 1<<32-1)
	if err != nil {
		return c, err
	}
	c.ID = uint32(id)

	c.ServerAddress = v["server.address"]
	host, port, err := net.SplitHostPort(c.ServerAddress)
	if err != nil {
		return c, fmt.Errorf("server.address: %q is not host:port", c.ServerAddress)
	}
	if host == "" {
		return c, fmt.Errorf("server.address: %q has an empty host", c.ServerAddress)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return c, fmt.Errorf("server.address: port %q is not a number from 1 to 65535", port)
	}

	if c.LogLevel, err = logs.ParseLevel(v["log.level"]); err != nil {
		return c, fmt.Errorf("log.level: %w", err)
	}
	if c.BatchMaxAmount, err = intIn(v, "batch.maxAmount", 1, 65535); err != nil {
		return c, err
	}
	// Every batch in flight is held until acknowledged (up to 8 kB each), so the window is
	// bounded: 256 frames is 2 MiB, far more than it takes to keep one connection busy.
	if c.BatchWindow, err = intIn(v, "batch.window", 1, 256); err != nil {
		return c, err
	}
	if c.DataPath = v["data.path"]; c.DataPath == "" {
		return c, fmt.Errorf("data.path: must not be empty")
	}
	if c.RetryAttempts, err = intIn(v, "retry.attempts", 1, 1<<31-1); err != nil {
		return c, err
	}
	if c.RetryInitialBackoff, err = positiveDuration(v, "retry.initialBackoff"); err != nil {
		return c, err
	}
	if c.RetryMaxBackoff, err = positiveDuration(v, "retry.maxBackoff"); err != nil {
		return c, err
	}
	if c.RetryMaxBackoff < c.RetryInitialBackoff {
		return c, fmt.Errorf("retry.maxBackoff: %s is less than retry.initialBackoff %s", c.RetryMaxBackoff, c.RetryInitialBackoff)
	}
	if c.IOTimeout, err = positiveDuration(v, "io.timeout"); err != nil {
		return c, err
	}
	if c.WinnersTimeout, err = positiveDuration(v, "winners.timeout"); err != nil {
		return c, err
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"tls.ca", &c.TLSCA}, {"tls.cert", &c.TLSCert}, {"tls.key", &c.TLSKey}} {
		if *p.dst = v[p.name]; *p.dst == "" {
			return c, fmt.Errorf("%s: must not be empty", p.name)
		}
	}
	// The central's certificate is checked for the name the agency dials unless told otherwise
	// (e.g. an address that is an IP or an alias the certificate does not hold).
	if c.TLSServerName = v["tls.serverName"]; c.TLSServerName == "" {
		c.TLSServerName = host
	}
	if strings.ContainsAny(c.TLSServerName, " /:") && net.ParseIP(c.TLSServerName) == nil {
		return c, fmt.Errorf("tls.serverName: %q is not a DNS name or an IP address", c.TLSServerName)
	}
	return c, nil
}

func intIn(v map[string]string, name string, lo, hi int64) (int, error) {
	s := v[name]
	if s == "" {
		return 0, fmt.Errorf("%s: required", name)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s: %q is not an integer from %d to %d", name, s, lo, hi)
	}
	return int(n), nil
}

func positiveDuration(v map[string]string, name string) (time.Duration, error) {
	s := v[name]
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration (e.g. 100ms, 5s, 10m)", name, s)
	}
	return d, nil
}
