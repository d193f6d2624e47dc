package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

var bg = context.Background()

// clock is an injectable store.Options.Now, safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// day is midday UTC of a date, a fixed instant for serial tests.
func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }

// newStore returns a store on a fresh database with customer account "acme".
func newStore(t testing.TB) *store.Store {
	t.Helper()
	return withAccount(t, storetest.New(t))
}

// newStoreAt is newStore with the clock c.
func newStoreAt(t testing.TB, c *clock) *store.Store {
	t.Helper()
	o := storetest.Options
	o.Now = c.Now
	return withAccount(t, storetest.NewWith(t, o))
}

func withAccount(t testing.TB, s *store.Store) *store.Store {
	t.Helper()
	if _, err := s.CreateAccount(bg, "acme", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	return s
}

func mustZone(t testing.TB, s *store.Store, name string) store.Zone {
	t.Helper()
	z, err := s.CreateZone(bg, name, "acme")
	if err != nil {
		t.Fatalf("CreateZone(%s): %v", name, err)
	}
	return z
}

func mustAdd(t testing.TB, s *store.Store, zone, name, typ string, ttl uint32, data string) record.Record {
	t.Helper()
	r, err := s.AddRecord(bg, zone, record.Record{Name: name, Type: typ, TTL: ttl, Data: data})
	if err != nil {
		t.Fatalf("AddRecord(%s %s %s %q): %v", zone, name, typ, data, err)
	}
	return r
}

func mustData(t testing.TB, s *store.Store, zone string) store.ZoneData {
	t.Helper()
	zd, err := s.ZoneData(bg, zone)
	if err != nil {
		t.Fatalf("ZoneData(%s): %v", zone, err)
	}
	return zd
}

// rawClient is a plain go-redis client on url, closed at cleanup.
func rawClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// brief returns records as "name type data" lines, sorted, for comparisons
// that ignore ids and TTLs.
func brief(rs []record.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name + " " + r.Type + " " + r.Data
	}
	sort.Strings(out)
	return out
}

func TestZoneLifecycle(t *testing.T) {
	t.Parallel()
	c := newClock(day(2024, 3, 5))
	s := newStoreAt(t, c)

	z, err := s.CreateZone(bg, "Example.COM.", "acme")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Zone{
		Name: "example.com", Account: "acme", Serial: 2024030500, Version: 1, Gen: z.Gen,
		Created: day(2024, 3, 5),
		SOA: store.SOA{MName: "ns1.fwd.test.", RName: "hostmaster.example.com.", Refresh: 3600, Retry: 900,
			Expire: 1209600, Minimum: 300, TTL: 3600},
	}
	if z.Gen == "" || !reflect.DeepEqual(z, want) {
		t.Fatalf("CreateZone = %+v\nwant %+v", z, want)
	}
	zd := mustData(t, s, "example.com.")
	if !reflect.DeepEqual(zd.Zone, want) {
		t.Fatalf("ZoneData = %+v\nwant %+v", zd.Zone, want)
	}
	if got, w := brief(zd.Records), []string{"@ NS ns1.fwd.test.", "@ NS ns2.fwd.test."}; !reflect.DeepEqual(got, w) {
		t.Fatalf("new zone records = %q, want %q", got, w)
	}

	// Errors on create.
	_, err = s.CreateZone(bg, "example.com", "acme")
	if !errors.Is(err, store.ErrExists) || record.Field(err) != "name" {
		t.Fatalf("second CreateZone: %v (field %q), want ErrExists on name", err, record.Field(err))
	}
	if _, err := s.CreateZone(bg, "other.test", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateZone for a missing account: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "a..b", "bad name.test", "*.wild.test"} {
		if _, err := s.CreateZone(bg, bad, "acme"); record.Field(err) != "name" {
			t.Fatalf("CreateZone(%q): %v, want an error on name", bad, err)
		}
	}

	// Listing.
	if _, err := s.CreateAccount(bg, "beta", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	mustZone(t, s, "b.test")
	if _, err := s.CreateZone(bg, "c.test", "beta"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		account string
		want    []string
	}{
		{"", []string{"b.test", "c.test", "example.com"}},
		{"acme", []string{"b.test", "example.com"}},
		{"beta", []string{"c.test"}},
		{"nobody", []string{}},
	} {
		got, err := s.Zones(bg, tc.account)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("Zones(%q) = %q, %v; want %q", tc.account, got, err, tc.want)
		}
	}

	// Delete.
	r := mustAdd(t, s, "example.com", "www", "A", 300, "192.0.2.1")
	if err := s.DeleteZone(bg, "EXAMPLE.com."); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ZoneData(bg, "example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ZoneData after delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Record(bg, "example.com", r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Record after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteZone(bg, "example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteZone: %v, want ErrNotFound", err)
	}
	if _, err := s.AddRecord(bg, "example.com", record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AddRecord to a deleted zone: %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		account string
		want    []string
	}{{"", []string{"b.test", "c.test"}}, {"acme", []string{"b.test"}}} {
		got, err := s.Zones(bg, tc.account)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("Zones(%q) after delete = %q, %v; want %q", tc.account, got, err, tc.want)
		}
	}
	all, err := s.LoadAll(bg)
	if err != nil || len(all) != 2 {
		t.Fatalf("LoadAll after delete: %d zones, %v; want 2", len(all), err)
	}

	// A zone created again is a new generation, from version 1, with
	// none of the old records.
	z2 := mustZone(t, s, "example.com")
	if z2.Gen == z.Gen || z2.Version != 1 {
		t.Fatalf("recreated zone: gen %q (old %q), version %d", z2.Gen, z.Gen, z2.Version)
	}
	if got := brief(mustData(t, s, "example.com").Records); len(got) != 2 {
		t.Fatalf("recreated zone has records %q", got)
	}
}

func TestRecordAddUpdateRemove(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	z := mustZone(t, s, "example.com")

	a, err := s.AddRecord(bg, "example.com", record.Record{Name: "WWW.example.com.", Type: "a", TTL: 300, Data: " 192.0.2.1 "})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.Name != "www" || a.Type != "A" || a.TTL != 300 || a.Data != "192.0.2.1" {
		t.Fatalf("AddRecord = %+v", a)
	}
	got, err := s.Record(bg, "example.com", a.ID)
	if err != nil || got != a {
		t.Fatalf("Record(%s) = %+v, %v; want %+v", a.ID, got, err, a)
	}
	mx := mustAdd(t, s, "example.com", "@", "MX", 3600, "10 home.example.net:2525")
	if mx.ID == a.ID {
		t.Fatalf("two records share id %s", a.ID)
	}
	zd := mustData(t, s, "example.com")
	if zd.Version != z.Version+2 || zd.Serial != z.Serial+2 {
		t.Fatalf("after two adds: version %d serial %d; want %d %d", zd.Version, zd.Serial, z.Version+2, z.Serial+2)
	}
	if route := zd.Route(); len(route) != 1 || route[0].Address() != "home.example.net:2525" {
		t.Fatalf("Route = %+v", route)
	}

	// Update: new owner, TTL and data, same id.
	u, err := s.UpdateRecord(bg, "example.com", a.ID, record.Record{Name: "web", Type: "A", TTL: 600, Data: "192.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (record.Record{ID: a.ID, Name: "web", Type: "A", TTL: 600, Data: "192.0.2.2"}); u != want {
		t.Fatalf("UpdateRecord = %+v, want %+v", u, want)
	}
	// Update to the same data (a TTL change) is not a duplicate of itself.
	if _, err := s.UpdateRecord(bg, "example.com", a.ID, record.Record{Name: "web", Type: "A", TTL: 900, Data: "192.0.2.2"}); err != nil {
		t.Fatalf("UpdateRecord of the TTL only: %v", err)
	}
	// The old owner is free again: a CNAME may go there.
	mustAdd(t, s, "example.com", "www", "CNAME", 300, "web.example.com.")
	// Update can change the type.
	if _, err := s.UpdateRecord(bg, "example.com", a.ID, record.Record{Name: "web", Type: "TXT", TTL: 900, Data: `"moved"`}); err != nil {
		t.Fatal(err)
	}
	zd = mustData(t, s, "example.com")
	want := []string{"@ MX 10 home.example.net.:2525", "@ NS ns1.fwd.test.", "@ NS ns2.fwd.test.",
		"web TXT \"moved\"", "www CNAME web.example.com."}
	if got := brief(zd.Records); !reflect.DeepEqual(got, want) {
		t.Fatalf("records = %q\nwant %q", got, want)
	}

	// Remove.
	if err := s.RemoveRecord(bg, "example.com", mx.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(bg, "example.com", mx.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Record after remove: %v, want ErrNotFound", err)
	}
	if route := mustData(t, s, "example.com").Route(); route != nil {
		t.Fatalf("Route after removing the MX = %+v", route)
	}
	if err := s.RemoveRecord(bg, "example.com", mx.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second RemoveRecord: %v, want ErrNotFound", err)
	}
	// Ids are never reused.
	n := mustAdd(t, s, "example.com", "new", "A", 300, "192.0.2.9")
	for _, r := range zd.Records {
		if r.ID == n.ID {
			t.Fatalf("id %s reused", n.ID)
		}
	}
}

// TestRecordTypes stores every supported type and reads it back canonical.
func TestRecordTypes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "example.com")
	long := strings.Repeat("b", 300)
	cases := []struct{ name, typ, data, want string }{
		{"a", "A", "192.0.2.1", "192.0.2.1"},
		{"aaaa", "AAAA", "2001:DB8::0001", "2001:db8::1"},
		{"cname", "CNAME", "target.example.net", "target.example.net."},
		{"@", "MX", "10 Mail.Example.net:2525", "10 mail.example.net.:2525"},
		{"@", "MX", "20 backup.example.net", "20 backup.example.net."},
		{"nomail", "MX", "0 .", "0 ."},
		{"sub", "NS", "ns1.example.net", "ns1.example.net."},
		{"txt", "TXT", `"one" "two \"quoted\""`, `"one" "two \"quoted\""`},
		{"long", "TXT", `"` + long + `"`, `"` + long[:255] + `" "` + long[255:] + `"`},
		{"_sip._tcp", "SRV", "10 60 5060 sip.example.com", "10 60 5060 sip.example.com."},
		{"@", "CAA", `0 issue "letsencrypt.org"`, `0 issue "letsencrypt.org"`},
		{"ptr", "PTR", "host.example.com", "host.example.com."},
		{"_25._tcp.mail", "TLSA", "3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
			"3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
		{"host", "SSHFP", "4 2 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
			"4 2 00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"},
		{"sub", "DS", "12345 13 2 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
			"12345 13 2 00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"},
		{"@", "HTTPS", `1 . alpn="h2,h3"`, `1 . alpn="h2,h3"`},
		{"_svc", "SVCB", "1 svc.example.net port=8443", `1 svc.example.net. port="8443"`},
		{"naptr", "NAPTR", `100 10 "S" "SIP+D2U" "" _sip._udp.example.com.`, `100 10 "S" "SIP+D2U" "" _sip._udp.example.com.`},
		{"loc", "LOC", "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m", "52 22 23.000 N 04 53 32.000 E -2m 0.00m 10000m 10m"},
		{"unknown", "TYPE65280", `\# 4 0a000001`, `\# 4 0a000001`},
		{"*.wild", "A", "192.0.2.3", "192.0.2.3"},
	}
	ids := map[string]int{}
	for i, tc := range cases {
		r := mustAdd(t, s, "example.com", tc.name, tc.typ, 300, tc.data)
		if r.Data != tc.want || r.Type != tc.typ {
			t.Errorf("AddRecord %s %s %q = %s %q, want %q", tc.name, tc.typ, tc.data, r.Type, r.Data, tc.want)
		}
		ids[r.ID] = i
	}
	// Read back, and again after reopening nothing else: through LoadAll.
	all, err := s.LoadAll(bg)
	if err != nil || len(all) != 1 {
		t.Fatalf("LoadAll: %d zones, %v", len(all), err)
	}
	seen := 0
	for _, r := range all[0].Records {
		i, ok := ids[r.ID]
		if !ok {
			continue
		}
		seen++
		tc := cases[i]
		name := tc.name
		if want := (record.Record{ID: r.ID, Name: name, Type: tc.typ, TTL: 300, Data: tc.want}); r != want {
			t.Errorf("stored %+v, want %+v", r, want)
		}
	}
	if seen != len(cases) {
		t.Fatalf("read back %d of %d records", seen, len(cases))
	}
	if !reflect.DeepEqual(all[0], mustData(t, s, "example.com")) {
		t.Fatalf("LoadAll and ZoneData differ")
	}
}

// TestZoneRules checks the rules that need the rest of the zone: each
// refused change names its field and writes nothing.
func TestZoneRules(t *testing.T) {
	t.Parallel()
	type rec = record.Record
	add := func(name, typ, data string) store.Op {
		return store.Op{Kind: store.OpAdd, Record: rec{Name: name, Type: typ, TTL: 300, Data: data}}
	}
	for _, tc := range []struct {
		name  string
		setup []store.Op
		// change builds the refused change; ids holds the setup's ids
		// and those of the two apex NS records as "ns1", "ns2".
		change func(ids map[string]string) store.Change
		is     error // nil: a validation error
		field  string
	}{
		{"CNAME beside existing A", []store.Op{add("www", "A", "192.0.2.1")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "CNAME", "target.example.net.")}}
			}, nil, "type"},
		{"A beside existing CNAME", []store.Op{add("www", "CNAME", "target.example.net.")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "A", "192.0.2.1")}}
			},
			nil, "type"},
		{"second CNAME", []store.Op{add("www", "CNAME", "target.example.net.")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "CNAME", "other.example.net.")}}
			}, nil, "type"},
		{"CNAME and TXT in one change", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "TXT", `"x"`), add("www", "CNAME", "target.example.net.")}}
			}, nil, "type"},
		{"CNAME beside existing A, other case of owner", []store.Op{add("www", "A", "192.0.2.1")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("WWW.example.com.", "CNAME", "target.example.net.")}}
			}, nil, "type"},
		{"update moves a CNAME beside an A", []store.Op{add("www", "A", "192.0.2.1"), add("alias", "CNAME", "target.example.net.")},
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: ids["alias"], Record: rec{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net."}}}}
			}, nil, "type"},
		{"update turns an A into a CNAME beside a TXT", []store.Op{add("www", "A", "192.0.2.1"), add("www", "TXT", `"x"`)},
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: ids["www"], Record: rec{Name: "www", Type: "CNAME", TTL: 300, Data: "target.example.net."}}}}
			}, nil, "type"},
		{"identical record", []store.Op{add("www", "A", "192.0.2.1")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "A", "192.0.2.1")}}
			},
			store.ErrExists, "data"},
		{"identical after normalisation", []store.Op{add("www", "TXT", `"hello" "world"`)},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www.example.com.", "txt", `hello world`)}}
			}, store.ErrExists, "data"},
		{"identical with another TTL", []store.Op{add("@", "MX", "10 mail.example.net:2525")},
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpAdd, Record: rec{Name: "@", Type: "MX", TTL: 900, Data: "10 MAIL.example.net.:2525"}}}}
			}, store.ErrExists, "data"},
		{"identical twice in one change", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("www", "A", "192.0.2.1"), add("www", "A", "192.0.2.1")}}
			}, store.ErrExists, "data"},
		{"update into a duplicate", []store.Op{add("www", "A", "192.0.2.1"), add("web", "A", "192.0.2.1")},
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: ids["web"], Record: rec{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}}}}
			}, store.ErrExists, "data"},
		{"remove the last apex NS", nil,
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpDelete, ID: ids["ns1"]}, {Kind: store.OpDelete, ID: ids["ns2"]}}}
			}, nil, "type"},
		{"update the last apex NS away", []store.Op{{Kind: store.OpDelete, ID: "ns2"}},
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: ids["ns1"], Record: rec{Name: "ns", Type: "NS", TTL: 300, Data: "ns1.fwd.test."}}}}
			}, nil, "type"},
		{"clear without NS", []store.Op{add("www", "A", "192.0.2.1")},
			func(map[string]string) store.Change {
				return store.Change{Clear: true, Ops: []store.Op{add("www", "A", "192.0.2.2")}}
			}, nil, "type"},
		{"update a missing id", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: "999", Record: rec{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}}}}
			}, store.ErrNotFound, ""},
		{"remove a missing id", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpDelete, ID: "999"}}}
			},
			store.ErrNotFound, ""},
		{"remove twice in one change", []store.Op{add("www", "A", "192.0.2.1")},
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{{Kind: store.OpDelete, ID: ids["www"]}, {Kind: store.OpDelete, ID: ids["www"]}}}
			}, store.ErrNotFound, ""},
		{"valid ops then a missing id", nil,
			func(ids map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("a", "A", "192.0.2.1"), {Kind: store.OpDelete, ID: ids["ns1"]}, {Kind: store.OpDelete, ID: "999"}}}
			}, store.ErrNotFound, ""},
		{"valid ops then an invalid record", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("a", "A", "192.0.2.1"), add("b", "A", "300.1.1.1")}}
			}, nil, "data"},
		{"bad SOA", nil,
			func(map[string]string) store.Change {
				return store.Change{Ops: []store.Op{add("a", "A", "192.0.2.1")}, SOA: &store.SOA{MName: "ns1.fwd.test.", RName: "x.", Refresh: 1}}
			}, nil, "soa.refresh"},
		{"SOA rname needing escapes", nil,
			func(map[string]string) store.Change {
				soa := store.SOA{MName: "ns1.fwd.test.", RName: "host'master.example.com.", Refresh: 3600, Retry: 900, Expire: 1209600, Minimum: 300, TTL: 3600}
				return store.Change{SOA: &soa}
			}, nil, "soa.rname"},
		{"stale IfVersion", []store.Op{add("www", "A", "192.0.2.1")},
			func(map[string]string) store.Change {
				return store.Change{IfVersion: 1, Ops: []store.Op{add("a", "A", "192.0.2.1")}}
			}, store.ErrConflict, ""},
		{"future IfVersion", nil,
			func(map[string]string) store.Change {
				return store.Change{IfVersion: 1000, Ops: []store.Op{add("a", "A", "192.0.2.1")}}
			}, store.ErrConflict, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			mustZone(t, s, "example.com")
			ids := map[string]string{}
			for _, r := range mustData(t, s, "example.com").Records {
				ids["ns"+strings.TrimSuffix(strings.TrimPrefix(r.Data, "ns"), ".fwd.test.")] = r.ID
			}
			for _, op := range tc.setup {
				if op.Kind == store.OpDelete {
					op.ID = ids[op.ID]
				}
				res, err := s.Change(bg, "example.com", store.Change{Ops: []store.Op{op}})
				if err != nil {
					t.Fatalf("setup %+v: %v", op, err)
				}
				if op.Kind == store.OpAdd {
					ids[op.Record.Name] = res.IDs[0]
				}
			}
			before := mustData(t, s, "example.com")
			_, err := s.Change(bg, "example.com", tc.change(ids))
			if err == nil {
				t.Fatal("change accepted")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			if tc.is == nil && (errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict)) {
				t.Fatalf("error %v, want a validation error", err)
			}
			if tc.field != "" && record.Field(err) != tc.field {
				t.Fatalf("error %q names field %q, want %q", err, record.Field(err), tc.field)
			}
			if after := mustData(t, s, "example.com"); !reflect.DeepEqual(after, before) {
				t.Fatalf("refused change wrote:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// TestQuiet checks RFC 2136 semantics: a quiet add of an existing record and
// a quiet delete of a missing one are no-ops, not errors.
func TestQuiet(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "example.com")
	a := mustAdd(t, s, "example.com", "www", "A", 300, "192.0.2.1")
	res, err := s.Change(bg, "example.com", store.Change{Ops: []store.Op{
		{Kind: store.OpAdd, Quiet: true, Record: record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}},
		{Kind: store.OpAdd, Quiet: true, Record: record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.2"}},
		{Kind: store.OpDelete, Quiet: true, ID: "999"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IDs) != 1 || res.IDs[0] == a.ID {
		t.Fatalf("IDs = %q, want one new id", res.IDs)
	}
	if got, want := brief(mustData(t, s, "example.com").Records),
		[]string{"@ NS ns1.fwd.test.", "@ NS ns2.fwd.test.", "www A 192.0.2.1", "www A 192.0.2.2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

// TestNoOpChange checks that a change of only quiet no-ops keeps serial and
// version (RFC 2136 3.7) and publishes nothing.
func TestNoOpChange(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	mustZone(t, s, "noop.test")
	mustAdd(t, s, "noop.test", "www", "A", 300, "192.0.2.1")
	before := mustData(t, s, "noop.test")
	sub, err := s.Subscribe(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	res, err := s.Change(bg, "noop.test", store.Change{Ops: []store.Op{
		{Kind: store.OpAdd, Quiet: true, Record: record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"}},
		{Kind: store.OpDelete, Quiet: true, ID: "999"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Serial != before.Serial || res.Version != before.Version || len(res.IDs) != 0 {
		t.Fatalf("no-op change gave %+v; zone was at serial %d version %d", res, before.Serial, before.Version)
	}
	// The next real change's event is the first one the subscriber sees.
	mustAdd(t, s, "noop.test", "www", "A", 300, "192.0.2.2")
	select {
	case ev := <-sub.C:
		if ev.Version != before.Version+1 {
			t.Fatalf("first event after the no-op has version %d, want %d", ev.Version, before.Version+1)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the real change")
	}
}

// TestChangeIsOneEvent checks that a Change of several ops bumps the serial
// and the version once and publishes one event.
func TestChangeIsOneEvent(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	z := mustZone(t, s, "one-event.test")
	old := mustAdd(t, s, "one-event.test", "old", "A", 300, "192.0.2.1")
	before := mustData(t, s, "one-event.test")
	sub, err := s.Subscribe(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	res, err := s.Change(bg, "one-event.test", store.Change{IfVersion: before.Version, Ops: []store.Op{
		{Kind: store.OpAdd, Record: record.Record{Name: "a", Type: "A", TTL: 300, Data: "192.0.2.2"}},
		{Kind: store.OpAdd, Record: record.Record{Name: "b", Type: "AAAA", TTL: 300, Data: "2001:db8::2"}},
		{Kind: store.OpPut, ID: old.ID, Record: record.Record{Name: "old", Type: "A", TTL: 300, Data: "192.0.2.3"}},
		{Kind: store.OpAdd, Record: record.Record{Name: "c", Type: "TXT", TTL: 300, Data: `"c"`}},
		{Kind: store.OpDelete, ID: old.ID},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != before.Version+1 || res.Serial != before.Serial+1 || len(res.IDs) != 3 {
		t.Fatalf("Result %+v; before version %d serial %d", res, before.Version, before.Serial)
	}
	after := mustData(t, s, "one-event.test")
	if after.Version != res.Version || after.Serial != res.Serial {
		t.Fatalf("zone at %d/%d, Result says %d/%d", after.Version, after.Serial, res.Version, res.Serial)
	}
	if got, want := brief(after.Records), []string{"@ NS ns1.fwd.test.", "@ NS ns2.fwd.test.",
		"a A 192.0.2.2", "b AAAA 2001:db8::2", `c TXT "c"`}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	// IfVersion with the version now current succeeds; the old one conflicts.
	if _, err := s.Change(bg, "one-event.test", store.Change{IfVersion: before.Version, Ops: []store.Op{{Kind: store.OpDelete, ID: res.IDs[0]}}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale IfVersion: %v, want ErrConflict", err)
	}
	res2, err := s.Change(bg, "one-event.test", store.Change{IfVersion: res.Version, Ops: []store.Op{{Kind: store.OpDelete, ID: res.IDs[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	// The events of this zone: exactly one per successful change, in order.
	var got []store.Event
	timeout := time.After(10 * time.Second)
	for len(got) == 0 || got[len(got)-1].Version < res2.Version {
		select {
		case ev := <-sub.C:
			if ev.Zone == "one-event.test" && ev.Gen == z.Gen {
				got = append(got, ev)
			}
		case <-timeout:
			t.Fatalf("events so far %+v; want up to version %d", got, res2.Version)
		}
	}
	want := []store.Event{
		{Kind: store.EventZone, Zone: "one-event.test", Version: res.Version, Serial: res.Serial, Gen: z.Gen},
		{Kind: store.EventZone, Zone: "one-event.test", Version: res2.Version, Serial: res2.Serial, Gen: z.Gen},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %+v\nwant %+v", got, want)
	}
}

// TestSerial checks YYYYMMDDnn serials under an injected clock: strictly
// increasing, also past 99 changes in a day and across days (RFC 1912 2.2).
func TestSerial(t *testing.T) {
	t.Parallel()
	c := newClock(day(2024, 3, 5))
	s := newStoreAt(t, c)
	z := mustZone(t, s, "serial.test")
	if z.Serial != 2024030500 {
		t.Fatalf("new zone serial %d, want 2024030500", z.Serial)
	}
	last := z.Serial
	r := mustAdd(t, s, "serial.test", "www", "A", 300, "192.0.2.1")
	for i := 1; i <= 150; i++ {
		data := fmt.Sprintf("192.0.2.%d", i%200+2)
		res, err := s.Change(bg, "serial.test", store.Change{Ops: []store.Op{{Kind: store.OpPut, ID: r.ID,
			Record: record.Record{Name: "www", Type: "A", TTL: 300, Data: data}}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Serial <= last {
			t.Fatalf("change %d: serial %d after %d", i, res.Serial, last)
		}
		last = res.Serial
	}
	// 1 add + 150 changes after 2024030500: the counter overflowed into
	// the next day's values.
	if last != 2024030651 {
		t.Fatalf("after 151 changes in one day serial is %d, want 2024030651", last)
	}
	// The next day: still above what was published.
	c.Set(day(2024, 3, 6))
	res, err := s.SetSOA(bg, "serial.test", s.DefaultSOA("serial.test"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Serial != 2024030652 {
		t.Fatalf("next day serial %d, want 2024030652", res.Serial)
	}
	// Days later the date takes over again.
	c.Set(day(2024, 3, 10))
	if err := s.RemoveRecord(bg, "serial.test", r.ID); err != nil {
		t.Fatal(err)
	}
	if zd := mustData(t, s, "serial.test"); zd.Serial != 2024031000 {
		t.Fatalf("serial %d, want 2024031000", zd.Serial)
	}
	// A clock that goes back never lowers the serial.
	c.Set(day(2023, 1, 1))
	mustAdd(t, s, "serial.test", "back", "A", 300, "192.0.2.1")
	if zd := mustData(t, s, "serial.test"); zd.Serial != 2024031001 {
		t.Fatalf("serial after the clock went back %d, want 2024031001", zd.Serial)
	}
	// A new zone on that day starts at the date.
	c.Set(day(2025, 12, 31))
	if z := mustZone(t, s, "serial2.test"); z.Serial != 2025123100 {
		t.Fatalf("serial %d, want 2025123100", z.Serial)
	}
}

func TestImportZone(t *testing.T) {
	t.Parallel()
	c := newClock(day(2024, 3, 5))
	s := newStoreAt(t, c)
	soa := store.SOA{MName: "NS1.Example.net", RName: "admin.example.com.", Refresh: 7200, Retry: 600,
		Expire: 604800, Minimum: 60, TTL: 1800}
	recs := []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns1.example.net."},
		{Name: "@", Type: "MX", TTL: 3600, Data: "10 home.example.net:2525"},
		{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.1"},
	}
	// A file serial above today's floor is kept.
	z, err := s.ImportZone(bg, "import.test", "acme", soa, 2030010105, recs, false)
	if err != nil {
		t.Fatal(err)
	}
	wantSOA := soa
	wantSOA.MName = "ns1.example.net."
	if z.Serial != 2030010105 || z.SOA != wantSOA || z.Version != 1 {
		t.Fatalf("ImportZone = %+v", z)
	}
	zd := mustData(t, s, "import.test")
	if zd.SOA != wantSOA || zd.Serial != 2030010105 || zd.Account != "acme" {
		t.Fatalf("imported zone %+v", zd.Zone)
	}
	if got, want := brief(zd.Records), []string{"@ MX 10 home.example.net.:2525", "@ NS ns1.example.net.", "www A 192.0.2.1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}

	// Without replace an existing zone is left alone.
	if _, err := s.ImportZone(bg, "import.test", "acme", soa, 0, recs[:1], false); !errors.Is(err, store.ErrExists) {
		t.Fatalf("import over an existing zone: %v, want ErrExists", err)
	}
	// A refused import writes nothing.
	bad := append([]record.Record{}, recs...)
	bad = append(bad, record.Record{Name: "www", Type: "CNAME", TTL: 300, Data: "x.example.net."})
	if _, err := s.ImportZone(bg, "import.test", "acme", soa, 0, bad, true); record.Field(err) != "type" {
		t.Fatalf("import with a CNAME conflict: %v, want an error on type", err)
	}
	if after := mustData(t, s, "import.test"); !reflect.DeepEqual(after, zd) {
		t.Fatalf("refused import changed the zone")
	}

	// Replace: new SOA fields and exactly the new records, one change; a
	// lower file serial does not lower the zone's.
	soa2 := soa
	soa2.Refresh = 3600
	recs2 := []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns2.example.net."},
		{Name: "mail", Type: "A", TTL: 300, Data: "192.0.2.25"},
	}
	z2, err := s.ImportZone(bg, "import.test", "acme", soa2, 2024030500, recs2, true)
	if err != nil {
		t.Fatal(err)
	}
	wantSOA.Refresh = 3600
	if z2.Serial != 2030010106 || z2.SOA != wantSOA || z2.Version != 2 || z2.Gen != z.Gen {
		t.Fatalf("replacing import = %+v", z2)
	}
	if got, want := brief(mustData(t, s, "import.test").Records), []string{"@ NS ns2.example.net.", "mail A 192.0.2.25"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records after replace %q, want %q", got, want)
	}
	// A replace keeps the higher file serial.
	z3, err := s.ImportZone(bg, "import.test", "acme", soa2, 2031000000, recs2, true)
	if err != nil || z3.Serial != 2031000000 {
		t.Fatalf("import with a higher serial: %+v, %v", z3, err)
	}
	// Replace creates a zone that does not exist.
	if z, err := s.ImportZone(bg, "fresh.test", "acme", soa, 0, recs, true); err != nil || z.Serial != 2024030500 {
		t.Fatalf("replace of a missing zone: %+v, %v", z, err)
	}
}

func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value string
		want  string
	}{
		{"99", "schema version 99"},
		{"0", "schema version 0"},
		{"garbage", `mx:schema holds "garbage"`},
	} {
		url := storetest.NewURL(t)
		if err := rawClient(t, url).Set(bg, "mx:schema", tc.value, 0).Err(); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(bg, url, storetest.Options)
		if err == nil {
			s.Close()
			t.Fatalf("Open with mx:schema=%s succeeded", tc.value)
		}
		if !strings.Contains(err.Error(), tc.want) || errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Open with mx:schema=%s: %q, want it to mention %q, and not as ErrUnavailable", tc.value, err, tc.want)
		}
	}
	// An empty Redis gets the current version.
	url := storetest.NewURL(t)
	s, err := store.Open(bg, url, storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if v, err := rawClient(t, url).Get(bg, "mx:schema").Int(); err != nil || v != store.SchemaVersion {
		t.Fatalf("mx:schema = %d, %v; want %d", v, err, store.SchemaVersion)
	}
	// And it opens again.
	s, err = store.Open(bg, url, storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestOpenUnavailable is not parallel: a test starting a server could take
// the closed port meanwhile.
func TestOpenUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	s, err := store.Open(bg, "redis://"+addr+"/0", storetest.Options)
	if err == nil {
		s.Close()
		t.Fatal("Open of a closed port succeeded")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v", d)
	}

	// A server that accepts but never answers: Open gives up in time.
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start = time.Now()
	s, err = store.Open(bg, "redis://"+l.Addr().String()+"/0", storetest.Options)
	if err == nil {
		s.Close()
		t.Fatal("Open of a silent server succeeded")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of a silent server: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open of a silent server took %v", d)
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want redis.UniversalOptions
		tls  bool
		unix bool
	}{
		{"redis://127.0.0.1:6379/0", redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}}, false, false},
		{"redis://localhost", redis.UniversalOptions{Addrs: []string{"localhost:6379"}}, false, false},
		{"redis://user:p%40ss@h:6380/3", redis.UniversalOptions{Addrs: []string{"h:6380"}, DB: 3, Username: "user", Password: "p@ss"}, false, false},
		{"rediss://:pw@h:6380/2", redis.UniversalOptions{Addrs: []string{"h:6380"}, DB: 2, Password: "pw"}, true, false},
		{"unix:///run/redis/redis.sock?db=4", redis.UniversalOptions{Addrs: []string{"/run/redis/redis.sock"}, DB: 4}, false, true},
		{"redis-sentinel://h1:26379,h2:26379/2?master=mymaster", redis.UniversalOptions{
			Addrs: []string{"h1:26379", "h2:26379"}, DB: 2, MasterName: "mymaster"}, false, false},
		{"redis-sentinel://u:p@h1:26379?master=m&sentinel_password=sp", redis.UniversalOptions{
			Addrs: []string{"h1:26379"}, Username: "u", Password: "p", MasterName: "m", SentinelPassword: "sp"}, false, false},
		{"redis-cluster://a:7000,b:7001", redis.UniversalOptions{Addrs: []string{"a:7000", "b:7001"}, IsClusterMode: true}, false, false},
		{"redis-cluster://a:7000", redis.UniversalOptions{Addrs: []string{"a:7000"}, IsClusterMode: true}, false, false},
		{"redis-cluster://:pw@a:7000,b:7001,c:7002", redis.UniversalOptions{Addrs: []string{"a:7000", "b:7001", "c:7002"}, Password: "pw", IsClusterMode: true}, false, false},
	} {
		got, err := store.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if (got.TLSConfig != nil) != tc.tls || (got.Dialer != nil) != tc.unix {
			t.Errorf("ParseURL(%q): TLS %v, unix dialer %v", tc.url, got.TLSConfig != nil, got.Dialer != nil)
		}
		got.TLSConfig, got.Dialer = nil, nil
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v\nwant %+v", tc.url, *got, tc.want)
		}
	}
	for _, bad := range []string{
		"",
		"localhost:6379",
		"http://localhost:6379",
		"redis://h:6379/notadb",
		"redis-sentinel://h1:26379,h2:26379/2",
		"redis-sentinel://h1/0?master=m",
		"redis-sentinel://h1:26379/x?master=m",
		"redis-sentinel://h1:26379,/0?master=m",
		"redis-cluster://",
		"redis-cluster://a",
		"redis-cluster://a:7000,",
		"redis-cluster://:hunter2secret@a:7000,b",
	} {
		got, err := store.ParseURL(bad)
		if err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", bad, got)
			continue
		}
		if strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("ParseURL(%q): error shows the password: %v", bad, err)
		}
	}
}

// TestLimits checks the per-owner and per-zone record limits: the change
// that would pass one is refused whole, naming the field.
func TestLimits(t *testing.T) {
	t.Parallel()
	const maxZone, maxOwner = 300, 100
	o := storetest.Options
	o.MaxZoneRecords, o.MaxOwnerRecords = maxZone, maxOwner
	s := withAccount(t, storetest.NewWith(t, o))
	mustZone(t, s, "big.test")
	many := func(n int, owner func(i int) string) store.Change {
		var ops []store.Op
		for i := 0; i < n; i++ {
			ops = append(ops, store.Op{Kind: store.OpAdd, Record: record.Record{Name: owner(i), Type: "TXT", TTL: 300, Data: `"` + strconv.Itoa(i) + `"`}})
		}
		return store.Change{Ops: ops}
	}
	sameOwner := func(int) string { return "crowd" }
	if _, err := s.Change(bg, "big.test", many(maxOwner+1, sameOwner)); record.Field(err) != "name" {
		t.Fatalf("%d records at one owner: err %v, want a refusal naming field name", maxOwner+1, err)
	}
	if _, err := s.Change(bg, "big.test", many(maxOwner, sameOwner)); err != nil {
		t.Fatalf("%d records at one owner: %v", maxOwner, err)
	}
	spread := func(i int) string { return "h" + strconv.Itoa(i) }
	n := maxZone - maxOwner - 2 // the zone's NS and crowd already count
	if _, err := s.Change(bg, "big.test", many(n+1, spread)); record.Field(err) != "zone" {
		t.Fatalf("zone over %d records: err %v, want a refusal naming field zone", maxZone, err)
	}
	if _, err := s.Change(bg, "big.test", many(n, spread)); err != nil {
		t.Fatalf("zone at exactly %d records: %v", maxZone, err)
	}
	if got := len(mustData(t, s, "big.test").Records); got != maxZone {
		t.Fatalf("zone holds %d records, want %d", got, maxZone)
	}
}
