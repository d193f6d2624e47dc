package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store/record"
)

// UpdateKey is a per-host dyndns2 update key's public part. Its secret is
// the password of /nic/update for one host name, Host, and nothing else:
// no other name, no API call. Like an API token's, the secret is shown once,
// at creation, and only its SHA-256 is stored.
//
// A key is bound to the zone it was made in, by name and generation: once
// that zone is deleted the key never works again, even when a zone of the
// same name is created later.
type UpdateKey struct {
	ID      string    `json:"id"`
	Account string    `json:"account"` // the zone's account when the key was made
	Zone    string    `json:"zone"`    // canonical zone name
	Host    string    `json:"host"`    // canonical absolute name inside Zone, no trailing dot
	Created time.Time `json:"created"`
	// LastUsed is when the key last authenticated an update; zero when
	// never.
	LastUsed time.Time `json:"last_used,omitzero"`
	// Gen is the zone's generation (Zone.Gen) the key belongs to.
	Gen string `json:"-"`
}

// updateKeyPrefix marks update keys, as tokenPrefix marks API tokens: a
// secret scanner spots them, and neither is ever taken for the other.
const updateKeyPrefix = "mxu_"

// MaxUpdateKeys is the most update keys one account may hold.
const MaxUpdateKeys = 1000

// Update key schema. The keys hold no zone hash tag: no script touches an
// update key together with a zone's keys, so they may live in any slot.
//
//	mx:uk:HASH               hash: id, account, zone, host, gen, created, used
//	mx:ukid:ID               string: HASH
//	mx:a:{ACCOUNT}:updatekeys set of ids
func keyUpdateKey(hash string) string   { return "mx:uk:" + hash }
func keyUpdateKeyID(id string) string   { return "mx:ukid:" + id }
func keyAcctUpdateKeys(a string) string { return "mx:a:{" + a + "}:updatekeys" }
func updateKeyFrom(h map[string]string) UpdateKey {
	k := UpdateKey{ID: h["id"], Account: h["account"], Zone: h["zone"], Host: h["host"],
		Created: unixTime(h["created"]), Gen: h["gen"]}
	if h["used"] != "" {
		k.LastUsed = unixTime(h["used"])
	}
	return k
}

// UpdateKeyHost checks host as the host of an update key of zone
// (canonical): "@" or "" for the apex, a name relative to the zone ("home")
// or an absolute one inside it ("home.example.com", with or without the
// trailing dot). It returns the absolute name, canonical, without the
// trailing dot. Errors are *record.FieldError naming "host".
func UpdateKeyHost(zone, host string) (string, error) {
	owner, err := record.Owner(zone, host)
	if err != nil {
		var fe *record.FieldError
		if errors.As(err, &fe) {
			return "", &record.FieldError{Field: "host", Msg: fe.Msg}
		}
		return "", err
	}
	if strings.HasPrefix(owner, "*") {
		return "", &record.FieldError{Field: "host", Msg: fmt.Sprintf("%q: an update key is for one host name, not a wildcard", host)}
	}
	fqdn := strings.TrimSuffix(record.FQDN(zone, owner), ".")
	if !strings.Contains(fqdn, ".") {
		return "", &record.FieldError{Field: "host", Msg: fmt.Sprintf("%q is not a fully qualified host name", fqdn)}
	}
	return fqdn, nil
}

// CreateUpdateKey makes a new update key for host (see UpdateKeyHost) in
// zone, which must exist; the key belongs to the zone's account. It returns
// the secret (the only time it exists in clear) and the public part.
func (s *Store) CreateUpdateKey(ctx context.Context, zone, host string) (string, UpdateKey, error) {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return "", UpdateKey{}, fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	z, err := s.rdb.HMGet(ctx, keyZone(zn), "account", "gen").Result()
	if err != nil {
		return "", UpdateKey{}, fmt.Errorf("create update key: %w", unavailable(err))
	}
	account, _ := z[0].(string)
	gen, _ := z[1].(string)
	if account == "" || gen == "" {
		return "", UpdateKey{}, fmt.Errorf("zone %s: %w", zn, ErrNotFound)
	}
	fqdn, err := UpdateKeyHost(zn, host)
	if err != nil {
		return "", UpdateKey{}, err
	}
	n, err := s.rdb.SCard(ctx, keyAcctUpdateKeys(account)).Result()
	if err != nil {
		return "", UpdateKey{}, fmt.Errorf("create update key: %w", unavailable(err))
	}
	if n >= MaxUpdateKeys {
		return "", UpdateKey{}, &record.FieldError{Field: "host", Msg: fmt.Sprintf("account %s already has %d update keys, the most allowed: revoke some first", account, n)}
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	secret := updateKeyPrefix + base64.RawURLEncoding.EncodeToString(raw)
	k := UpdateKey{ID: randomHex(8), Account: account, Zone: zn, Host: fqdn, Gen: gen,
		Created: s.opts.Now().UTC().Truncate(time.Second)}
	h := hashToken(secret)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyUpdateKey(h), "id", k.ID, "account", k.Account, "zone", k.Zone, "host", k.Host,
			"gen", k.Gen, "created", unixString(k.Created))
		p.Set(ctx, keyUpdateKeyID(k.ID), h, 0)
		p.SAdd(ctx, keyAcctUpdateKeys(account), k.ID)
		return nil
	})
	if err != nil {
		return "", UpdateKey{}, fmt.Errorf("create update key: %w", unavailable(err))
	}
	return secret, k, nil
}

// IsUpdateKey reports whether secret has the form of an update key (not
// whether it is a valid one): callers use it to pick the lookup.
func IsUpdateKey(secret string) bool { return strings.HasPrefix(secret, updateKeyPrefix) }

// touchScript records a key's use only while the key exists, so a use
// racing a revocation cannot bring back part of its hash.
var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end
return 0
`)

// LookupUpdateKey returns the update key whose secret this is and records
// its use. ErrNotFound when there is none (revoked, never issued) or its
// zone is gone: deleted, or deleted and created again (another
// generation), or now another account's.
func (s *Store) LookupUpdateKey(ctx context.Context, secret string) (UpdateKey, error) {
	if !IsUpdateKey(secret) || len(secret) > 200 {
		return UpdateKey{}, fmt.Errorf("update key: %w", ErrNotFound)
	}
	hash := hashToken(secret)
	h, err := s.rdb.HGetAll(ctx, keyUpdateKey(hash)).Result()
	if err != nil {
		return UpdateKey{}, fmt.Errorf("look up update key: %w", unavailable(err))
	}
	if len(h) == 0 || h["id"] == "" {
		return UpdateKey{}, fmt.Errorf("update key: %w", ErrNotFound)
	}
	k := updateKeyFrom(h)
	live, err := s.updateKeyLive(ctx, k, map[string][2]string{})
	if err != nil {
		return UpdateKey{}, fmt.Errorf("look up update key %s: %w", k.ID, err)
	}
	if !live {
		s.dropUpdateKey(ctx, k.Account, k.ID, hash) // best effort: it is dead anyway
		return UpdateKey{}, fmt.Errorf("update key %s: zone %s: %w", k.ID, k.Zone, ErrNotFound)
	}
	now := s.opts.Now().UTC().Truncate(time.Second)
	if err := touchScript.Run(ctx, s.rdb, []string{keyUpdateKey(hash)}, unixString(now)).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return UpdateKey{}, fmt.Errorf("look up update key %s: %w", k.ID, unavailable(err))
	}
	k.LastUsed = now
	return k, nil
}

// updateKeyLive reports whether k's zone still exists as the same zone of
// the same account. zones caches account and generation per zone name.
func (s *Store) updateKeyLive(ctx context.Context, k UpdateKey, zones map[string][2]string) (bool, error) {
	z, ok := zones[k.Zone]
	if !ok {
		v, err := s.rdb.HMGet(ctx, keyZone(k.Zone), "account", "gen").Result()
		if err != nil {
			return false, unavailable(err)
		}
		a, _ := v[0].(string)
		g, _ := v[1].(string)
		z = [2]string{a, g}
		zones[k.Zone] = z
	}
	return z[0] != "" && z[0] == k.Account && z[1] == k.Gen, nil
}

// UpdateKeys lists account's update keys, of zone only when zone is not
// "", sorted by host, then creation. Keys whose zone is gone are left
// out (and removed).
func (s *Store) UpdateKeys(ctx context.Context, account, zone string) ([]UpdateKey, error) {
	ids, err := s.rdb.SMembers(ctx, keyAcctUpdateKeys(account)).Result()
	if err != nil {
		return nil, fmt.Errorf("list update keys: %w", unavailable(err))
	}
	zones := map[string][2]string{}
	out := []UpdateKey{}
	for _, id := range ids {
		hash, err := s.rdb.Get(ctx, keyUpdateKeyID(id)).Result()
		if errors.Is(err, redis.Nil) {
			s.rdb.SRem(ctx, keyAcctUpdateKeys(account), id) // a half-revoked key
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list update keys: %w", unavailable(err))
		}
		h, err := s.rdb.HGetAll(ctx, keyUpdateKey(hash)).Result()
		if err != nil {
			return nil, fmt.Errorf("list update keys: %w", unavailable(err))
		}
		if h["id"] == "" {
			s.dropUpdateKey(ctx, account, id, hash)
			continue
		}
		k := updateKeyFrom(h)
		if zone != "" && k.Zone != zone {
			continue
		}
		live, err := s.updateKeyLive(ctx, k, zones)
		if err != nil {
			return nil, fmt.Errorf("list update keys: %w", err)
		}
		if !live {
			s.dropUpdateKey(ctx, account, id, hash)
			continue
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.ID < b.ID
	})
	return out, nil
}

// RevokeUpdateKey deletes update key id of account, which must be a key
// of zone when zone is not ""; ErrNotFound otherwise.
func (s *Store) RevokeUpdateKey(ctx context.Context, account, zone, id string) error {
	ok, err := s.rdb.SIsMember(ctx, keyAcctUpdateKeys(account), id).Result()
	if err != nil {
		return fmt.Errorf("revoke update key %s: %w", id, unavailable(err))
	}
	if !ok {
		return fmt.Errorf("update key %s: %w", id, ErrNotFound)
	}
	hash, err := s.rdb.Get(ctx, keyUpdateKeyID(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke update key %s: %w", id, unavailable(err))
	}
	if zone != "" && hash != "" {
		kz, err := s.rdb.HGet(ctx, keyUpdateKey(hash), "zone").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("revoke update key %s: %w", id, unavailable(err))
		}
		if kz != zone {
			return fmt.Errorf("update key %s: %w", id, ErrNotFound)
		}
	}
	if err := s.dropUpdateKey(ctx, account, id, hash); err != nil {
		return fmt.Errorf("revoke update key %s: %w", id, err)
	}
	return nil
}

// dropUpdateKey deletes an update key's three keys; hash may be "".
func (s *Store) dropUpdateKey(ctx context.Context, account, id, hash string) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if hash != "" {
			p.Del(ctx, keyUpdateKey(hash))
		}
		p.Del(ctx, keyUpdateKeyID(id))
		p.SRem(ctx, keyAcctUpdateKeys(account), id)
		return nil
	})
	return unavailable(err)
}
