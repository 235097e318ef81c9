// Command client is the agency program of the national lottery: it loads its configuration,
// checks its TLS credentials and builds its TLS configuration (internal/transport), runs the
// agency session (internal/agency) and maps the outcome to an exit code: 0 on success or when
// stopped by SIGTERM/SIGINT, 1 on any error. A bad configuration, TLS files included, stops it
// before anything else with one line: action: config | result: fail | error: <key>: <why>.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"lottery/client/internal/agency"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/transport"
)

func main() {
	singleProcessor(os.Getenv)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout))
}

// singleProcessor runs the agency on one processor (P) unless $GOMAXPROCS says otherwise. The
// agency is one goroutine doing one thing at a time (read a row, build a frame, write, read an
// ACK): a second P only makes the runtime start idle threads that spin looking for work, and
// with 1,000 short-lived agencies on a machine those threads (clone, their stacks, the TLB
// shootdowns their cores then need) cost about 0.3 ms of the 4.7 ms CPU of an agency run of
// 1,000 bets, for no throughput: the central, not the agency, is the bottleneck. The image sets
// GOMAXPROCS=1 (client/Dockerfile), which is cheaper still: by the time main runs, the runtime
// has already started a thread for the second P, which the environment variable prevents.
func singleProcessor(getenv func(string) string) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// run is the program: args are its command-line arguments, getenv reads its environment and
// its log lines go to stdout. It returns the exit code.
func run(args []string, getenv func(string) string, stdout io.Writer) int {
	flags := flag.NewFlagSet("client", flag.ContinueOnError)
	configPath := flags.String("config", "", "config file (default: $CLI_CONFIG, else "+config.DefaultPath+")")
	if err := flags.Parse(args); err != nil {
		// The flag package has printed the problem and the usage (as flag.ExitOnError would).
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	// Until stop is called the signals do not terminate the process: the context carries them
	// to every blocking call instead.
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()

	cfg, err := config.Load(*configPath, getenv)
	var tlsConfig *tls.Config
	if err == nil {
		// The one place the agency's TLS configuration is built: its files are checked now,
		// not at the first connection.
		tlsConfig, err = transport.Client(cfg)
	}
	if err != nil {
		logs.New(stdout, logs.Info).Error("config", logs.Fail, "error", err)
		return 1
	}
	log := logs.New(stdout, cfg.LogLevel)
	log.Info("config", logs.Success, "client_id", cfg.ID, "server_address", cfg.ServerAddress,
		"batch_max_amount", cfg.BatchMaxAmount, "batch_window", cfg.BatchWindow,
		"data_path", cfg.DataPath, "log_level", cfg.LogLevel)

	a, err := agency.New(cfg, tlsConfig, log)
	if err != nil {
		log.Error("exit", logs.Fail, "error", err)
		return 1
	}
	err = a.Run(ctx)
	if errors.Is(err, agency.ErrStopped) {
		log.Info("shutdown", logs.InProgress, "signal", signalName(context.Cause(ctx)))
	}
	a.Close()
	if err != nil && !errors.Is(err, agency.ErrStopped) {
		log.Error("exit", logs.Fail, "error", err)
		return 1
	}
	log.Info("exit", logs.Success)
	return 0
}

// stopSignals are the signals that stop the agency: the context of the run is cancelled with
// one of them as its cause, and the program exits 0.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}

// signalName names the signal behind cause ("SIGTERM", "SIGINT"), or "none" when cause is not
// a stop by one of stopSignals. signal.NotifyContext (Go 1.26) cancels its context with a
// cause describing the signal, "<signal> signal received" (its String, "terminated" for
// SIGTERM): cause (or an error it wraps) is compared with that description of each stop
// signal, nothing else is read from it.
func signalName(cause error) string {
	for err := cause; err != nil; err = errors.Unwrap(err) {
		for _, sig := range stopSignals {
			if err.Error() == sig.String()+" signal received" {
				return conventionalName(sig)
			}
		}
	}
	return "none"
}

// conventionalName is the conventional name of a signal ("SIGTERM"); syscall.Signal's String
// is a description ("terminated").
func conventionalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
}
