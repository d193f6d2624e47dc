package store

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store/record"
)

// SOA holds a zone's SOA fields other than the serial. Names are absolute
// (trailing dot); times are seconds.
type SOA struct {
	MName   string `json:"mname"`
	RName   string `json:"rname"`
	Refresh uint32 `json:"refresh"`
	Retry   uint32 `json:"retry"`
	Expire  uint32 `json:"expire"`
	Minimum uint32 `json:"minimum"`
	TTL     uint32 `json:"ttl"`
}

// Zone is a hosted zone's settings.
type Zone struct {
	Name    string    `json:"name"` // canonical: lower case, no trailing dot
	Account string    `json:"account"`
	Serial  uint32    `json:"serial"`
	SOA     SOA       `json:"soa"`
	Created time.Time `json:"created"`
	// Version counts the zone's changes (1 after creation); Gen tells a
	// zone from an earlier one of the same name. Readers use them to skip
	// stale events.
	Version uint64 `json:"-"`
	Gen     string `json:"-"`
}

// ZoneData is a zone with its records, read in one consistent step.
type ZoneData struct {
	Zone
	Records []record.Record `json:"records"`
}

// Route returns the zone's forwarding route (record.Route): nil when the
// zone is not forwarded.
func (z ZoneData) Route() []record.Target { return record.Route(z.Records) }

// Op is one record change inside a Change.
type Op struct {
	Kind   OpKind
	ID     string        // OpPut, OpDelete
	Record record.Record // OpAdd, OpPut; validated by Change
	// Quiet makes an OpAdd of a record that exists, or an OpDelete of one
	// that does not, a no-op instead of an error (RFC 2136 3.4.2).
	Quiet bool
}

// OpKind says what an Op does.
type OpKind int

// The kinds of Op.
const (
	OpAdd    OpKind = iota // add Record with a new id
	OpPut                  // replace record ID with Record
	OpDelete               // remove record ID
)

// Change is a set of changes applied atomically to one zone, with one serial
// bump and one event.
type Change struct {
	// IfVersion applies the change only while the zone is at this Version
	// (ErrConflict otherwise); 0 applies it whatever the version.
	IfVersion uint64
	// Clear removes every record first (zone import).
	Clear bool
	Ops   []Op
	// SOA, when set, replaces the SOA fields; a Serial above the next one
	// is taken as the new serial (zone import keeps a file's serial).
	SOA    *SOA
	Serial uint32
}

// Result is what a Change did.
type Result struct {
	Serial  uint32
	Version uint64
	IDs     []string // ids given to OpAdd records, in order (skipped quiet adds have none)
}

// Default limits (Options.MaxZoneRecords, MaxOwnerRecords) that keep one
// customer's zone from making every write slow: a write reads the records
// at the names it touches.
const (
	MaxZoneRecords  = 20000 // records in one zone
	MaxOwnerRecords = 1000  // records at one owner name
)

//go:embed mutate.lua
var mutateSrc string

var mutateScript = redis.NewScript(mutateSrc)

type opJSON struct {
	Op    string `json:"op"`
	ID    string `json:"id,omitempty"`
	Name  string `json:"n,omitempty"`
	Type  string `json:"t,omitempty"`
	TTL   uint32 `json:"l,omitempty"`
	Data  string `json:"d,omitempty"`
	Quiet bool   `json:"quiet,omitempty"`
	*soaJSON
}

type soaJSON struct {
	SOA
	Serial uint32 `json:"serial,omitempty"`
}

type createJSON struct {
	Account string `json:"account"`
	Created string `json:"created"`
	Gen     string `json:"gen"`
}

// serialFloor is today's first serial, YYYYMMDD00 (RFC 1912 2.2).
func (s *Store) serialFloor() uint32 {
	y, m, d := s.opts.Now().UTC().Date()
	return uint32(y*1000000 + int(m)*10000 + d*100)
}

// DefaultSOA returns the SOA fields a new zone gets.
func (s *Store) DefaultSOA(zone string) SOA {
	mname := "localhost."
	if len(s.opts.NS) > 0 {
		mname = strings.ToLower(strings.TrimSuffix(s.opts.NS[0], ".")) + "."
	}
	return SOA{MName: mname, RName: "hostmaster." + zone + ".", Refresh: 3600, Retry: 900,
		Expire: 1209600, Minimum: 300, TTL: 3600}
}

// CreateZone creates zone name owned by account (which must exist), with
// the default SOA and one apex NS record per configured name server.
func (s *Store) CreateZone(ctx context.Context, name, account string) (Zone, error) {
	var ops []Op
	for _, ns := range s.opts.NS {
		ops = append(ops, Op{Kind: OpAdd, Record: record.Record{Name: record.Apex, Type: "NS", TTL: 3600, Data: ns}})
	}
	return s.createZone(ctx, name, account, Change{Ops: ops})
}

// ImportZone creates zone name for account with exactly the given SOA and
// records, or, when the zone exists and replace is set, replaces its SOA
// fields and records in one change, whichever account owns it: callers
// acting for an account check ownership first. serial is kept when it is
// above the next one (as Change.Serial).
func (s *Store) ImportZone(ctx context.Context, name, account string, soa SOA, serial uint32, recs []record.Record, replace bool) (Zone, error) {
	ops := make([]Op, len(recs))
	for i, r := range recs {
		ops[i] = Op{Kind: OpAdd, Record: r}
	}
	ch := Change{Ops: ops, SOA: &soa, Serial: serial}
	z, err := s.createZone(ctx, name, account, ch)
	if !replace || !errors.Is(err, ErrExists) {
		return z, err
	}
	ch.Clear = true
	zn, _ := record.ZoneName(name)
	if _, err := s.Change(ctx, zn, ch); err != nil {
		return Zone{}, err
	}
	zd, err := s.ZoneData(ctx, zn)
	return zd.Zone, err
}

func (s *Store) createZone(ctx context.Context, name, account string, ch Change) (Zone, error) {
	zn, err := record.ZoneName(name)
	if err != nil {
		return Zone{}, err
	}
	if _, err := s.Account(ctx, account); err != nil {
		return Zone{}, fmt.Errorf("create zone %s: %w", zn, err)
	}
	if ch.SOA == nil {
		soa := s.DefaultSOA(zn)
		ch.SOA = &soa
	}
	soa, err := checkSOA(*ch.SOA) // canonical, as stored and returned
	if err != nil {
		return Zone{}, err
	}
	ch.SOA = &soa
	now := s.opts.Now().UTC().Truncate(time.Second)
	gen := randomHex(8)
	c, _ := json.Marshal(createJSON{Account: account, Created: unixString(now), Gen: gen})
	res, err := s.run(ctx, zn, ch, string(c))
	if errors.Is(err, ErrExists) {
		// Index a zone whose earlier create stopped before indexing it.
		if owner, herr := s.rdb.HGet(ctx, keyZone(zn), "account").Result(); herr == nil {
			s.indexZone(ctx, zn, owner)
		}
	}
	if err != nil {
		return Zone{}, fmt.Errorf("create zone %s: %w", zn, err)
	}
	// The zone index is written after the zone: on a Cluster it lives in
	// another slot. A zone whose indexing failed is repaired by retrying
	// the create (which answers ErrExists and indexes it).
	if err := s.indexZone(ctx, zn, account); err != nil {
		return Zone{}, err
	}
	return Zone{Name: zn, Account: account, Serial: res.Serial, SOA: *ch.SOA, Created: now, Version: res.Version, Gen: gen}, nil
}

func (s *Store) indexZone(ctx context.Context, zone, account string) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, keyZones, zone)
		p.SAdd(ctx, keyAcctZones(account), zone)
		return nil
	})
	if err != nil {
		return fmt.Errorf("index zone %s: %w", zone, unavailable(err))
	}
	return nil
}

// Change validates ch and applies it to zone atomically: every record is
// checked with record.Normalize, the zone-wide rules (CNAME exclusivity,
// identical records, the last apex NS) inside the same Redis script; a
// refused change writes nothing. On success the serial is bumped once and
// one event published.
func (s *Store) Change(ctx context.Context, zone string, ch Change) (Result, error) {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return Result{}, fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	res, err := s.run(ctx, zn, ch, "")
	if err != nil {
		return Result{}, fmt.Errorf("change zone %s: %w", zn, err)
	}
	return res, nil
}

func (s *Store) run(ctx context.Context, zone string, ch Change, create string) (Result, error) {
	ops := make([]opJSON, 0, len(ch.Ops)+2)
	if ch.Clear {
		ops = append(ops, opJSON{Op: "clear"})
	}
	if ch.SOA != nil {
		soa, err := checkSOA(*ch.SOA)
		if err != nil {
			return Result{}, err
		}
		ops = append(ops, opJSON{Op: "soa", soaJSON: &soaJSON{SOA: soa, Serial: ch.Serial}})
	}
	for i, op := range ch.Ops {
		j := opJSON{ID: op.ID, Quiet: op.Quiet}
		switch op.Kind {
		case OpAdd, OpPut:
			r, err := record.Normalize(zone, op.Record, s.policy)
			if err != nil {
				if len(ch.Ops) > 1 {
					return Result{}, fmt.Errorf("record %d (%s %s): %w", i+1, op.Record.Name, op.Record.Type, err)
				}
				return Result{}, err
			}
			j.Op, j.Name, j.Type, j.TTL, j.Data = "add", r.Name, r.Type, r.TTL, r.Data
			if op.Kind == OpPut {
				j.Op = "put"
				j.Quiet = false
			}
		case OpDelete:
			j.Op = "del"
		}
		ops = append(ops, j)
	}
	buf, err := json.Marshal(ops)
	if err != nil {
		return Result{}, err
	}
	keys := []string{keyZone(zone), keyRecords(zone), keyOwners(zone)}
	v, err := mutateScript.Run(ctx, s.rdb, keys, ch.IfVersion, s.serialFloor(), s.events, zone, string(buf), create, s.opts.MaxZoneRecords, s.opts.MaxOwnerRecords).StringSlice()
	if err != nil {
		return Result{}, scriptError(err)
	}
	return Result{Serial: parseUint32(v[0]), Version: parseUint64(v[1]), IDs: v[2:]}, nil
}

// checkSOA validates SOA fields (RFC 1035 3.3.13, RFC 1912 2.2).
func checkSOA(soa SOA) (SOA, error) {
	for _, n := range []struct {
		field string
		v     *string
	}{{"soa.mname", &soa.MName}, {"soa.rname", &soa.RName}} {
		v, err := record.ZoneName(*n.v)
		if err != nil {
			return SOA{}, &record.FieldError{Field: n.field, Msg: fmt.Sprintf("%q is not a valid domain name (letters, digits, '-' and '_' in each label)", *n.v)}
		}
		*n.v = v + "."
	}
	switch {
	case soa.Refresh < 60:
		return SOA{}, &record.FieldError{Field: "soa.refresh", Msg: "refresh must be at least 60 seconds"}
	case soa.Retry < 60:
		return SOA{}, &record.FieldError{Field: "soa.retry", Msg: "retry must be at least 60 seconds"}
	case soa.Expire < soa.Refresh:
		return SOA{}, &record.FieldError{Field: "soa.expire", Msg: "expire must not be below refresh"}
	case soa.Minimum > 86400:
		return SOA{}, &record.FieldError{Field: "soa.minimum", Msg: "minimum (negative caching TTL) must be at most 86400 seconds"}
	case soa.TTL < record.MinTTL || soa.TTL > record.MaxTTL:
		return SOA{}, &record.FieldError{Field: "soa.ttl", Msg: fmt.Sprintf("TTL must be %d-%d seconds", record.MinTTL, record.MaxTTL)}
	}
	return soa, nil
}

// scriptError turns "MXERR kind field message" replies into Go errors.
func scriptError(err error) error {
	msg := err.Error()
	i := strings.Index(msg, "MXERR ")
	if i < 0 {
		return unavailable(err)
	}
	f := strings.SplitN(msg[i+len("MXERR "):], " ", 3)
	if len(f) < 3 {
		return err
	}
	kind, field, text := f[0], f[1], f[2]
	switch kind {
	case "notfound":
		return fmt.Errorf("%s: %w", text, ErrNotFound)
	case "exists":
		return &existsError{field: field, msg: text}
	case "conflict":
		return fmt.Errorf("%s: %w", text, ErrConflict)
	}
	return &record.FieldError{Field: field, Msg: text}
}

// existsError is ErrExists that also names the field (for 409 bodies).
type existsError struct{ field, msg string }

func (e *existsError) Error() string        { return e.msg }
func (e *existsError) Is(target error) bool { return target == ErrExists }
func (e *existsError) As(target any) bool {
	if fe, ok := target.(**record.FieldError); ok {
		*fe = &record.FieldError{Field: e.field, Msg: e.msg}
		return true
	}
	return false
}

// AddRecord validates r and adds it to zone; it returns the stored record
// with its id.
func (s *Store) AddRecord(ctx context.Context, zone string, r record.Record) (record.Record, error) {
	res, err := s.Change(ctx, zone, Change{Ops: []Op{{Kind: OpAdd, Record: r}}})
	if err != nil {
		return record.Record{}, err
	}
	return s.Record(ctx, zone, res.IDs[0])
}

// UpdateRecord replaces record id of zone with r.
func (s *Store) UpdateRecord(ctx context.Context, zone, id string, r record.Record) (record.Record, error) {
	if _, err := s.Change(ctx, zone, Change{Ops: []Op{{Kind: OpPut, ID: id, Record: r}}}); err != nil {
		return record.Record{}, err
	}
	return s.Record(ctx, zone, id)
}

// RemoveRecord removes record id from zone.
func (s *Store) RemoveRecord(ctx context.Context, zone, id string) error {
	_, err := s.Change(ctx, zone, Change{Ops: []Op{{Kind: OpDelete, ID: id}}})
	return err
}

// SetSOA replaces zone's SOA fields (the serial is bumped as for any change).
func (s *Store) SetSOA(ctx context.Context, zone string, soa SOA) (Result, error) {
	return s.Change(ctx, zone, Change{SOA: &soa})
}

// Record reads one record of zone.
func (s *Store) Record(ctx context.Context, zone, id string) (record.Record, error) {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return record.Record{}, fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	v, err := s.rdb.HGet(ctx, keyRecords(zn), id).Result()
	if errors.Is(err, redis.Nil) {
		return record.Record{}, fmt.Errorf("record %s of zone %s: %w", id, zn, ErrNotFound)
	}
	if err != nil {
		return record.Record{}, fmt.Errorf("read record %s of zone %s: %w", id, zn, unavailable(err))
	}
	return decodeRecord(id, v)
}

// types interns type names, so a snapshot of millions of records holds one
// copy of "A".
var types = func() map[string]string {
	m := make(map[string]string, len(dns.TypeToString))
	for _, t := range dns.TypeToString {
		m[t] = t
	}
	return m
}()

func decodeRecord(id, v string) (record.Record, error) {
	f := strings.SplitN(v, "\t", 4)
	if len(f) != 4 {
		return record.Record{}, fmt.Errorf("record %s: corrupt value %q", id, v)
	}
	typ, ok := types[f[1]]
	if !ok {
		typ = f[1]
	}
	ttl, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return record.Record{}, fmt.Errorf("record %s: corrupt TTL %q", id, f[2])
	}
	return record.Record{ID: id, Name: f[0], Type: typ, TTL: uint32(ttl), Data: f[3]}, nil
}

// ZoneData reads a zone and its records in one transaction.
func (s *Store) ZoneData(ctx context.Context, zone string) (ZoneData, error) {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return ZoneData{}, fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	zs, err := s.readZones(ctx, []string{zn})
	if err != nil {
		return ZoneData{}, err
	}
	if zs[0] == nil {
		return ZoneData{}, fmt.Errorf("zone %s: %w", zn, ErrNotFound)
	}
	return *zs[0], nil
}

// readZones reads zones in one transaction; a missing zone gives nil.
func (s *Store) readZones(ctx context.Context, names []string) ([]*ZoneData, error) {
	if _, ok := s.rdb.(*redis.ClusterClient); ok && len(names) > 1 {
		return s.readZonesCluster(ctx, names)
	}
	zcmds := make([]*redis.MapStringStringCmd, len(names))
	rcmds := make([]*redis.MapStringStringCmd, len(names))
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			zcmds[i] = p.HGetAll(ctx, keyZone(n))
			rcmds[i] = p.HGetAll(ctx, keyRecords(n))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read zones: %w", unavailable(err))
	}
	out := make([]*ZoneData, len(names))
	for i, n := range names {
		h := zcmds[i].Val()
		if len(h) == 0 {
			continue
		}
		zd := &ZoneData{Zone: zoneFromHash(n, h)}
		recs := rcmds[i].Val()
		zd.Records = make([]record.Record, 0, len(recs))
		for id, v := range recs {
			r, err := decodeRecord(id, v)
			if err != nil {
				return nil, fmt.Errorf("zone %s: %w", n, err)
			}
			zd.Records = append(zd.Records, r)
		}
		SortRecords(zd.Records)
		out[i] = zd
	}
	return out, nil
}

// readZonesCluster reads zones one transaction each, a few at a time: a
// Cluster refuses a transaction whose keys are in several slots, and each
// zone has its own.
func (s *Store) readZonesCluster(ctx context.Context, names []string) ([]*ZoneData, error) {
	out := make([]*ZoneData, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var zs []*ZoneData
			if zs, errs[i] = s.readZones(ctx, []string{n}); errs[i] == nil {
				out[i] = zs[0]
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func zoneFromHash(name string, h map[string]string) Zone {
	return Zone{
		Name: name, Account: h["account"], Serial: parseUint32(h["serial"]),
		Created: unixTime(h["created"]), Version: parseUint64(h["ver"]), Gen: h["gen"],
		SOA: SOA{MName: h["mname"], RName: h["rname"], Refresh: parseUint32(h["refresh"]),
			Retry: parseUint32(h["retry"]), Expire: parseUint32(h["expire"]),
			Minimum: parseUint32(h["minimum"]), TTL: parseUint32(h["ttl"])},
	}
}

// SortRecords orders records by owner (apex first), type, then id.
func SortRecords(rs []record.Record) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Name != b.Name {
			if a.Name == record.Apex || b.Name == record.Apex {
				return a.Name == record.Apex
			}
			return a.Name < b.Name
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if len(a.ID) != len(b.ID) {
			return len(a.ID) < len(b.ID)
		}
		return a.ID < b.ID
	})
}

// Zones lists the names of the zones of account, or of all zones when
// account is "", sorted.
func (s *Store) Zones(ctx context.Context, account string) ([]string, error) {
	key := keyZones
	if account != "" {
		key = keyAcctZones(account)
	}
	names, err := s.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("list zones: %w", unavailable(err))
	}
	sort.Strings(names)
	return names, nil
}

// LoadAll reads every zone with its records: the snapshot readers start
// from. Each zone is read consistently; zones are read in batches.
func (s *Store) LoadAll(ctx context.Context) ([]ZoneData, error) {
	names, err := s.rdb.SMembers(ctx, keyZones).Result()
	if err != nil {
		return nil, fmt.Errorf("load zones: %w", unavailable(err))
	}
	return s.ZonesData(ctx, names)
}

// ZonesData reads the named zones with their records, each consistently,
// in batches (one round trip per batch, not per zone). Zones that do not
// exist (deleted meanwhile) are left out.
func (s *Store) ZonesData(ctx context.Context, names []string) ([]ZoneData, error) {
	out := make([]ZoneData, 0, len(names))
	const batch = 500
	for i := 0; i < len(names); i += batch {
		zs, err := s.readZones(ctx, names[i:min(i+batch, len(names))])
		if err != nil {
			return nil, err
		}
		for _, z := range zs {
			if z != nil {
				out = append(out, *z)
			}
		}
	}
	return out, nil
}

var deleteScript = redis.NewScript(`
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return redis.error_reply('MXERR notfound zone zone ' .. ARGV[2] .. ' does not exist') end
local account = redis.call('HGET', KEYS[1], 'account')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('PUBLISH', ARGV[1], 'D ' .. ARGV[2] .. ' ' .. gen)
return account
`)

// DeleteZone removes zone with its records, delivery log and queue mirror.
func (s *Store) DeleteZone(ctx context.Context, zone string) error {
	zn, err := record.ZoneName(zone)
	if err != nil {
		return fmt.Errorf("zone %q: %w", zone, ErrNotFound)
	}
	keys := []string{keyZone(zn), keyRecords(zn), keyOwners(zn), keyDeliveries(zn), keyQueue(zn)}
	account, err := deleteScript.Run(ctx, s.rdb, keys, s.events, zn).Text()
	if err != nil {
		return fmt.Errorf("delete zone %s: %w", zn, scriptError(err))
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, keyZones, zn)
		p.SRem(ctx, keyAcctZones(account), zn)
		return nil
	})
	if err != nil {
		return fmt.Errorf("unindex zone %s: %w", zn, unavailable(err))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
