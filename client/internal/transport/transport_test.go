// Tests of the agency's TLS configuration: built from credentials issued at test time by
// internal/certs (never committed), TLS 1.3 only, and refused at start, naming the key, for
// every bad file: missing, unreadable, not PEM, a key that is not the certificate's, a
// certificate of another CA, an expired one, one that is not a client certificate, one of
// another agency, a CA file that is not a CA or not valid now.

package transport

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lottery/client/internal/certs"
	"lottery/client/internal/certs/certstest"
	"lottery/client/internal/config"
)

// issue issues a CA, a central certificate and agencies 1..3 into a new temporary directory.
func issue(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Issue(certs.Request{Dir: dir, Agencies: 3, ServerNames: []string{"server", "127.0.0.1"}, Days: 30, CADays: 60}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// issueWithCA issues agencies 1..3 signed by the CA of caDir into a new temporary directory,
// starting at notBefore for days.
func issueWithCA(t *testing.T, caDir string, notBefore time.Time, days int) string {
	t.Helper()
	dir := certstest.WithCA(t, caDir)
	req := certs.Request{Dir: dir, Agencies: 3, ServerNames: []string{"server"}, NotBefore: notBefore, Days: days, CADays: 1}
	if _, err := certs.Issue(req); err != nil {
		t.Fatal(err)
	}
	return dir
}

// agencyConfig is agency id's configuration with the credentials of dir.
func agencyConfig(dir string, id uint32) config.Config {
	return config.Config{
		ID:            id,
		TLSCA:         filepath.Join(dir, certs.CAFile),
		TLSCert:       filepath.Join(dir, certs.AgencyFile(int(id))),
		TLSKey:        filepath.Join(dir, certs.AgencyKeyFile(int(id))),
		TLSServerName: "server",
	}
}

func TestClientBuildsAMutualTLS13Config(t *testing.T) {
	dir := issue(t)
	c, err := Client(agencyConfig(dir, 3))
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 {
		t.Fatalf("versions %x..%x, want TLS 1.3 only", c.MinVersion, c.MaxVersion)
	}
	if c.InsecureSkipVerify || c.VerifyPeerCertificate != nil || c.VerifyConnection != nil {
		t.Fatal("the central's certificate must be verified by crypto/tls, with nothing added or skipped")
	}
	if c.ServerName != "server" {
		t.Fatalf("ServerName %q", c.ServerName)
	}
	if len(c.Certificates) != 1 || c.Certificates[0].Leaf == nil || c.Certificates[0].Leaf.Subject.CommonName != "agency-3" {
		t.Fatalf("certificates %+v, want agency-3's", c.Certificates)
	}
	// RootCAs is the project CA: it verifies the central's certificate for its name.
	server, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.ServerFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.RootCAs, DNSName: "server"}); err != nil {
		t.Fatalf("the CA pool does not verify the central: %v", err)
	}
	other := issue(t)
	otherServer, err := tls.LoadX509KeyPair(filepath.Join(other, certs.ServerFile), filepath.Join(other, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, _ := x509.ParseCertificate(otherServer.Certificate[0])
	if _, err := otherLeaf.Verify(x509.VerifyOptions{Roots: c.RootCAs, DNSName: "server"}); err == nil {
		t.Fatal("the CA pool verifies a central of another CA")
	}
}

func TestAgencyNameIsTheIssuedOne(t *testing.T) {
	for _, id := range []uint32{1, 3, 99} {
		if got, want := AgencyName(id), certs.AgencyName(int(id)); got != want {
			t.Errorf("AgencyName(%d) = %q, certs says %q", id, got, want)
		}
	}
}

// TestClientRefusesBadFiles checks each bad credential stops the agency with an error naming
// its key (the config line's "<key>: <why>") and saying why.
func TestClientRefusesBadFiles(t *testing.T) {
	dir := issue(t)
	other := issue(t)
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	expired := issueWithCA(t, dir, old, 1)
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		id     uint32
		change func(c *config.Config)
		key    string
		why    []string
	}{
		{"missing CA", 3, func(c *config.Config) { c.TLSCA = filepath.Join(dir, "nope.pem") }, "tls.ca", []string{"nope.pem", "no such file"}},
		{"missing certificate", 3, func(c *config.Config) { c.TLSCert = filepath.Join(dir, "nope.pem") }, "tls.cert", []string{"no such file"}},
		{"missing key", 3, func(c *config.Config) { c.TLSKey = filepath.Join(dir, "nope.pem") }, "tls.key", []string{"no such file"}},
		{"unreadable CA", 3, func(c *config.Config) { c.TLSCA = dir }, "tls.ca", []string{"is a directory"}},
		{"unreadable certificate", 3, func(c *config.Config) { c.TLSCert = dir }, "tls.cert", []string{"is a directory"}},
		{"unreadable key", 3, func(c *config.Config) { c.TLSKey = dir }, "tls.key", []string{"is a directory"}},
		{"CA not PEM", 3, func(c *config.Config) { c.TLSCA = junk }, "tls.ca", []string{"holds no PEM CERTIFICATE"}},
		{"certificate not PEM", 3, func(c *config.Config) { c.TLSCert = junk }, "tls.cert", []string{"holds no PEM CERTIFICATE"}},
		{"key not PEM", 3, func(c *config.Config) { c.TLSKey = junk }, "tls.key", []string{"holds no PEM private key"}},
		{"key as certificate", 3, func(c *config.Config) { c.TLSCert = c.TLSKey }, "tls.cert", []string{"is a PRIVATE KEY, not a CERTIFICATE"}},
		{"certificate as key", 3, func(c *config.Config) { c.TLSKey = c.TLSCert }, "tls.key", []string{"CERTIFICATE is not a private key"}},
		{"key of another certificate", 3, func(c *config.Config) { c.TLSKey = filepath.Join(dir, certs.AgencyKeyFile(2)) }, "tls.key",
			[]string{"is not the private key of the certificate", certs.AgencyFile(3)}},
		{"certificate of another CA", 3, func(c *config.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(other, certs.AgencyFile(3)), filepath.Join(other, certs.AgencyKeyFile(3))
		}, "tls.cert", []string{"not a valid agency certificate of the CA", "signed by unknown authority"}},
		{"the CA of another set", 3, func(c *config.Config) { c.TLSCA = filepath.Join(other, certs.CAFile) }, "tls.cert",
			[]string{"signed by unknown authority"}},
		{"expired certificate", 3, func(c *config.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(expired, certs.AgencyFile(3)), filepath.Join(expired, certs.AgencyKeyFile(3))
		}, "tls.cert", []string{"expired", "2020-01-02T00:00:00Z"}},
		// Expired, and agency-2's configured as agency 3: the trust check comes first.
		{"expired certificate of agency 2 as id 3", 3, func(c *config.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(expired, certs.AgencyFile(2)), filepath.Join(expired, certs.AgencyKeyFile(2))
		}, "tls.cert", []string{"expired"}},
		{"valid certificate of agency 2 as id 3", 3, func(c *config.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(dir, certs.AgencyFile(2)), filepath.Join(dir, certs.AgencyKeyFile(2))
		}, "tls.cert", []string{`the certificate of "agency-2", but this agency is id 3 ("agency-3")`}},
		{"the central's certificate", 3, func(c *config.Config) {
			c.TLSCert, c.TLSKey = filepath.Join(dir, certs.ServerFile), filepath.Join(dir, certs.ServerKeyFile)
		}, "tls.cert", []string{"incompatible key usage"}},
		{"an agency certificate as the CA", 3, func(c *config.Config) { c.TLSCA = filepath.Join(dir, certs.AgencyFile(1)) }, "tls.ca",
			[]string{"not a CA", `"agency-1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := agencyConfig(dir, tt.id)
			tt.change(&cfg)
			c, err := Client(cfg)
			if err == nil || c != nil {
				t.Fatalf("Client accepted it: %v", c)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.key+": ") {
				t.Fatalf("error %q does not start with %q", msg, tt.key+": ")
			}
			for _, why := range tt.why {
				if !strings.Contains(msg, why) {
					t.Errorf("error %q does not say %q", msg, why)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line", msg)
			}
		})
	}
}

func TestClientRefusesAFileItCannotRead(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads a file of mode 0000")
	}
	dir := issue(t)
	cfg := agencyConfig(dir, 3)
	if err := os.Chmod(cfg.TLSKey, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Client(cfg); err == nil || !strings.HasPrefix(err.Error(), "tls.key: ") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("error %v, want tls.key: ... permission denied", err)
	}
}

// TestClientRefusesACANotValidNow checks a CA that has expired (or is not valid yet) is named
// as the problem, not the agency's certificate it signed.
func TestClientRefusesACANotValidNow(t *testing.T) {
	dir := issue(t) // the CA is valid for 60 days from now
	for _, now := range []time.Time{time.Now().AddDate(0, 0, 61), time.Now().AddDate(0, 0, -1)} {
		_, err := client(agencyConfig(dir, 3), now)
		if err == nil || !strings.HasPrefix(err.Error(), "tls.ca: ") || !strings.Contains(err.Error(), "not valid now") {
			t.Errorf("at %v: error %v, want tls.ca: ... not valid now", now, err)
		}
	}
}
