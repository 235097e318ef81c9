package certs

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func issue(t *testing.T, req Request) []string {
	t.Helper()
	if req.Days == 0 {
		req.Days, req.CADays = 30, 60
	}
	created, err := Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return created
}

func roots(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	ca, err := readCertificate(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

func TestIssueCreatesAVerifiableSetAndNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	created := issue(t, Request{Dir: dir, Agencies: 2, ServerNames: []string{"server", "127.0.0.1"}})
	want := []string{CAKeyFile, CAFile, ServerKeyFile, ServerFile, AgencyKeyFile(1), AgencyFile(1), AgencyKeyFile(2), AgencyFile(2)}
	if !reflect.DeepEqual(created, want) {
		t.Fatalf("created %v, want %v", created, want)
	}
	pool := roots(t, dir)
	server, err := readCertificate(filepath.Join(dir, ServerFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"server", "127.0.0.1"} {
		if _, err := server.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	for n := 1; n <= 2; n++ {
		cert, err := readCertificate(filepath.Join(dir, AgencyFile(n)))
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := cert.Verify(opts); err != nil {
			t.Errorf("agency %d: %v", n, err)
		}
		if cert.Subject.CommonName != AgencyName(n) {
			t.Errorf("agency %d: CN %q", n, cert.Subject.CommonName)
		}
		info, err := os.Stat(filepath.Join(dir, AgencyKeyFile(n)))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("agency %d key mode: %v %v", n, info.Mode(), err)
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, AgencyFile(1)))
	if again := issue(t, Request{Dir: dir, Agencies: 3, ServerNames: []string{"server"}}); !reflect.DeepEqual(again, []string{AgencyKeyFile(3), AgencyFile(3)}) {
		t.Fatalf("second run created %v, want only agency 3", again)
	}
	after, _ := os.ReadFile(filepath.Join(dir, AgencyFile(1)))
	if string(before) != string(after) {
		t.Fatal("an existing certificate was overwritten")
	}
}

func TestAnotherCAsCertificateDoesNotVerify(t *testing.T) {
	mine, other := t.TempDir(), t.TempDir()
	issue(t, Request{Dir: mine, Agencies: 1, ServerNames: []string{"server"}})
	issue(t, Request{Dir: other, Agencies: 1, ServerNames: []string{"server"}})
	stranger, err := readCertificate(filepath.Join(other, AgencyFile(1)))
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: roots(t, mine), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := stranger.Verify(opts); err == nil {
		t.Fatal("a certificate of another CA verified")
	}
}

func TestNotBeforeMakesAnExpiredCertificate(t *testing.T) {
	dir := t.TempDir()
	issue(t, Request{Dir: dir, ServerNames: []string{"server"}, Days: 365, CADays: 3650})
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	issue(t, Request{Dir: dir, Agencies: 1, ServerNames: []string{"server"}, NotBefore: old, Days: 1, CADays: 1})
	cert, err := readCertificate(filepath.Join(dir, AgencyFile(1)))
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(old.AddDate(0, 0, 1)) {
		t.Fatalf("not after %v", cert.NotAfter)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots(t, dir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("verify: %v, want expired", err)
	}
}

func TestALeafNeedsTheCAKey(t *testing.T) {
	dir := t.TempDir()
	issue(t, Request{Dir: dir, ServerNames: []string{"server"}})
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err := Issue(Request{Dir: dir, Agencies: 1, ServerNames: []string{"server"}, Days: 1, CADays: 1})
	if !errors.Is(err, ErrCAKeyMissing) {
		t.Fatalf("err %v, want ErrCAKeyMissing", err)
	}
	if _, err := os.Stat(filepath.Join(dir, AgencyFile(1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a certificate was written without the CA key")
	}
}
