// Package certstest owns the TLS test helpers shared by the agency's packages: credentials
// issued by one CA in several directories (a rotation, a second central, an expired agency),
// and the central's side of a mutual TLS connection.
package certstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"lottery/client/internal/certs"
)

// WithCA returns a new temporary directory holding a copy of caDir's CA certificate and key:
// certs.Issue into it then signs with that CA instead of creating one.
func WithCA(t testing.TB, caDir string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{certs.CAFile, certs.CAKeyFile} {
		data, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// CentralTLS is the central's side: TLS 1.3 only, serverDir's central certificate, and a
// certificate required of every agency, verified against clientCADir's CA.
func CentralTLS(t testing.TB, serverDir, clientCADir string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(serverDir, certs.ServerFile), filepath.Join(serverDir, certs.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(clientCADir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}
