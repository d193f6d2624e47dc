package dyndns

import (
	"sync"
	"time"
)

// limiter is a token bucket per key (an API token's id): burst requests
// at once, refilled at burst per period. It lives in one process's
// memory; with several panel nodes each enforces its own share.
type limiter struct {
	burst  float64
	rate   float64 // tokens per second
	mu     sync.Mutex
	bucket map[string]*bucket
	sweep  time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(burst int, period time.Duration) *limiter {
	return &limiter{burst: float64(burst), rate: float64(burst) / period.Seconds(), bucket: map[string]*bucket{}}
}

// allow takes one token from key's bucket at now, reporting whether there
// was one.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forget(now)
	b := l.bucket[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.bucket[key] = b
	}
	if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(l.burst, b.tokens+d*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops, at most once a minute, the buckets that have refilled:
// they are the same as no bucket.
func (l *limiter) forget(now time.Time) {
	if now.Sub(l.sweep) < time.Minute {
		return
	}
	l.sweep = now
	for k, b := range l.bucket {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.bucket, k)
		}
	}
}
