// Package transport owns the agency's side of mutual TLS 1.3 with the central: it reads the
// credentials the configuration names (tls.ca, tls.cert, tls.key), checks them once, at start,
// and builds the one *tls.Config every connection of the run uses. Everything is Go's
// crypto/tls and crypto/x509; verification is never turned off and there is no plaintext mode.
//
// Every error names the configuration key it is about ("tls.cert: <why>"), like the errors of
// internal/config, so the program stops with one line saying which file to fix.
package transport

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"lottery/client/internal/config"
)

// AgencyName is the subject common name of agency id's certificate ("agency-3"): the identity
// the central reads from it. internal/certs issues certificates with the same name.
func AgencyName(id uint32) string { return fmt.Sprintf("agency-%d", id) }

// Client reads and checks the agency's credentials and returns its TLS configuration: TLS 1.3
// only, the central verified against tls.ca for the name tls.serverName, and the agency's
// certificate and key presented to it. It fails, naming the key, on a missing or unreadable
// file, a file without the PEM it should hold, a key that is not the certificate's, a CA
// certificate that is not a CA or not valid now, an agency certificate that tls.ca does not
// verify for client authentication now (another CA, expired, not yet valid, not a client
// certificate), or one whose subject common name is not "agency-<id>".
func Client(cfg config.Config) (*tls.Config, error) {
	return client(cfg, time.Now())
}

func client(cfg config.Config, now time.Time) (*tls.Config, error) {
	roots, err := readCA(cfg.TLSCA, now)
	if err != nil {
		return nil, fmt.Errorf("tls.ca: %w", err)
	}
	chain, err := readCertificates(cfg.TLSCert)
	if err != nil {
		return nil, fmt.Errorf("tls.cert: %w", err)
	}
	leaf := chain[0]
	key, err := readKey(cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls.key: %w", err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("tls.key: %s is not the private key of the certificate %s (tls.cert)", cfg.TLSKey, cfg.TLSCert)
	}

	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("tls.cert: %s (%s) is not a valid agency certificate of the CA %s (tls.ca): %w",
			cfg.TLSCert, describe(leaf), cfg.TLSCA, err)
	}
	if want := AgencyName(cfg.ID); leaf.Subject.CommonName != want {
		return nil, fmt.Errorf("tls.cert: %s is the certificate of %q, but this agency is id %d (%q)",
			cfg.TLSCert, leaf.Subject.CommonName, cfg.ID, want)
	}

	pair := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		RootCAs:      roots,
		Certificates: []tls.Certificate{pair},
		ServerName:   cfg.TLSServerName,
		// An agency uploads its file in bulk: full 16 kB records from the start mean fewer
		// records for the central to read, instead of crypto/tls's small first records (sized
		// for a web page's first round trips).
		DynamicRecordSizingDisabled: true,
	}, nil
}

// describe names a certificate in an error: its subject and validity.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("subject %q, valid %s to %s", c.Subject.CommonName,
		c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// readCA reads the CA certificates of path: at least one, each a CA valid at now.
func readCA(path string, now time.Time) (*x509.CertPool, error) {
	cas, err := readCertificates(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		if !ca.BasicConstraintsValid || !ca.IsCA {
			return nil, fmt.Errorf("%s holds a certificate that is not a CA (%s)", path, describe(ca))
		}
		if now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
			return nil, fmt.Errorf("%s: the CA certificate is not valid now (%s)", path, describe(ca))
		}
		pool.AddCert(ca)
	}
	return pool, nil
}

// readCertificates reads the PEM CERTIFICATE blocks of path, in order (a certificate, then any
// intermediates); anything else in the file is an error.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // "open <path>: no such file or directory"
	}
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is a %s, not a CERTIFICATE", path, n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: %w", path, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM CERTIFICATE", path)
	}
	return certs, nil
}

// readKey reads the one private key of path: PKCS #8 ("PRIVATE KEY", what internal/certs
// writes), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY").
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM private key", path)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("%s holds more than one PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		err = fmt.Errorf("a PEM %s is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", path, key)
	}
	return signer, nil
}
