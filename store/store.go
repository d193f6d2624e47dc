// Package store owns mxport's data in Redis: accounts, users, API tokens,
// TSIG keys, zones with their records and SOA serials, and the change events
// that keep every role's in-memory copy current.
//
// It is the only package that knows Redis keys. Every write that changes a
// zone runs as one Lua script: validate, write, bump the serial, publish an
// event. All keys of one zone share the hash tag {zone}, so those scripts also
// work on a Redis Cluster. Redis failures come back as ErrUnavailable.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store/record"
)

// SchemaVersion is the version of the Redis layout this code reads and writes.
const SchemaVersion = 1

// Errors callers branch on. Wrapped errors carry the object's name.
var (
	// ErrNotFound: the zone, record, account, user, token or key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the object (or an identical record) already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the zone changed since the version the caller asked for.
	ErrConflict = errors.New("zone changed concurrently")
	// ErrUnavailable: Redis could not be reached or did not answer in time.
	ErrUnavailable = errors.New("store unavailable")
	// ErrBadCredentials: wrong password or unknown user.
	ErrBadCredentials = errors.New("bad credentials")
)

// Options are the service settings the store needs.
type Options struct {
	// MXHosts are the service's mail exchangers (--mx-hosts), never a
	// valid forwarding target.
	MXHosts []string
	// NS are the name servers put in a new zone's apex NS records and SOA
	// MNAME (--ns).
	NS []string
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
	// MaxZoneRecords and MaxOwnerRecords limit the records of one zone
	// and at one owner name; 0 means the defaults of the same names.
	MaxZoneRecords, MaxOwnerRecords int
}

// Store is the Redis-backed store. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	opts   Options
	policy record.Policy
	events string // the change event channel
}

// ParseURL turns a --redis URL into go-redis options. Besides go-redis's own
// redis://, rediss:// and unix:// forms it accepts
//
//	redis-sentinel://[[user]:pass@]host:port[,host:port...][/db]?master=NAME[&sentinel_password=P]
//	redis-cluster://[[user]:pass@]host:port[,host:port...]
//
// for a Sentinel-managed primary and a Redis Cluster.
func ParseURL(raw string) (*redis.UniversalOptions, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("redis URL %q: missing scheme (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://)", raw)
	}
	switch scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("redis URL %q: %w", RedactURL(raw), err)
		}
		uo := &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB,
			Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		}
		if o.Network == "unix" {
			path := o.Addr
			uo.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}
		}
		return uo, nil
	case "redis-cluster":
		// go-redis reads one host from the URL and more from addr=
		// parameters: move all hosts but the first there.
		auth, hosts := "", rest
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			auth, hosts = rest[:i+1], rest[i+1:]
		}
		tail := ""
		if i := strings.IndexAny(hosts, "/?"); i >= 0 {
			hosts, tail = hosts[:i], hosts[i:]
		}
		addrs := strings.Split(hosts, ",")
		for _, h := range addrs {
			if _, _, err := net.SplitHostPort(h); err != nil {
				return nil, fmt.Errorf("redis URL %q: cluster address %q: want host:port", RedactURL(raw), h)
			}
		}
		if len(addrs) > 1 && !strings.Contains(tail, "?") {
			tail += "?"
		}
		for _, h := range addrs[1:] {
			tail += "&addr=" + url.QueryEscape(h)
		}
		o, err := redis.ParseClusterURL("redis://" + auth + addrs[0] + tail)
		if err != nil {
			return nil, fmt.Errorf("redis URL %q: %w", RedactURL(raw), err)
		}
		return &redis.UniversalOptions{
			Addrs: o.Addrs, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, IsClusterMode: true,
		}, nil
	case "redis-sentinel":
		return parseSentinel(raw, rest)
	}
	return nil, fmt.Errorf("redis URL %q: unknown scheme %q", RedactURL(raw), scheme)
}

func parseSentinel(raw, rest string) (*redis.UniversalOptions, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("redis URL %q: %s", RedactURL(raw), fmt.Sprintf(format, a...))
	}
	o := &redis.UniversalOptions{}
	rest, query, _ := strings.Cut(rest, "?")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		user, pass, _ := strings.Cut(rest[:i], ":")
		var err error
		if o.Username, err = url.PathUnescape(user); err != nil {
			return nil, bad("bad user name")
		}
		if o.Password, err = url.PathUnescape(pass); err != nil {
			return nil, bad("bad password")
		}
		rest = rest[i+1:]
	}
	hosts, db, _ := strings.Cut(rest, "/")
	for _, h := range strings.Split(hosts, ",") {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil, bad("sentinel address %q: want host:port", h)
		}
		o.Addrs = append(o.Addrs, h)
	}
	if db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, bad("database %q is not a number", db)
		}
		o.DB = n
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, bad("%v", err)
	}
	o.MasterName = q.Get("master")
	o.SentinelPassword = q.Get("sentinel_password")
	if o.MasterName == "" {
		return nil, bad("missing ?master=NAME")
	}
	return o, nil
}

// RedactURL hides the password of a Redis URL, for messages and logs.
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		return scheme + "://xxx@" + rest[i+1:]
	}
	return raw
}

// Open connects to Redis at the --redis URL, checks that it answers within
// a few seconds and that its schema is one this code knows (writing the
// version into an empty Redis).
func Open(ctx context.Context, redisURL string, opts Options) (*Store, error) {
	uo, err := ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	uo.DialTimeout = 2 * time.Second
	uo.ReadTimeout = 3 * time.Second
	uo.WriteTimeout = 3 * time.Second
	uo.MaxRetries = 1
	return New(ctx, redis.NewUniversalClient(uo), opts)
}

// New wraps a connected go-redis client: it pings it and checks the schema.
// The Store owns the client from then on (Close closes it).
func New(ctx context.Context, rdb redis.UniversalClient, opts Options) (*Store, error) {
	quietRedis.Do(func() { redis.SetLogger(redisLogger{}) })
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxZoneRecords <= 0 {
		opts.MaxZoneRecords = MaxZoneRecords
	}
	if opts.MaxOwnerRecords <= 0 {
		opts.MaxOwnerRecords = MaxOwnerRecords
	}
	s := &Store{rdb: rdb, opts: opts, policy: record.Policy{MXHosts: opts.MXHosts}, events: channel}
	// Pub/sub ignores the database number: give each database its own
	// channel, so stores sharing a server do not see each other's events.
	if c, ok := rdb.(*redis.Client); ok && c.Options().DB != 0 {
		s.events = channel + ":" + strconv.Itoa(c.Options().DB)
	}
	pctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connect to redis: %w", unavailable(err))
	}
	if err := s.checkSchema(pctx); err != nil {
		rdb.Close()
		return nil, err
	}
	return s, nil
}

var quietRedis sync.Once

// redisLogger sends go-redis's own messages (dial retries and the like) to
// slog at debug level: the store reports failures itself, as errors, once.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

func (s *Store) checkSchema(ctx context.Context) error {
	if err := s.rdb.SetNX(ctx, keySchema, SchemaVersion, 0).Err(); err != nil {
		return fmt.Errorf("schema version: %w", unavailable(err))
	}
	raw, err := s.rdb.Get(ctx, keySchema).Result()
	if err != nil {
		return fmt.Errorf("schema version: %w", unavailable(err))
	}
	v, err := strconv.Atoi(raw)
	if err != nil { // not a transport failure: say what is wrong
		return fmt.Errorf("redis key %s holds %q, not a schema version: is this database used by something else?", keySchema, raw)
	}
	if v > SchemaVersion {
		return fmt.Errorf("redis holds schema version %d, newer than this mxport understands (%d): upgrade mxport", v, SchemaVersion)
	}
	if v < SchemaVersion {
		return fmt.Errorf("redis holds schema version %d, older than this mxport's (%d), and no migration exists", v, SchemaVersion)
	}
	return nil
}

// Close closes the Redis connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Ping reports whether Redis answers; for readiness checks.
func (s *Store) Ping(ctx context.Context) error {
	return unavailable(s.rdb.Ping(ctx).Err())
}

// Policy returns the record validation policy derived from the options.
func (s *Store) Policy() record.Policy { return s.policy }

// unavailable maps transport failures to ErrUnavailable; Redis error replies
// and redis.Nil pass through unchanged.
func unavailable(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	var reply redis.Error
	if errors.As(err, &reply) && !isTransient(reply.Error()) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// isTransient reports Redis replies that mean "not now" rather than "no".
func isTransient(msg string) bool {
	for _, p := range []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "BUSY"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// Redis keys. Zone keys carry the zone name as hash tag.
const (
	keySchema   = "mx:schema"
	keyZones    = "mx:zones"    // set of zone names
	keyAccounts = "mx:accounts" // set of account ids
	keyTSIGs    = "mx:tsigs"    // set of TSIG key names
	channel     = "mx:events"   // change events (database 0; "mx:events:N" for database N)
)

func keyZone(z string) string       { return "mx:z:{" + z + "}" } // hash: account, serial, soa...
func keyRecords(z string) string    { return "mx:r:{" + z + "}" } // hash: id -> encoded record
func keyOwners(z string) string     { return "mx:o:{" + z + "}" } // hash: owner -> "id id ..."
func keyDeliveries(z string) string { return "mx:l:{" + z + "}" } // list: delivery log, newest first
func keyAccount(a string) string    { return "mx:a:{" + a + "}" } // hash: role, parent, created
func keyAcctZones(a string) string  { return "mx:a:{" + a + "}:zones" }
func keyAcctKids(a string) string   { return "mx:a:{" + a + "}:children" }
func keyAcctTokens(a string) string { return "mx:a:{" + a + "}:tokens" }
func keyAcctUsers(a string) string  { return "mx:a:{" + a + "}:users" }
func keyUser(email string) string   { return "mx:u:{" + email + "}" }
func keyToken(hash string) string   { return "mx:t:" + hash }
func keyTokenID(id string) string   { return "mx:tid:" + id }
func keyTSIG(name string) string    { return "mx:k:" + name }
func unixTime(v string) time.Time   { n, _ := strconv.ParseInt(v, 10, 64); return time.Unix(n, 0).UTC() }
func unixString(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
func parseUint32(v string) uint32   { n, _ := strconv.ParseUint(v, 10, 32); return uint32(n) }
func parseUint64(v string) uint64   { n, _ := strconv.ParseUint(v, 10, 64); return n }
