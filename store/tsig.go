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

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store/record"
)

// TSIGKey is a shared secret for signed DNS transfers and UPDATEs (RFC 8945)
// and the zones it may touch. The secret must be usable, so unlike tokens
// it is stored as is: protect Redis accordingly.
type TSIGKey struct {
	Name      string    `json:"name"`      // absolute, lower case: "acme-key."
	Algorithm string    `json:"algorithm"` // dns.HmacSHA256, dns.HmacSHA512 or dns.HmacSHA1
	Secret    string    `json:"secret"`    // base64
	Zones     []string  `json:"zones"`     // canonical zone names
	Created   time.Time `json:"created"`
}

// TSIG algorithms accepted; hmac-sha256 is the default.
var tsigAlgorithms = map[string]string{
	"hmac-sha256": dns.HmacSHA256, "hmac-sha512": dns.HmacSHA512, "hmac-sha1": dns.HmacSHA1,
}

// CreateTSIGKey makes a key with a fresh random secret (as long as the
// algorithm's digest) for zones, which must exist. algorithm is
// "hmac-sha256" (default when ""), "hmac-sha512" or "hmac-sha1".
func (s *Store) CreateTSIGKey(ctx context.Context, name, algorithm string, zones []string) (TSIGKey, error) {
	n := dns.Fqdn(strings.ToLower(strings.TrimSpace(name)))
	if _, ok := dns.IsDomainName(n); !ok || n == "." {
		return TSIGKey{}, &record.FieldError{Field: "name", Msg: fmt.Sprintf("key name %q is not a domain name", name)}
	}
	if algorithm == "" {
		algorithm = "hmac-sha256"
	}
	alg, ok := tsigAlgorithms[strings.ToLower(strings.TrimSuffix(algorithm, "."))]
	if !ok {
		return TSIGKey{}, &record.FieldError{Field: "algorithm", Msg: fmt.Sprintf("algorithm %q is not hmac-sha256, hmac-sha512 or hmac-sha1", algorithm)}
	}
	if len(zones) == 0 {
		return TSIGKey{}, &record.FieldError{Field: "zones", Msg: "a key needs at least one zone"}
	}
	var zs []string
	for _, z := range zones {
		zn, err := record.ZoneName(z)
		if err != nil {
			return TSIGKey{}, &record.FieldError{Field: "zones", Msg: err.Error()}
		}
		if _, err := s.ZoneData(ctx, zn); err != nil {
			return TSIGKey{}, fmt.Errorf("create TSIG key %s: %w", n, err)
		}
		zs = append(zs, zn)
	}
	size := 32
	if alg == dns.HmacSHA512 {
		size = 64
	}
	secret := make([]byte, size)
	rand.Read(secret)
	k := TSIGKey{Name: n, Algorithm: alg, Secret: base64.StdEncoding.EncodeToString(secret), Zones: zs,
		Created: s.opts.Now().UTC().Truncate(time.Second)}
	ok, err := s.rdb.HSetNX(ctx, keyTSIG(n), "secret", k.Secret).Result()
	if err != nil {
		return TSIGKey{}, fmt.Errorf("create TSIG key %s: %w", n, unavailable(err))
	}
	if !ok {
		return TSIGKey{}, &existsError{field: "name", msg: fmt.Sprintf("TSIG key %s already exists", n)}
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyTSIG(n), "algorithm", k.Algorithm, "zones", strings.Join(zs, " "), "created", unixString(k.Created))
		p.SAdd(ctx, keyTSIGs, n)
		return nil
	})
	if err == nil {
		// Published only after the writes: a Cluster runs a pipeline's
		// commands for different nodes in parallel, so a PUBLISH in it
		// could reach a follower before the key it announces.
		err = s.rdb.Publish(ctx, s.events, "K "+n).Err()
	}
	if err != nil {
		return TSIGKey{}, fmt.Errorf("create TSIG key %s: %w", n, unavailable(err))
	}
	return k, nil
}

// TSIGKeys returns every TSIG key, sorted by name.
func (s *Store) TSIGKeys(ctx context.Context) ([]TSIGKey, error) {
	names, err := s.rdb.SMembers(ctx, keyTSIGs).Result()
	if err != nil {
		return nil, fmt.Errorf("list TSIG keys: %w", unavailable(err))
	}
	sort.Strings(names)
	out := make([]TSIGKey, 0, len(names))
	for _, n := range names {
		h, err := s.rdb.HGetAll(ctx, keyTSIG(n)).Result()
		if err != nil {
			return nil, fmt.Errorf("read TSIG key %s: %w", n, unavailable(err))
		}
		if h["algorithm"] == "" {
			continue
		}
		out = append(out, TSIGKey{Name: n, Algorithm: h["algorithm"], Secret: h["secret"],
			Zones: strings.Fields(h["zones"]), Created: unixTime(h["created"])})
	}
	return out, nil
}

// DeleteTSIGKey removes a key.
func (s *Store) DeleteTSIGKey(ctx context.Context, name string) error {
	n := dns.Fqdn(strings.ToLower(strings.TrimSpace(name)))
	removed, err := s.rdb.Del(ctx, keyTSIG(n)).Result()
	if err != nil {
		return fmt.Errorf("delete TSIG key %s: %w", n, unavailable(err))
	}
	if removed == 0 {
		return fmt.Errorf("TSIG key %s: %w", n, ErrNotFound)
	}
	err = s.rdb.SRem(ctx, keyTSIGs, n).Err()
	if err == nil {
		err = s.rdb.Publish(ctx, s.events, "K "+n).Err() // after the write, as in CreateTSIGKey
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("delete TSIG key %s: %w", n, unavailable(err))
	}
	return nil
}
