// Command client is the agency program of the national lottery: it loads its configuration,
// runs the agency session (internal/agency) and maps the outcome to an exit code: 0 on success
// or when stopped by SIGTERM/SIGINT, 1 on any error.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"lottery/client/internal/agency"
	"lottery/client/internal/config"
	"lottery/client/internal/logs"
)

func main() {
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", "", "config file (default: $CLI_CONFIG, else "+config.DefaultPath+")")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := config.Load(*configPath, os.Getenv)
	if err != nil {
		logs.New(os.Stdout, logs.Info).Error("config", logs.Fail, "error", err)
		return 1
	}
	log := logs.New(os.Stdout, cfg.LogLevel)
	log.Info("config", logs.Success, "client_id", cfg.ID, "server_address", cfg.ServerAddress,
		"batch_max_amount", cfg.BatchMaxAmount, "batch_window", cfg.BatchWindow,
		"data_path", cfg.DataPath, "log_level", cfg.LogLevel)

	a, err := agency.New(cfg, log)
	if err != nil {
		log.Error("exit", logs.Fail, "error", err)
		return 1
	}
	err = a.Run(ctx)
	if errors.Is(err, agency.ErrStopped) {
		log.Info("shutdown", logs.InProgress, "signal", signalName(ctx))
	}
	a.Close()
	if err != nil && !errors.Is(err, agency.ErrStopped) {
		log.Error("exit", logs.Fail, "error", err)
		return 1
	}
	log.Info("exit", logs.Success)
	return 0
}

// signalName names the signal that cancelled ctx (signal.NotifyContext records it as the
// context's cause, "<description> signal received").
func signalName(ctx context.Context) string {
	cause := context.Cause(ctx)
	if cause == nil {
		return "none"
	}
	for _, s := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		if strings.HasPrefix(cause.Error(), s.String()+" ") {
			if s == syscall.SIGTERM {
				return "SIGTERM"
			}
			return "SIGINT"
		}
	}
	return cause.Error()
}
