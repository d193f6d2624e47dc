package courier

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of PoolConfig, used where a field is zero (or negative).
const (
	DefaultMaxIdlePerAddr = 20
	// DefaultIdleTimeout is longer than Postfix's 2 s
	// smtp_connection_cache_time_limit: a busy target sees gaps of a few
	// seconds between queue runs.
	DefaultIdleTimeout = 5 * time.Second
	DefaultMaxUses     = 100
	DefaultMaxAge      = time.Minute
)

// quitTimeout bounds the QUIT of a session the pool retires on its own
// (expired, Close), when Config.Timeout is longer.
const quitTimeout = 5 * time.Second

// PoolConfig limits the sessions a Pool keeps; the zero value works.
type PoolConfig struct {
	MaxIdlePerAddr int           // idle sessions kept per (host, addr); 0 = DefaultMaxIdlePerAddr
	IdleTimeout    time.Duration // an idle session is QUIT and closed after this; 0 = DefaultIdleTimeout
	MaxUses        int           // transactions per session before it is QUIT; 0 = DefaultMaxUses
	MaxAge         time.Duration // a session older than this is not reused; 0 = DefaultMaxAge
}

func (pc PoolConfig) withDefaults() PoolConfig {
	if pc.MaxIdlePerAddr <= 0 {
		pc.MaxIdlePerAddr = DefaultMaxIdlePerAddr
	}
	if pc.IdleTimeout <= 0 {
		pc.IdleTimeout = DefaultIdleTimeout
	}
	if pc.MaxUses <= 0 {
		pc.MaxUses = DefaultMaxUses
	}
	if pc.MaxAge <= 0 {
		pc.MaxAge = DefaultMaxAge
	}
	return pc
}

// Pool delivers like Deliver but keeps sessions open between messages to the
// same target, as Postfix's connection cache does: a busy target costs one
// dial, greeting, EHLO and STARTTLS per MaxUses messages instead of one per
// message.
//
// Idle sessions are keyed by host and addr (the TLS ServerName and the error
// texts depend on host). A session goes back to the pool only when it is in
// a clean state after a transaction: the reply to the final dot was
// received, whatever it said, or every RCPT was refused and RSET (then EHLO,
// which go-smtp requires after RSET) succeeded. Anything else closes it:
// after QUIT when the server still answers (MAIL or DATA refused), at once
// otherwise (I/O error, timeout, 421, the context ending).
//
// An idle session is QUIT and closed between IdleTimeout and 1.25 ×
// IdleTimeout after its last use, by one timer for the whole pool; it is
// never reused past IdleTimeout, MaxAge or MaxUses.
//
// A Pool is safe for concurrent use. Close it when done.
type Pool struct {
	cfg    Config
	pc     PoolConfig
	dials  atomic.Int64
	reuses atomic.Int64

	mu     sync.Mutex
	idle   map[poolKey][]*session // per target, the most recently used last
	closed bool
	timer  *time.Timer // runs sweep; armed while a session is idle
	armed  bool
	quits  sync.WaitGroup // QUITs of retired sessions in flight
}

type poolKey struct{ host, addr string }

// NewPool returns an empty Pool that delivers with cfg.
func NewPool(cfg Config, pc PoolConfig) *Pool {
	return &Pool{cfg: cfg.withDefaults(), pc: pc.withDefaults(), idle: make(map[poolKey][]*session)}
}

// Deliver makes one attempt to deliver a message to addr (ip:port), with the
// same contract as the package's Deliver (results, errors, context), on an
// idle session to (host, addr) when there is one and on a new session
// otherwise.
//
// A session taken from the pool may have been dropped by the server
// meanwhile (its own idle timeout, a restart). If MAIL, the first command on
// it, fails with an I/O error or 421, nothing was accepted, so the attempt
// goes on transparently on a new session and the other idle sessions to that
// target are dropped. A failure after MAIL was accepted is reported as by
// Deliver, never retried.
//
// After Close, Deliver still works but keeps nothing: every session is QUIT
// after its transaction.
func (p *Pool) Deliver(ctx context.Context, host, addr string, env Envelope, body io.Reader) ([]Result, error) {
	if len(env.Rcpts) == 0 {
		return nil, errNoRcpts
	}
	key := poolKey{host, addr}
	if s := p.take(key); s != nil {
		a := newAttempt(ctx, p.cfg, host, addr, env, &p.dials)
		res, state, err := p.run(a, key, s, body)
		if state != endMailLost || ctx.Err() != nil {
			return res, err
		}
		p.flush(key)
	}
	a := newAttempt(ctx, p.cfg, host, addr, env, &p.dials)
	s, err := a.open()
	if err != nil {
		return a.failAll(err)
	}
	res, _, err := p.run(a, key, s, body)
	return res, err
}

// Stats returns how many TCP connections the pool has dialed (or tried to;
// a STARTTLS failure costs two) and how many transactions it started on a
// session taken from the pool (including ones that found it dropped and
// redialed). Safe for concurrent use.
func (p *Pool) Stats() (dials, reuses int64) {
	return p.dials.Load(), p.reuses.Load()
}

// Close QUITs and closes every idle session and waits for that. Sessions in
// use go on and are QUIT when their transaction ends; Deliver still works
// but keeps nothing. Close is idempotent and returns nil.
func (p *Pool) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.timer != nil {
			p.timer.Stop()
		}
		for _, st := range p.idle {
			for _, s := range st {
				p.retireLocked(s)
			}
		}
		p.idle = nil
	}
	p.mu.Unlock()
	p.quits.Wait()
	return nil
}

// run runs the transaction on s, then puts s back into the pool or closes
// it.
func (p *Pool) run(a *attempt, key poolKey, s *session, body io.Reader) ([]Result, end, error) {
	stop := context.AfterFunc(a.ctx, func() { s.raw.Close() })
	res, state, err := a.transaction(s, body)
	s.uses++
	after := state
	if after == endNoRcpt {
		after = a.reset(s)
	}
	if after == endClean && s.uses < p.pc.MaxUses && time.Since(s.born) < p.pc.MaxAge {
		// stop fails when the context closed the connection under us.
		if stop() && a.ctx.Err() == nil {
			if !p.put(key, s) {
				s.quit(p.quitTimeout()) // the pool is closed or full
			}
		} else {
			s.raw.Close()
		}
		return res, state, err
	}
	if after.answers() {
		s.c.Quit() // while the context can still cut it short
	}
	stop()
	s.raw.Close()
	return res, state, err
}

// reset ends a transaction whose recipients were all refused (RFC 5321
// 4.1.1.5) and says EHLO again, which go-smtp requires after RSET; a failure
// there is not mistaken for one of the next MAIL.
func (a *attempt) reset(s *session) end {
	err := s.c.Reset()
	if err == nil {
		err = s.c.Hello(a.cfg.Hostname)
	}
	switch {
	case err == nil:
		return endClean
	case isReply(err):
		return endRefused
	default:
		return endBroken
	}
}

// take returns the most recently used idle session to key that may still be
// used, or nil. It retires the expired ones it finds.
func (p *Pool) take(key poolKey) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.idle[key]
	now := time.Now()
	for len(st) > 0 {
		s := st[len(st)-1]
		st[len(st)-1] = nil
		st = st[:len(st)-1]
		if p.usable(s, now) {
			if len(st) == 0 {
				delete(p.idle, key)
			} else {
				p.idle[key] = st
			}
			p.reuses.Add(1)
			return s
		}
		p.retireLocked(s)
	}
	delete(p.idle, key)
	return nil
}

// put makes s idle; false when the pool is closed or full for key.
func (p *Pool) put(key poolKey, s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[key]) >= p.pc.MaxIdlePerAddr {
		return false
	}
	s.idleSince = time.Now()
	p.idle[key] = append(p.idle[key], s)
	if !p.armed {
		p.arm(time.Until(p.expiry(s)))
	}
	return true
}

// flush retires every idle session to key: one of them was found dropped by
// the server, so the others, older, most likely were too.
func (p *Pool) flush(key poolKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.idle[key] {
		p.retireLocked(s)
	}
	delete(p.idle, key)
}

// sweep retires the expired idle sessions and arms the timer for the next
// expiry, no sooner than IdleTimeout/4 from now so that a busy pool does
// not scan all its targets too often.
func (p *Pool) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.closed {
		return
	}
	now := time.Now()
	var next time.Time
	for key, st := range p.idle {
		kept := st[:0]
		for _, s := range st {
			if !p.usable(s, now) {
				p.retireLocked(s)
				continue
			}
			kept = append(kept, s)
			if e := p.expiry(s); next.IsZero() || e.Before(next) {
				next = e
			}
		}
		clear(st[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	if !next.IsZero() {
		p.arm(max(next.Sub(now), p.pc.IdleTimeout/4))
	}
}

// arm schedules sweep after d; the caller holds p.mu.
func (p *Pool) arm(d time.Duration) {
	p.armed = true
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.sweep)
		return
	}
	p.timer.Reset(d)
}

// usable reports whether an idle session may take another transaction.
func (p *Pool) usable(s *session, now time.Time) bool {
	return now.Before(p.expiry(s))
}

// expiry is when an idle session stops being usable.
func (p *Pool) expiry(s *session) time.Time {
	idle := s.idleSince.Add(p.pc.IdleTimeout)
	if old := s.born.Add(p.pc.MaxAge); old.Before(idle) {
		return old
	}
	return idle
}

// retireLocked QUITs and closes s in the background; the caller holds p.mu,
// so Close, which sets closed under it, waits for the QUIT.
func (p *Pool) retireLocked(s *session) {
	p.quits.Add(1)
	go func() {
		defer p.quits.Done()
		s.quit(p.quitTimeout())
	}()
}

func (p *Pool) quitTimeout() time.Duration {
	return min(p.cfg.Timeout, quitTimeout)
}

// quit sends QUIT, waiting at most d for the reply, and closes the
// connection.
func (s *session) quit(d time.Duration) {
	s.c.CommandTimeout = d
	s.c.Quit()
	s.raw.Close()
}
