package web

import (
	"context"
	"sync"
	"time"
)

// Sign-in throttling. Failures are counted per client address and per
// email, in this process's memory: each failure is answered after a delay
// that grows with the count, and MaxFailures failures lock the key out for
// Lockout. A count is forgotten FailureWindow after its last failure.
const (
	MaxFailures   = 5
	Lockout       = 5 * time.Minute
	FailureWindow = 15 * time.Minute
	failureDelay  = 200 * time.Millisecond // times the failure count
	maxDelay      = 2 * time.Second
	maxKeys       = 100000 // beyond this, expired entries are swept first
)

type failures struct {
	n      int
	last   time.Time
	locked time.Time // locked out until
}

type throttle struct {
	mu    sync.Mutex
	keys  map[string]*failures
	now   func() time.Time
	delay func(context.Context, time.Duration)
}

func newThrottle(now func() time.Time, delay func(context.Context, time.Duration)) *throttle {
	return &throttle{keys: make(map[string]*failures), now: now, delay: delay}
}

// locked reports how long the longest lockout of keys still runs (0: none).
func (t *throttle) locked(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var d time.Duration
	for _, k := range keys {
		if f := t.keys[k]; f != nil && now.Before(f.locked) {
			d = max(d, f.locked.Sub(now))
		}
	}
	return d
}

// fail counts a failure for every key, then waits the slow-down delay of
// the highest count. It returns the lockout that now applies (0: none).
func (t *throttle) fail(ctx context.Context, keys ...string) time.Duration {
	t.mu.Lock()
	now := t.now()
	if len(t.keys) >= maxKeys {
		t.sweep(now)
	}
	n := 0
	var lock time.Duration
	for _, k := range keys {
		f := t.keys[k]
		if f == nil || now.Sub(f.last) > FailureWindow {
			f = &failures{}
			if len(t.keys) < maxKeys {
				t.keys[k] = f
			}
		}
		f.n++
		f.last = now
		if f.n >= MaxFailures {
			f.locked = now.Add(Lockout)
			lock = Lockout
		}
		n = max(n, f.n)
	}
	t.mu.Unlock()
	t.delay(ctx, min(time.Duration(n)*failureDelay, maxDelay))
	return lock
}

// succeed forgets the failures of key.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	delete(t.keys, key)
	t.mu.Unlock()
}

// sweep drops entries whose window and lockout have passed; t.mu is held.
func (t *throttle) sweep(now time.Time) {
	for k, f := range t.keys {
		if now.Sub(f.last) > FailureWindow && !now.Before(f.locked) {
			delete(t.keys, k)
		}
	}
}
