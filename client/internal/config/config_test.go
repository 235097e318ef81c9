// Tests of config loading: defaults, the repository's config.yaml, environment overrides and
// one error per bad value, each naming its key.

package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lottery/client/internal/logs"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	p := writeFile(t, "id: 3\n")
	c, err := Load(p, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ID: 3, ServerAddress: "server:12345", LogLevel: logs.Info, BatchMaxAmount: 500,
		BatchWindow: 32, DataPath: "/data/agency.csv", RetryAttempts: 30,
		RetryInitialBackoff: 100 * time.Millisecond, RetryMaxBackoff: 5 * time.Second,
		IOTimeout: 10 * time.Second, WinnersTimeout: 10 * time.Minute,
		TLSCA: "/run/secrets/ca.pem", TLSCert: "/run/secrets/agency.pem",
		TLSKey: "/run/secrets/agency-key.pem", TLSServerName: "server",
	}
	if c != want {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

// TestRepositoryConfigFile checks client/config.yaml loads and states exactly the defaults, so
// the file documents what an agency gets without it.
func TestRepositoryConfigFile(t *testing.T) {
	c, err := Load("../../config.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	defaults, err := Load("/dev/null", env(map[string]string{"CLI_ID": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if c != defaults {
		t.Fatalf("config.yaml %+v\ndefaults    %+v", c, defaults)
	}
}

// chdir changes the working directory for the test (testing.T.Chdir needs Go 1.24).
func chdir(t *testing.T, dir string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chdir(old) })
}

func TestMissingDefaultFileUsesEnv(t *testing.T) {
	chdir(t, t.TempDir())
	c, err := Load("", env(map[string]string{"CLI_ID": "7"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 7 {
		t.Fatalf("got %+v", c)
	}
	if _, err := Load("", env(nil)); err == nil || !strings.HasPrefix(err.Error(), "id: ") {
		t.Fatalf("no id anywhere: %v", err)
	}
}

func TestExplicitMissingFileFails(t *testing.T) {
	if _, err := Load("/nonexistent/config.yaml", env(map[string]string{"CLI_ID": "1"})); err == nil {
		t.Fatal("want an error for a missing -config file")
	}
	if _, err := Load("", env(map[string]string{"CLI_ID": "1", "CLI_CONFIG": "/nonexistent.yaml"})); err == nil {
		t.Fatal("want an error for a missing CLI_CONFIG file")
	}
}

func TestEnvOverrides(t *testing.T) {
	p := writeFile(t, "id: 1\nserver:\n  address: a:1\nbatch:\n  maxAmount: 5\n")
	c, err := Load("", env(map[string]string{
		"CLI_CONFIG":               p,
		"CLI_ID":                   "4",
		"CLI_SERVER_ADDRESS":       "127.0.0.1:9000",
		"CLI_LOG_LEVEL":            "debug",
		"CLI_BATCH_MAXAMOUNT":      "65535",
		"CLI_BATCH_WINDOW":         "2",
		"CLI_DATA_PATH":            "/tmp/x.csv",
		"CLI_RETRY_ATTEMPTS":       "3",
		"CLI_RETRY_INITIALBACKOFF": "1ms",
		"CLI_RETRY_MAXBACKOFF":     "2ms",
		"CLI_IO_TIMEOUT":           "3s",
		"CLI_WINNERS_TIMEOUT":      "1h",
		"CLI_TLS_CA":               "/s/ca.pem",
		"CLI_TLS_CERT":             "/s/agency-4.pem",
		"CLI_TLS_KEY":              "/s/agency-4-key.pem",
		"CLI_TLS_SERVERNAME":       "central.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ID: 4, ServerAddress: "127.0.0.1:9000", LogLevel: logs.Debug, BatchMaxAmount: 65535,
		BatchWindow: 2, DataPath: "/tmp/x.csv", RetryAttempts: 3,
		RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 2 * time.Millisecond,
		IOTimeout: 3 * time.Second, WinnersTimeout: time.Hour,
		TLSCA: "/s/ca.pem", TLSCert: "/s/agency-4.pem", TLSKey: "/s/agency-4-key.pem",
		TLSServerName: "central.example",
	}
	if c != want {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestFileValues(t *testing.T) {
	p := writeFile(t, `
id: 2
server: {address: "central:5000"}
log: {level: WARNING}
batch: {maxAmount: 10, window: 1}
data: {path: bets.csv}
retry: {attempts: 1, initialBackoff: 10ms, maxBackoff: 10ms}
io: {timeout: 1s}
winners: {timeout: 30s}
tls: {ca: c.pem, cert: a.pem, key: k.pem, serverName: 10.0.0.1}
`)
	c, err := Load(p, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 2 || c.ServerAddress != "central:5000" || c.LogLevel != logs.Warning || c.BatchMaxAmount != 10 ||
		c.BatchWindow != 1 || c.DataPath != "bets.csv" || c.RetryAttempts != 1 || c.WinnersTimeout != 30*time.Second ||
		c.TLSCA != "c.pem" || c.TLSCert != "a.pem" || c.TLSKey != "k.pem" || c.TLSServerName != "10.0.0.1" {
		t.Fatalf("got %+v", c)
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	tests := []struct {
		env string
		val string
		key string
	}{
		{"CLI_ID", "0", "id"},
		{"CLI_ID", "-1", "id"},
		{"CLI_ID", "abc", "id"},
		{"CLI_ID", "4294967296", "id"},
		{"CLI_SERVER_ADDRESS", "server", "server.address"},
		{"CLI_SERVER_ADDRESS", ":12345", "server.address"},
		{"CLI_SERVER_ADDRESS", "server:0", "server.address"},
		{"CLI_SERVER_ADDRESS", "server:http", "server.address"},
		{"CLI_LOG_LEVEL", "VERBOSE", "log.level"},
		{"CLI_BATCH_MAXAMOUNT", "0", "batch.maxAmount"},
		{"CLI_BATCH_MAXAMOUNT", "65536", "batch.maxAmount"},
		{"CLI_BATCH_MAXAMOUNT", "1.5", "batch.maxAmount"},
		{"CLI_BATCH_WINDOW", "0", "batch.window"},
		{"CLI_BATCH_WINDOW", "257", "batch.window"},
		{"CLI_BATCH_WINDOW", "1048576", "batch.window"},
		{"CLI_RETRY_ATTEMPTS", "0", "retry.attempts"},
		{"CLI_RETRY_INITIALBACKOFF", "100", "retry.initialBackoff"},
		{"CLI_RETRY_INITIALBACKOFF", "-1s", "retry.initialBackoff"},
		{"CLI_RETRY_MAXBACKOFF", "soon", "retry.maxBackoff"},
		{"CLI_RETRY_MAXBACKOFF", "10ms", "retry.maxBackoff"}, // below initialBackoff 100ms
		{"CLI_IO_TIMEOUT", "0s", "io.timeout"},
		{"CLI_WINNERS_TIMEOUT", "x", "winners.timeout"},
		{"CLI_TLS_SERVERNAME", "server:12345", "tls.serverName"},
		{"CLI_TLS_SERVERNAME", "a b", "tls.serverName"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.val, func(t *testing.T) {
			_, err := Load("/dev/null", env(map[string]string{"CLI_ID": "1", tt.env: tt.val}))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tt.key+": ") {
				t.Fatalf("error %q does not start with %q", err, tt.key+": ")
			}
		})
	}
	if _, err := Load(writeFile(t, "id: 1\ndata:\n  path: ''\n"), env(nil)); err == nil || !strings.HasPrefix(err.Error(), "data.path: ") {
		t.Fatalf("empty data.path: %v", err)
	}
	for _, key := range []string{"ca", "cert", "key"} {
		body := "id: 1\ntls:\n  " + key + ": ''\n"
		if _, err := Load(writeFile(t, body), env(nil)); err == nil || !strings.HasPrefix(err.Error(), "tls."+key+": ") {
			t.Errorf("empty tls.%s: %v", key, err)
		}
	}
}

// TestRangeLimitsAccepted checks the ends of the integer ranges are accepted.
func TestRangeLimitsAccepted(t *testing.T) {
	tests := []struct {
		env string
		val string
		get func(Config) int
	}{
		{"CLI_BATCH_WINDOW", "1", func(c Config) int { return c.BatchWindow }},
		{"CLI_BATCH_WINDOW", "256", func(c Config) int { return c.BatchWindow }},
		{"CLI_BATCH_MAXAMOUNT", "1", func(c Config) int { return c.BatchMaxAmount }},
		{"CLI_BATCH_MAXAMOUNT", "65535", func(c Config) int { return c.BatchMaxAmount }},
		{"CLI_RETRY_ATTEMPTS", "1", func(c Config) int { return c.RetryAttempts }},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.val, func(t *testing.T) {
			c, err := Load("/dev/null", env(map[string]string{"CLI_ID": "1", tt.env: tt.val}))
			if err != nil {
				t.Fatal(err)
			}
			if got := strconv.Itoa(tt.get(c)); got != tt.val {
				t.Fatalf("got %s", got)
			}
		})
	}
}

// TestServerNameDefaultsToTheHost checks the central's certificate is checked for the host the
// agency dials unless tls.serverName says otherwise.
func TestServerNameDefaultsToTheHost(t *testing.T) {
	tests := []struct {
		address, serverName, want string
	}{
		{"server:12345", "", "server"},
		{"127.0.0.1:5000", "", "127.0.0.1"},
		{"[::1]:5000", "", "::1"},
		{"127.0.0.1:5000", "localhost", "localhost"},
		{"10.1.2.3:5000", "central.lottery", "central.lottery"},
	}
	for _, tt := range tests {
		c, err := Load("/dev/null", env(map[string]string{
			"CLI_ID": "1", "CLI_SERVER_ADDRESS": tt.address, "CLI_TLS_SERVERNAME": tt.serverName,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if c.TLSServerName != tt.want {
			t.Errorf("address %s, serverName %q: got %q, want %q", tt.address, tt.serverName, c.TLSServerName, tt.want)
		}
	}
}

func TestBadYAML(t *testing.T) {
	for _, body := range []string{"id: [1\n", "id: 1\nbogus: 2\n", "server: 5\n"} {
		if _, err := Load(writeFile(t, body), env(nil)); err == nil {
			t.Errorf("%q: no error", body)
		}
	}
}
