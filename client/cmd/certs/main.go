// Command certs creates the lottery's missing TLS credentials (internal/certs): the CA, the
// central's certificate and agency-1 .. agency-N's, as PEM files in one directory, never
// overwriting a file. It prints one line per file created.
//
//	go run ./cmd/certs -dir ../.secrets -agencies 5
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"lottery/client/internal/certs"
)

func main() {
	dir := flag.String("dir", ".secrets", "directory of the PEM files")
	agencies := flag.Int("agencies", 0, "issue certificates for agencies 1..N")
	names := flag.String("server-names", "server,localhost,127.0.0.1", "comma-separated DNS names and IP addresses of the central")
	days := flag.Int("days", 397, "validity of the server and agency certificates, in days")
	caDays := flag.Int("ca-days", 3650, "validity of a new CA certificate, in days")
	notBefore := flag.String("not-before", "", "start of validity, RFC 3339 (default: now)")
	flag.Parse()
	if err := run(*dir, *agencies, *names, *days, *caDays, *notBefore); err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
}

func run(dir string, agencies int, names string, days, caDays int, notBefore string) error {
	if agencies < 0 || days < 1 || caDays < 1 {
		return fmt.Errorf("-agencies must be >= 0, -days and -ca-days >= 1")
	}
	req := certs.Request{Dir: dir, Agencies: agencies, Days: days, CADays: caDays}
	for _, name := range strings.Split(names, ",") {
		if name = strings.TrimSpace(name); name != "" {
			req.ServerNames = append(req.ServerNames, name)
		}
	}
	if notBefore != "" {
		t, err := time.Parse(time.RFC3339, notBefore)
		if err != nil {
			return fmt.Errorf("-not-before: %w", err)
		}
		req.NotBefore = t
	}
	created, err := certs.Issue(req)
	for _, name := range created {
		fmt.Printf("created %s/%s\n", dir, name)
	}
	return err
}
