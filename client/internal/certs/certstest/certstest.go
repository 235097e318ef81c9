// Package certstest owns the test helpers shared by the packages whose tests need credentials
// issued by one CA in several directories (a rotation, a second central, an expired agency).
package certstest

import (
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
