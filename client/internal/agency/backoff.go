// This file owns the wait between two attempts: bounded exponential backoff with jitter, and
// the sleep that a cancelled context ends at once.

package agency

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is the wait after the k-th consecutive failure: initial * 2^(k-1) capped at max, of
// which a random duration in its upper half is slept. The jitter spreads out agencies that
// lost the central at the same time.
type backoff struct {
	initial, max time.Duration
}

// ceiling is the longest wait after the k-th consecutive failure (k from 1).
func (b backoff) ceiling(k int) time.Duration {
	d := b.initial
	for i := 1; i < k && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// delay is the wait after the k-th consecutive failure: a random duration in [d/2, d] with
// d = ceiling(k).
func (b backoff) delay(k int) time.Duration {
	d := b.ceiling(k)
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits delay(k) or until ctx is done; it reports whether the whole wait elapsed.
func (b backoff) sleep(ctx context.Context, k int) bool {
	t := time.NewTimer(b.delay(k))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
