// Package certs issues the project's TLS credentials with Go's crypto/x509: a CA, the central's
// certificate (for its service names) and one client certificate per agency, whose subject
// common name "agency-<N>" is the agency's identity. Keys are ECDSA P-256 (fast handshakes),
// written as PKCS #8 PEM with mode 0600. Issue never overwrites a file: it creates what is
// missing and reports it, so rotating a credential is deleting it and issuing again, and
// revoking every agency certificate at once is re-issuing the CA.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// File names in the credentials directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// AgencyFile and AgencyKeyFile name agency n's certificate and key.
func AgencyFile(n int) string    { return "agency-" + strconv.Itoa(n) + ".pem" }
func AgencyKeyFile(n int) string { return "agency-" + strconv.Itoa(n) + "-key.pem" }

// AgencyName is the subject common name of agency n's certificate: its verified identity.
func AgencyName(n int) string { return "agency-" + strconv.Itoa(n) }

// Request says what to issue.
type Request struct {
	Dir         string    // where the PEM files live
	Agencies    int       // issue agency-1 .. agency-N
	ServerNames []string  // DNS names or IP addresses the central's certificate is valid for
	NotBefore   time.Time // start of validity (zero: now, minus a minute of clock skew)
	Days        int       // validity of the server and agency certificates
	CADays      int       // validity of the CA certificate
}

// ErrCAKeyMissing is returned when a certificate must be issued but only the CA's certificate,
// not its key, is present: issuing with another CA would silently split the trust.
var ErrCAKeyMissing = errors.New("the CA certificate exists but its key does not")

// Issue creates every missing file of req and returns the names it created, in order.
func Issue(req Request) ([]string, error) {
	if err := os.MkdirAll(req.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials directory: %w", err)
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Minute)
	}
	is := issuer{dir: req.Dir, notBefore: notBefore}
	if err := is.loadOrCreateCA(req.CADays); err != nil {
		return is.created, err
	}
	leaves := []leaf{{ServerFile, ServerKeyFile, func() (*x509.Certificate, error) { return serverTemplate(req.ServerNames) }}}
	for n := 1; n <= req.Agencies; n++ {
		leaves = append(leaves, leaf{AgencyFile(n), AgencyKeyFile(n), func() (*x509.Certificate, error) { return agencyTemplate(n), nil }})
	}
	for _, l := range leaves {
		if is.exists(l.cert) && is.exists(l.key) {
			continue
		}
		tmpl, err := l.template()
		if err != nil {
			return is.created, err
		}
		if err := is.issueLeaf(l.cert, l.key, tmpl, req.Days); err != nil {
			return is.created, err
		}
	}
	return is.created, nil
}

// leaf is one certificate signed by the CA: its file, its key's file and its template.
type leaf struct {
	cert, key string
	template  func() (*x509.Certificate, error)
}

type issuer struct {
	dir       string
	notBefore time.Time
	ca        *x509.Certificate
	caKey     *ecdsa.PrivateKey
	created   []string
}

func (is *issuer) path(name string) string { return filepath.Join(is.dir, name) }

func (is *issuer) exists(name string) bool {
	_, err := os.Stat(is.path(name))
	return err == nil
}

func (is *issuer) loadOrCreateCA(days int) error {
	if is.exists(CAFile) {
		ca, err := readCertificate(is.path(CAFile))
		if err != nil {
			return err
		}
		is.ca = ca
		if is.exists(CAKeyFile) {
			key, err := readKey(is.path(CAKeyFile))
			if err != nil {
				return err
			}
			is.caKey = key
		}
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "lottery CA", Organization: []string{"national lottery"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := is.sign(tmpl, &key.PublicKey, key, nil, days)
	if err != nil {
		return err
	}
	if err := is.write(CAKeyFile, key); err != nil {
		return err
	}
	if err := is.writeCert(CAFile, der); err != nil {
		return err
	}
	is.ca, err = x509.ParseCertificate(der)
	is.caKey = key
	return err
}

func (is *issuer) issueLeaf(certName, keyName string, tmpl *x509.Certificate, days int) error {
	if is.caKey == nil {
		return fmt.Errorf("%s: %w (%s): delete %s to issue a new CA and new certificates", certName, ErrCAKeyMissing, is.path(CAKeyFile), is.path(CAFile))
	}
	if is.exists(certName) != is.exists(keyName) {
		return fmt.Errorf("%s and %s: only one of the pair exists; delete it to issue both", certName, keyName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("%s: %w", keyName, err)
	}
	der, err := is.sign(tmpl, &key.PublicKey, is.caKey, is.ca, days)
	if err != nil {
		return err
	}
	if err := is.write(keyName, key); err != nil {
		return err
	}
	return is.writeCert(certName, der)
}

func (is *issuer) sign(tmpl *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey, parent *x509.Certificate, days int) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = is.notBefore
	tmpl.NotAfter = is.notBefore.AddDate(0, 0, days)
	if parent == nil {
		parent = tmpl // self-signed: the CA
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func serverTemplate(names []string) (*x509.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("the server certificate needs at least one name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	return tmpl, nil
}

func agencyTemplate(n int) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: AgencyName(n)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// write stores a private key, mode 0600, refusing to replace an existing file.
func (is *issuer) write(name string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return is.create(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func (is *issuer) writeCert(name string, der []byte) error {
	return is.create(name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func (is *issuer) create(name string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(is.path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	is.created = append(is.created, name)
	return nil
}

func readCertificate(path string) (*x509.Certificate, error) {
	block, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", path)
	}
	return ec, nil
}

func readPEM(path, kind string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != kind {
		return nil, fmt.Errorf("%s: no PEM %s block", path, kind)
	}
	return block.Bytes, nil
}
