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
	"syscall"

	"lottery/client/internal/agency"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
	"lottery/client/internal/transport"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout))
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

	ctx, stop := notifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
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

// stopSignal is the cause of a context cancelled by a signal: it keeps the signal itself, so
// the shutdown log names it without parsing an error string.
type stopSignal struct{ sig os.Signal }

func (s stopSignal) Error() string { return s.name() + " received" }

// name is the conventional name of the signal ("SIGTERM"); syscall.Signal's String is a
// description ("terminated").
func (s stopSignal) name() string {
	switch s.sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.sig.String()
}

// notifyContext returns a context cancelled with a stopSignal cause when one of sigs arrives,
// and a stop function that unregisters the signals and releases the context. Until stop is
// called the signals do not terminate the process: the context carries them to every blocking
// call instead.
func notifyContext(parent context.Context, sigs ...os.Signal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case sig := <-ch:
			cancel(stopSignal{sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil) // the goroutine above sees ctx.Done and returns
	}
}

// signalName names the signal behind cause ("SIGTERM", "SIGINT"), or "none" when cause is not
// a stop by a signal.
func signalName(cause error) string {
	var s stopSignal
	if errors.As(cause, &s) {
		return s.name()
	}
	return "none"
}
