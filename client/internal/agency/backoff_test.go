// Tests of the backoff: its bounds, the default retry budget, and a cancelled sleep.

package agency

import (
	"context"
	"errors"
	"testing"
	"time"

	"lottery/client/internal/config"
)

func TestBackoff(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: time.Second}
	tests := []struct {
		k      int
		lo, hi time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{60, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for i := 0; i < 50; i++ {
			if d := b.delay(tt.k); d < tt.lo || d > tt.hi {
				t.Fatalf("delay(%d) = %v, want in [%v, %v]", tt.k, d, tt.lo, tt.hi)
			}
		}
	}
}

// TestDefaultRetryBudget checks the default retry settings keep an agency retrying through a
// central restart (a few seconds, plus Docker's restart delay) but not forever: the waits
// between the attempts add up to at least a minute even with the shortest jitter, and to at
// most two and a half minutes.
func TestDefaultRetryBudget(t *testing.T) {
	cfg, err := config.Load("/dev/null", func(k string) string {
		if k == "CLI_ID" {
			return "1"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	b := backoff{initial: cfg.RetryInitialBackoff, max: cfg.RetryMaxBackoff}
	var longest time.Duration
	// Run sleeps after every failed attempt but the last.
	for k := 1; k < cfg.RetryAttempts; k++ {
		longest += b.ceiling(k)
	}
	shortest := longest / 2 // delay(k) is at least half its ceiling
	if shortest < time.Minute || longest > 150*time.Second {
		t.Fatalf("%d attempts wait %v to %v in all, want at least 1m and at most 2m30s",
			cfg.RetryAttempts, shortest, longest)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	path, _ := csvFile(t, 5)
	cfg := testConfig(credentials(t), unusedAddr(t), path)
	cfg.RetryAttempts, cfg.RetryInitialBackoff, cfg.RetryMaxBackoff = 100, time.Hour, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := runAgency(t, ctx, cfg)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Run error %v, want ErrStopped", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
}
