// Package rrl limits response rates against reflection attacks (response
// rate limiting as in BIND, Knot and NSD RRL): per client network (/24 for
// IPv4, /56 for IPv6) and response kind, with slip. It knows no sockets and
// no DNS messages: the caller classifies each response, asks Check, and
// sends, drops or truncates it.
//
// Only UDP responses are limited. A TCP client has completed a handshake, so
// its source address is not spoofed and a TCP answer cannot be reflected;
// the caller never calls Check for TCP. That is also why slip works: a
// truncated UDP reply (TC=1) sends a real client to TCP, where it is served.
//
// The model is a token bucket per (network, kind, name), kept as a
// theoretical arrival time (GCRA): a bucket holds at most
// ResponsesPerSecond×Window responses of credit, refills continuously at
// ResponsesPerSecond, and starts full. A client may therefore burst
// ResponsesPerSecond×Window responses and then get ResponsesPerSecond per
// second; responses above that are dropped, and every Slip-th dropped
// response is sent truncated instead. A dropped or slipped response costs
// no credit, so a flood sees exactly ResponsesPerSecond full responses per
// second, and a response fits again 1/ResponsesPerSecond after the flood
// stops. (BIND instead lets
// the balance go negative, so a flood keeps being limited for up to Window
// seconds after it stops; its default window is 15 seconds, ours 5.)
//
// A bucket left alone for Window seconds is full again, which is the same as
// having no bucket, so forgetting it loses nothing. The table is bounded by
// MaxTableSize: when a new bucket needs room, a CLOCK sweep takes the first
// bucket that is full, or failing that one not used again since it was made
// or since the hand last passed (an approximation of least recently used
// that sheds networks seen once before busy ones). Evicting a bucket that is still limiting gives its
// network a fresh burst; a table large enough for the networks seen in
// Window seconds avoids that.
package rrl

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// Defaults applied by New to zero (or negative) Config fields.
const (
	DefaultWindow       = 5
	DefaultIPv4Prefix   = 24
	DefaultIPv6Prefix   = 56
	DefaultMaxTableSize = 100000
)

// numShards is the number of independently locked parts of the table, a
// power of two. New uses fewer when MaxTableSize is smaller.
const numShards = 64

// maxWindow caps Config.Window (about 11.5 days) so that nanoseconds do not
// overflow.
const maxWindow = 1 << 20

// Config sets the limits. The zero value disables rate limiting.
type Config struct {
	// ResponsesPerSecond is the sustained rate allowed per bucket, that is
	// per (client network, Kind, name). 0 or less disables RRL: Check
	// always says Send.
	ResponsesPerSecond int
	// Window is the burst credit in seconds: a bucket holds at most
	// ResponsesPerSecond×Window responses and takes Window seconds to
	// refill from empty. Default DefaultWindow (5).
	Window int
	// Slip says how to answer a response over the limit: every Slip-th one
	// in a bucket is Slip (sent truncated, TC=1, no records) and the rest
	// Drop. 0 never slips, 1 slips every one, 2 every second one.
	// Negative counts as 0.
	Slip int
	// IPv4Prefix and IPv6Prefix are the lengths of the client networks
	// that share buckets. Defaults DefaultIPv4Prefix (24) and
	// DefaultIPv6Prefix (56); longer than the address means the address.
	IPv4Prefix, IPv6Prefix int
	// MaxTableSize bounds the number of buckets kept, across all shards.
	// Default DefaultMaxTableSize (100000). At about 64 bytes per bucket
	// plus the map, the default costs under 10 MB.
	MaxTableSize int
}

// Kind classifies a response. The name passed to Check with each kind
// selects its bucket:
//
//   - KindAnswer: a positive answer; name is the qname. All qtypes of one
//     qname share the bucket (Check takes no qtype), which is stricter
//     than BIND's per qname and qtype.
//   - KindNXDomain: name is the zone, so random nonexistent names do not
//     each get their own bucket.
//   - KindNoData: name is the qname.
//   - KindReferral: name is the zone (or the cut).
//   - KindError: every other response (REFUSED, SERVFAIL, FORMERR, …);
//     name is ignored and one bucket covers the client network.
//
// Values above KindError count as KindError.
type Kind uint8

// The response kinds.
const (
	KindAnswer Kind = iota
	KindNXDomain
	KindNoData
	KindReferral
	KindError
)

// String returns the kind's name, for logs and metric labels.
func (k Kind) String() string {
	switch k {
	case KindAnswer:
		return "answer"
	case KindNXDomain:
		return "nxdomain"
	case KindNoData:
		return "nodata"
	case KindReferral:
		return "referral"
	default:
		return "error"
	}
}

// Action says what to do with a response.
type Action uint8

// The actions.
const (
	// Send the response as it is.
	Send Action = iota
	// Drop the response: send nothing.
	Drop
	// Slip: send a truncated response instead (TC=1, the question only, no
	// records), so that a real client retries over TCP.
	Slip
)

// String returns the action's name, for logs and metric labels.
func (a Action) String() string {
	switch a {
	case Send:
		return "send"
	case Drop:
		return "drop"
	case Slip:
		return "slip"
	default:
		return "unknown"
	}
}

// Limiter is the table of buckets. It is safe for concurrent use by several
// goroutines (the UDP readers). The zero Limiter is not usable; call New.
type Limiter struct {
	disabled bool
	base     time.Time // times are kept as nanoseconds since base
	interval int64     // nanoseconds of credit one response costs: 1s/rate
	window   int64     // nanoseconds of credit a bucket holds
	slip     uint32
	v4Mask   uint32
	v6Hi     uint64 // mask of the first 64 bits of an IPv6 address
	v6Lo     uint64 // mask of the last 64 bits
	shardCap int
	mask     uint64 // len(shards)-1
	shards   []shard
}

// key identifies a bucket. It is four words without padding, so the map
// hashes it as plain memory.
type key struct {
	hi, lo uint64 // masked address; IPv4 in the low 32 bits of lo
	name   uint64 // FNV-1a of the lower-cased name; 0 for KindError
	meta   uint64 // kind | family<<8
}

const (
	famInvalid = 0
	famIPv4    = 1
	famIPv6    = 2
)

// entry is one bucket.
type entry struct {
	k     key
	tat   int64 // theoretical arrival time, nanoseconds since base: full if <= now
	slips uint32
	ref   bool // used again since made or since the clock hand last passed
}

type shard struct {
	mu      sync.Mutex
	idx     map[key]int32 // key → index in ents
	ents    []entry
	hand    int
	dropped uint64
	slipped uint64
	_       [64]byte // keep shards on separate cache lines
}

// New returns a Limiter for c, with defaults for zero fields.
func New(c Config) *Limiter {
	if c.ResponsesPerSecond <= 0 {
		return &Limiter{disabled: true}
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	c.Window = min(c.Window, maxWindow)
	if c.Slip < 0 {
		c.Slip = 0
	}
	if c.IPv4Prefix <= 0 {
		c.IPv4Prefix = DefaultIPv4Prefix
	}
	if c.IPv6Prefix <= 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.MaxTableSize <= 0 {
		c.MaxTableSize = DefaultMaxTableSize
	}
	l := &Limiter{
		base:     time.Now(),
		interval: max(int64(time.Second)/int64(c.ResponsesPerSecond), 1),
		window:   int64(c.Window) * int64(time.Second),
		slip:     uint32(min(c.Slip, 1<<31)),
		v4Mask:   prefixMask32(c.IPv4Prefix),
	}
	l.v6Hi, l.v6Lo = prefixMask128(c.IPv6Prefix)
	n := numShards
	for n > 1 && n > c.MaxTableSize {
		n /= 2
	}
	l.shardCap = min(c.MaxTableSize/n, 1<<31-1)
	l.mask = uint64(n - 1)
	l.shards = make([]shard, n)
	for i := range l.shards {
		l.shards[i].idx = make(map[key]int32)
	}
	return l
}

func prefixMask32(bits int) uint32 {
	if bits >= 32 {
		return ^uint32(0)
	}
	return ^(^uint32(0) >> bits)
}

func prefixMask128(bits int) (hi, lo uint64) {
	switch {
	case bits >= 128:
		return ^uint64(0), ^uint64(0)
	case bits >= 64:
		return ^uint64(0), ^(^uint64(0) >> (bits - 64))
	default:
		return ^(^uint64(0) >> bits), 0
	}
}

// Check accounts one UDP response to client ip of the given kind for name
// (the qname for KindAnswer and KindNoData, the zone for KindNXDomain and
// KindReferral, ignored for KindError; case and a trailing dot do not
// matter) and says what to do with it. An IPv4-mapped IPv6 address counts
// as IPv4; an IPv6 zone is ignored; an invalid address has buckets of its
// own. now is the current time (time.Now in production), passed in so that
// tests control the clock; a time before an earlier call's is allowed and
// makes a bucket at most empty, never more than Window seconds behind.
//
// Check does not allocate for a bucket that exists; it takes one shard
// lock.
func (l *Limiter) Check(ip netip.Addr, kind Kind, name string, now time.Time) Action {
	if l.disabled {
		return Send
	}
	k := l.key(ip, kind, name)
	s := &l.shards[shardHash(k)&l.mask]
	// Sub uses the monotonic clock when now has a reading (time.Now does),
	// so a step of the wall clock does not disturb the buckets.
	t := int64(now.Sub(l.base))

	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(k, t, l.shardCap)
	if e.tat-t > l.window {
		// The clock went back: a bucket is never more than a window in
		// debt. Count it as empty now.
		e.tat = t + l.window
	}
	// GCRA: the response fits if, after paying for it, the bucket's debt
	// is at most the window.
	tat := max(e.tat, t) + l.interval
	if tat-t <= l.window {
		e.tat = tat
		return Send
	}
	e.slips++
	if l.slip > 0 && e.slips%l.slip == 0 {
		s.slipped++
		return Slip
	}
	s.dropped++
	return Drop
}

// key builds the bucket key for a response.
func (l *Limiter) key(ip netip.Addr, kind Kind, name string) key {
	var k key
	if kind > KindError {
		kind = KindError
	}
	fam := famInvalid
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		fam = famIPv4
		b := ip.As4()
		k.lo = uint64(binary.BigEndian.Uint32(b[:]) & l.v4Mask)
	case ip.Is6():
		fam = famIPv6
		b := ip.As16()
		k.hi = binary.BigEndian.Uint64(b[:8]) & l.v6Hi
		k.lo = binary.BigEndian.Uint64(b[8:]) & l.v6Lo
	}
	if kind != KindError {
		k.name = nameHash(name)
	}
	k.meta = uint64(kind) | uint64(fam)<<8
	return k
}

// nameHash is 64-bit FNV-1a over name with ASCII letters lower-cased and a
// trailing dot dropped, without allocating.
func nameHash(name string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	h := uint64(offset)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= prime
	}
	return h
}

// shardHash mixes the key into a word whose low bits pick the shard.
func shardHash(k key) uint64 {
	h := k.name ^ k.meta
	h ^= k.hi * 0x9e3779b97f4a7c15
	h ^= k.lo * 0xc2b2ae3d27d4eb4f
	// splitmix64 finaliser.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// get returns the bucket for k, making a full one if there is none. A new
// bucket starts without its use bit, so that under a spoofed-source flood,
// where most networks are seen once, the clock hand takes those before a
// bucket in repeated use. s.mu is held.
func (s *shard) get(k key, now int64, limit int) *entry {
	if i, ok := s.idx[k]; ok {
		e := &s.ents[i]
		e.ref = true
		return e
	}
	var i int
	if len(s.ents) < limit {
		i = len(s.ents)
		s.ents = append(s.ents, entry{})
	} else {
		i = s.victim(now)
		delete(s.idx, s.ents[i].k)
	}
	s.ents[i] = entry{k: k, tat: now}
	s.idx[k] = int32(i)
	return &s.ents[i]
}

// victim picks the bucket to reuse in a full shard: the first one under the
// clock hand that is full again (idle for the window, so forgetting it
// changes nothing) or not used again since it was made or since the hand
// last passed. It stops within one turn plus one step. s.mu is held.
func (s *shard) victim(now int64) int {
	for {
		i := s.hand
		s.hand++
		if s.hand == len(s.ents) {
			s.hand = 0
		}
		e := &s.ents[i]
		if e.tat <= now || !e.ref {
			return i
		}
		e.ref = false
	}
}

// Stats returns how many responses Check has said to Drop and to Slip since
// New; the two counts are disjoint. Safe for concurrent use; each shard is
// read under its lock, so the pair is not one instant's snapshot.
func (l *Limiter) Stats() (dropped, slipped uint64) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		dropped += s.dropped
		slipped += s.slipped
		s.mu.Unlock()
	}
	return dropped, slipped
}

// size returns the number of buckets kept, for tests.
func (l *Limiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.ents)
		s.mu.Unlock()
	}
	return n
}
