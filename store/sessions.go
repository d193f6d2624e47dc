package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Session is a signed-in panel user's server-side session. Only the
// SHA-256 of its secret is stored (as for API tokens).
type Session struct {
	Email   string    `json:"email"`
	Account string    `json:"account"`
	Role    Role      `json:"role"`
	CSRF    string    `json:"csrf"` // the session's CSRF token, for forms
	Expires time.Time `json:"expires"`
}

func keySession(hash string) string { return "mx:s:" + hash }

// keyUserSessions lists the session keys of a user (a set), so a password
// change can end them; it lives as long as the newest of them.
func keyUserSessions(email string) string { return "mx:us:" + email }

// CreateSession starts a session for u lasting ttl and returns its secret
// (for the cookie) and the session.
func (s *Store) CreateSession(ctx context.Context, u User, ttl time.Duration) (string, Session, error) {
	raw := make([]byte, 32)
	rand.Read(raw)
	secret := base64.RawURLEncoding.EncodeToString(raw)
	csrf := make([]byte, 32)
	rand.Read(csrf)
	sess := Session{Email: u.Email, Account: u.Account, Role: u.Role,
		CSRF: base64.RawURLEncoding.EncodeToString(csrf), Expires: s.opts.Now().Add(ttl).UTC().Truncate(time.Second)}
	key := keySession(hashToken(secret))
	// Not a transaction: on a Cluster the two keys may be on two nodes.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "email", sess.Email, "account", sess.Account, "role", string(sess.Role),
			"csrf", sess.CSRF, "expires", unixString(sess.Expires))
		// Relative to Redis's clock, so a node whose clock differs cannot
		// make Redis drop a session at once; LookupSession checks Expires.
		p.Expire(ctx, key, ttl)
		p.SAdd(ctx, keyUserSessions(sess.Email), key)
		p.Expire(ctx, keyUserSessions(sess.Email), ttl)
		return nil
	})
	if err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", unavailable(err))
	}
	return secret, sess, nil
}

// LookupSession returns the live session of secret; ErrNotFound when it
// does not exist or expired.
func (s *Store) LookupSession(ctx context.Context, secret string) (Session, error) {
	if secret == "" || len(secret) > 100 {
		return Session{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	h, err := s.rdb.HGetAll(ctx, keySession(hashToken(secret))).Result()
	if err != nil {
		return Session{}, fmt.Errorf("look up session: %w", unavailable(err))
	}
	exp := unixTime(h["expires"])
	if len(h) == 0 || !s.opts.Now().Before(exp) {
		return Session{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	return Session{Email: h["email"], Account: h["account"], Role: Role(h["role"]), CSRF: h["csrf"], Expires: exp}, nil
}

// DeleteSession ends a session (sign out); a missing one is not an error.
func (s *Store) DeleteSession(ctx context.Context, secret string) error {
	err := s.rdb.Del(ctx, keySession(hashToken(secret))).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("delete session: %w", unavailable(err))
	}
	return nil
}

// EndOtherSessions ends every session of the user email except the one
// whose secret is keep ("" ends them all): after a password change, a
// session opened with the old password must not live on.
func (s *Store) EndOtherSessions(ctx context.Context, email, keep string) error {
	set := keyUserSessions(email)
	keys, err := s.rdb.SMembers(ctx, set).Result()
	if err != nil {
		return fmt.Errorf("end sessions of %s: %w", email, unavailable(err))
	}
	kept := ""
	if keep != "" {
		kept = keySession(hashToken(keep))
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			if k != kept {
				p.Del(ctx, k)
				p.SRem(ctx, set, k)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("end sessions of %s: %w", email, unavailable(err))
	}
	return nil
}
