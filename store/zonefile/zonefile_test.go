package zonefile_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
	"github.com/mxport/mxport/store/zonefile"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestMain(m *testing.M) { storetest.Main(m) }

var policy = record.Policy{MXHosts: storetest.Options.MXHosts}

// parseFile parses a testdata file.
func parseFile(t *testing.T, path, origin string) *zonefile.File {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f, err := zonefile.Parse(fh, origin, filepath.Base(path), policy)
	if err != nil {
		t.Fatalf("Parse %s: %v", path, err)
	}
	return f
}

// key is a record without its ID, for comparisons.
type key struct {
	Name, Type string
	TTL        uint32
	Data       string
}

func keys(recs []record.Record) []key {
	out := make([]key, len(recs))
	for i, r := range recs {
		out[i] = key{r.Name, r.Type, r.TTL, r.Data}
	}
	sort.Slice(out, func(i, j int) bool {
		return fmt.Sprint(out[i]) < fmt.Sprint(out[j])
	})
	return out
}

func sameRecords(t *testing.T, got, want []record.Record) {
	t.Helper()
	g, w := keys(got), keys(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	t.Errorf("records differ: got %d, want %d", len(g), len(w))
	gs := map[key]bool{}
	for _, k := range g {
		gs[k] = true
	}
	ws := map[key]bool{}
	for _, k := range w {
		ws[k] = true
		if !gs[k] {
			t.Errorf("  missing: %v", k)
		}
	}
	for _, k := range g {
		if !ws[k] {
			t.Errorf("  extra:   %v", k)
		}
	}
}

func find(recs []record.Record, name, typ string) []record.Record {
	var out []record.Record
	for _, r := range recs {
		if r.Name == name && r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// checkzone runs named-checkzone -k fail on the zone file at path.
func checkzone(t *testing.T, zone, path string) {
	t.Helper()
	bin, err := exec.LookPath("named-checkzone")
	if err != nil {
		t.Fatal("named-checkzone not found: install bind9-utils (make test does)")
	}
	out, err := exec.Command(bin, "-k", "fail", zone, path).CombinedOutput()
	if err != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("named-checkzone -k fail %s refuses the export: %v\n%s\nfile:\n%s", zone, err, out, data)
	}
}

// export writes zd to a file in a temporary directory, checks it with
// named-checkzone and parses it again.
func export(t *testing.T, zd store.ZoneData) (*zonefile.File, []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := zonefile.Write(&b, zd); err != nil {
		t.Fatalf("Write: %v", err)
	}
	path := filepath.Join(t.TempDir(), zd.Name+".zone")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	checkzone(t, zd.Name, path)
	f, err := zonefile.Parse(bytes.NewReader(b.Bytes()), "", path, policy)
	if err != nil {
		t.Fatalf("Parse of the export: %v\n%s", err, b.Bytes())
	}
	return f, b.Bytes()
}

func zoneData(f *zonefile.File) store.ZoneData {
	return store.ZoneData{Zone: store.Zone{Name: f.Name, Serial: f.Serial, SOA: f.SOA}, Records: f.Records}
}

func TestRealWorldZone(t *testing.T) {
	f := parseFile(t, "testdata/example.com.zone", "")
	if f.Name != "example.com" {
		t.Errorf("Name = %q, want example.com", f.Name)
	}
	if f.Serial != 2024061501 {
		t.Errorf("Serial = %d, want 2024061501", f.Serial)
	}
	wantSOA := store.SOA{MName: "ns1.example.com.", RName: "hostmaster.example.com.",
		Refresh: 7200, Retry: 900, Expire: 1209600, Minimum: 300, TTL: 3600}
	if f.SOA != wantSOA {
		t.Errorf("SOA = %+v, want %+v", f.SOA, wantSOA)
	}
	if len(f.Records) != 27 {
		t.Errorf("%d records, want 27", len(f.Records))
	}
	for _, r := range f.Records {
		if r.ID != "" {
			t.Errorf("record %v has an ID", r)
		}
	}
	counts := map[string]int{}
	for _, r := range f.Records {
		counts[r.Type]++
	}
	wantCounts := map[string]int{"NS": 3, "MX": 2, "TXT": 3, "CAA": 2, "A": 6, "AAAA": 3, "HTTPS": 1,
		"CNAME": 1, "SRV": 1, "TLSA": 1, "SSHFP": 1, "SVCB": 1, "PTR": 1, "TYPE65280": 1}
	if !reflect.DeepEqual(counts, wantCounts) {
		t.Errorf("types: %v, want %v", counts, wantCounts)
	}

	dkim := "v=DKIM1; k=rsa; p=" + func() string {
		const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		var s strings.Builder
		for i := 0; i < 280; i++ {
			s.WriteByte(b64[(i*7)%64])
		}
		return s.String()
	}()
	exact := []key{
		{"@", "MX", 3600, "10 mail.example.com.:2525"},
		{"@", "MX", 3600, "20 backup.example.org."},
		{"@", "TXT", 300, `"v=spf1 mx -all"`},
		{"@", "CAA", 3600, `0 issue "letsencrypt.org"`},
		{"@", "HTTPS", 3600, `1 . alpn="h2,h3"`},
		{"mail", "A", 600, "198.51.100.25"},
		{"www", "CNAME", 3600, "example.com."},
		{"*.dev", "A", 3600, "192.0.2.80"},
		{"_dmarc", "TXT", 3600, `"v=DMARC1; p=reject; rua=mailto:\"dmarc\"@example.com" "second string"`},
		{"selector1._domainkey", "TXT", 3600, `"` + dkim[:250] + `" "` + dkim[250:] + `"`},
		{"_sip._tcp", "SRV", 3600, "10 60 5060 sip.example.com."},
		{"_svc", "SVCB", 3600, `1 svc1.example.net. port="8443"`},
		{"b._dns-sd._udp", "PTR", 3600, "example.com."},
		{"private", "TYPE65280", 3600, `\# 4 0a000001`},
		{"sub", "NS", 3600, "ns1.sub.example.com."},
		{"ns1.sub", "AAAA", 3600, "2001:db8::153"},
	}
	have := map[key]bool{}
	for _, k := range keys(f.Records) {
		have[k] = true
	}
	for _, k := range exact {
		if !have[k] {
			t.Errorf("missing record %v; have %v", k, find(f.Records, k.Name, k.Type))
		}
	}
	route := record.Route(f.Records)
	if len(route) != 2 || route[0].Address() != "mail.example.com:2525" || route[1].Address() != "backup.example.org:25" {
		t.Errorf("route = %v, want mail.example.com:2525 then backup.example.org:25", route)
	}

	// The same file with the origin given gives the same zone.
	g := parseFile(t, "testdata/example.com.zone", "Example.COM.")
	sameRecords(t, g.Records, f.Records)
	// So does the file with CRLF line ends.
	src, err := os.ReadFile("testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	crlf := bytes.ReplaceAll(src, []byte("\n"), []byte("\r\n"))
	g, err = zonefile.Parse(bytes.NewReader(crlf), "", "crlf", policy)
	if err != nil {
		t.Fatalf("CRLF: %v", err)
	}
	sameRecords(t, g.Records, f.Records)

	// Export, named-checkzone, import: nothing lost, the port kept.
	again, out := export(t, zoneData(f))
	if !bytes.Contains(out, []byte("\tMX\t10 mail.example.com. ; mxport:port=2525\n")) {
		t.Errorf("export lacks the MX port comment:\n%s", out)
	}
	if again.Name != f.Name || again.SOA != f.SOA || again.Serial != f.Serial {
		t.Errorf("re-import: %s %+v %d, want %s %+v %d", again.Name, again.SOA, again.Serial, f.Name, f.SOA, f.Serial)
	}
	sameRecords(t, again.Records, f.Records)
}

// TestLongString: one quoted string over 255 bytes (BIND refuses it) is
// split by the parser into 255-byte strings, and so exported cleanly.
func TestLongString(t *testing.T) {
	long := strings.Repeat("x", 300)
	src := "$ORIGIN example.org.\n@ 3600 IN SOA ns.example.net. h.example.org. 7 3600 900 1209600 300\n" +
		"@ 3600 NS ns.example.net.\n@ 3600 TXT \"" + long + "\"\n"
	f, err := zonefile.Parse(strings.NewReader(src), "", "long", policy)
	if err != nil {
		t.Fatal(err)
	}
	txt := find(f.Records, "@", "TXT")
	want := `"` + long[:255] + `" "` + long[255:] + `"`
	if len(txt) != 1 || txt[0].Data != want {
		t.Fatalf("TXT = %v, want data %s", txt, want)
	}
	again, _ := export(t, zoneData(f))
	sameRecords(t, again.Records, f.Records)
}

func TestPortComment(t *testing.T) {
	for _, c := range []struct {
		comment string
		data    string
	}{
		{"; mxport:port=2525", "10 mail.example.com.:2525"},
		{";mxport:port=2525", "10 mail.example.com.:2525"},
		{";   mxport : port = 2526   ", "10 mail.example.com.:2526"},
		{"; home server ; mxport:port=587 ; moved 2024", "10 mail.example.com.:587"},
		{"; MXPORT:PORT=465", "10 mail.example.com.:465"},
		{"; mxport:port=25", "10 mail.example.com."},
		{"; primary mail server", "10 mail.example.com."},
		{"; port=2525", "10 mail.example.com."},
		{"", "10 mail.example.com."},
	} {
		src := "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns.example.net. h.example.com. 1 3600 900 1209600 300\n" +
			"@ NS ns.example.net.\n@ MX 10 mail " + c.comment + "\n" +
			"www A 192.0.2.1 ; mxport:port=2525 is not for an A record\n"
		f, err := zonefile.Parse(strings.NewReader(src), "example.com", "", policy)
		if err != nil {
			t.Errorf("comment %q: %v", c.comment, err)
			continue
		}
		mx := find(f.Records, "@", "MX")
		if len(mx) != 1 || mx[0].Data != c.data {
			t.Errorf("comment %q: MX %v, want data %q", c.comment, mx, c.data)
		}
		if a := find(f.Records, "www", "A"); len(a) != 1 || a[0].Data != "192.0.2.1" {
			t.Errorf("comment %q: A %v", c.comment, a)
		}
	}
}

// TestDuplicates: identical records are kept once (RFC 2181 5), so a file
// BIND loads does not fail the store's duplicate check.
func TestDuplicates(t *testing.T) {
	src := "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns.example.net. h.example.com. 1 3600 900 1209600 300\n" +
		"@ NS ns.example.net.\n@  NS   ns.example.net.\nwww A 192.0.2.1\nwww 300 A 192.0.2.1\nwww A 192.0.2.2\n"
	f, err := zonefile.Parse(strings.NewReader(src), "", "", policy)
	if err != nil {
		t.Fatal(err)
	}
	want := []record.Record{
		{Name: "@", Type: "NS", TTL: 3600, Data: "ns.example.net."},
		{Name: "www", Type: "A", TTL: 3600, Data: "192.0.2.1"},
		{Name: "www", Type: "A", TTL: 3600, Data: "192.0.2.2"},
	}
	sameRecords(t, f.Records, want)
}

const head = "$ORIGIN example.com.\n" + // 1
	"$TTL 3600\n" + // 2
	"@ IN SOA ns1 hostmaster ( 2024010101 3600 900\n" + // 3
	"\t\t1209600 300 ) ; comment (with a parenthesis\n" + // 4
	"@ IN NS ns1\n" + // 5
	"ns1 IN A 192.0.2.53\n" + // 6
	"www TXT \"a;(b\" ( \"c\" ; comment \"\n" + // 7
	"\t\")\" )\n" // 8

func TestBroken(t *testing.T) {
	for _, c := range []struct {
		name   string
		origin string
		src    string
		line   int    // 0: none expected
		want   string // in the error
		field  string // record.Field of the error
	}{
		{"bad A data", "", head + "\nmail A 192.0.2.256\n", 10, `bad A A: "192.0.2.256"`, ""},
		{"unbalanced parenthesis", "", head + "mail TXT ( \"a\"\n\"b\"\n", 10, "unbalanced brace", ""},
		{"extra parenthesis", "", head + "mail A 192.0.2.1 )\n", 9, "extra closing brace", ""},
		{"missing SOA", "", "$ORIGIN example.com.\n@ 3600 NS ns1.example.net.\n", 0, "no SOA record", ""},
		{"missing SOA with origin", "example.com", "@ 3600 NS ns1.example.net.\n", 0, "no SOA record for zone example.com", ""},
		{"two SOAs", "", head + "\n@ SOA ns1 h 1 3600 900 1209600 300\n", 10, "a second SOA record (the first is at line 3)", ""},
		{"SOA not at apex", "example.com", "$TTL 300\nsub.example.com. SOA ns1.example.com. h.example.com. 1 3600 900 1209600 300\n",
			2, "sub.example.com. SOA: the SOA record must be at the zone apex", ""},
		{"outside the zone", "", head + "www.example.org. A 192.0.2.1\n", 9, "www.example.org. A: owner www.example.org. is outside zone example.com", ""},
		{"outside the zone, origin given", "example.net", head, 3, "example.com. SOA: owner example.com. is outside zone example.net", ""},
		{"CNAME at the apex", "", head + "\n@ CNAME (\n\twww.example.net.\n\t)\n", 10, "example.com. CNAME: type: a CNAME cannot be at the zone apex", "type"},
		{"last line without newline", "", head + "\n@ CNAME www", 10, "example.com. CNAME: type: a CNAME cannot be at the zone apex", "type"},
		{"after a quoted parenthesis", "", head + "txt TXT \"a(b\" \"\\\"(\"\n@ CNAME www\n", 10, "example.com. CNAME: type: a CNAME cannot be at the zone apex", "type"},
		{"class CH", "", head + "version CH TXT \"9.18\"\n", 9, "version.example.com. TXT: class CH is not IN", ""},
		{"port on our own MX host", "", head + "@ MX 10 mx1.fwd.test. ; mxport:port=2525\n", 9, "example.com. MX: data: forwarding target mx1.fwd.test is one of this service's own MX hosts", "data"},
		{"port on a non-apex MX", "", head + "sub MX 10 mail ; mxport:port=2525\n", 9, "sub.example.com. MX: data: an MX port is only allowed on apex MX records", "data"},
		{"bad port", "", head + "@ MX 10 mail ; mxport:port=65536\n", 9, "mxport:port=65536 is not a port number", "data"},
		{"two ports", "", head + "@ MX 10 mail ; mxport:port=2525 mxport:port=2526\n", 9, "more than one mxport:port comment", ""},
		{"TTL out of range", "", head + "www 5 A 192.0.2.1\n", 9, "www.example.com. A: ttl: TTL 5 is outside", "ttl"},
		{"refused type", "", head + "www NSEC www.example.com. A\n", 9, "www.example.com. NSEC: type: NSEC cannot be stored", "type"},
		{"bad target", "", head + "@ MX 10 192.0.2.1.\n", 9, "MX target", "data"},
		{"include", "", head + "$INCLUDE /etc/passwd\n", 9, "$INCLUDE directive not allowed", ""},
		{"relative name without origin", "", "@ 3600 SOA ns1 h 1 3600 900 1209600 300\n", 1, "bad owner name", ""},
		{"bad origin", "exa mple.com", head, 0, "origin: name:", "name"},
		{"SOA without data", "", "$ORIGIN example.com.\n@ 300 SOA\n", 2, "example.com. SOA: the SOA record has no data", ""},
		{"SOA MNAME with an escape", "", "$ORIGIN example.com.\n@ 300 SOA ns\\(1 h 1 3600 900 1209600 300\n", 2, `example.com. SOA: soa.mname: "ns\\(1.example.com." is not a host name`, "soa.mname"},
		{"SOA RNAME with a quote", "", "$ORIGIN example.com.\n@ 300 SOA ns1 h'x 1 3600 900 1209600 300\n", 2, `example.com. SOA: soa.rname: "h'x.example.com." is not a host name`, "soa.rname"},
		{"SOA TTL", "", "$ORIGIN example.com.\n@ 0 SOA ns1 h 1 3600 900 1209600 300\n", 2, "soa.ttl: TTL 0 is outside", "soa.ttl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := zonefile.Parse(strings.NewReader(c.src), c.origin, "broken.zone", policy)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", f)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "zonefile: ") || !strings.Contains(msg, "broken.zone") {
				t.Errorf("error %q does not start with zonefile: and name the file", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not contain %q", msg, c.want)
			}
			if c.line != 0 {
				re := regexp.MustCompile(fmt.Sprintf(`(line %d: |at line: %d:\d+$)`, c.line, c.line))
				if !re.MatchString(msg) {
					t.Errorf("error %q does not give line %d", msg, c.line)
				}
			}
			if got := record.Field(err); got != c.field {
				t.Errorf("record.Field = %q, want %q", got, c.field)
			}
		})
	}
}

// TestLineNumbers moves each record of the real-world file but the SOA
// out of the zone in turn: the error must give the line the record
// starts on, multi-line records and all.
func TestLineNumbers(t *testing.T) {
	src, err := os.ReadFile("testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(src), "\n")
	n := 0
	for i, l := range lines {
		if l == "" || strings.ContainsAny(l[:1], " \t\n;$") || strings.Contains(l, "SOA") {
			continue
		}
		owner := strings.Fields(l)[0]
		moved := append([]string(nil), lines...)
		moved[i] = "outside.example.org." + strings.TrimPrefix(l, owner)
		for _, eol := range []string{"\n", "\r\n"} {
			src := strings.ReplaceAll(strings.Join(moved, ""), "\n", eol)
			_, err := zonefile.Parse(strings.NewReader(src), "", "lines.zone", policy)
			want := fmt.Sprintf("lines.zone: line %d: outside.example.org. ", i+1)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("line %d moved out of the zone (line end %q): error %v, want %q", i+1, eol, err, want)
			}
		}
		n++
	}
	if n != 25 {
		t.Errorf("%d record lines tried, want 25", n)
	}
}

func TestLimits(t *testing.T) {
	// 2 × 65535 generated records + the SOA: over MaxRecords.
	src := "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 300\n" +
		"$GENERATE 1-65535 a$ A 192.0.2.1\n$GENERATE 1-65535 b$ A 192.0.2.1\n"
	_, err := zonefile.Parse(strings.NewReader(src), "", "big.zone", policy)
	if err == nil || !strings.Contains(err.Error(), "big.zone: more than 100000 records") {
		t.Errorf("too many records: %v", err)
	}

	big := "$ORIGIN example.com.\n@ 300 SOA ns1 h 1 3600 900 1209600 300\n" +
		strings.Repeat(";"+strings.Repeat("x", 1022)+"\n", 10<<10)
	_, err = zonefile.Parse(strings.NewReader(big), "", "big.zone", policy)
	if err == nil || !strings.Contains(err.Error(), "big.zone: file is larger than 10 MiB") {
		t.Errorf("too big: %v", err)
	}
	if _, err = zonefile.Parse(strings.NewReader(big[:zonefile.MaxSize]), "", "big.zone", policy); err != nil {
		t.Errorf("10 MiB exactly: %v", err)
	}

	// The limits, lowered: 10 records (the SOA and 9) pass, 11 do not.
	restore := zonefile.SetLimits(10, zonefile.MaxData)
	defer restore()
	src = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 300\n$GENERATE 1-9 a$ A 192.0.2.$\n"
	if f, err := zonefile.Parse(strings.NewReader(src), "", "big.zone", policy); err != nil || len(f.Records) != 9 {
		t.Errorf("at the record limit: %v", err)
	}
	src += "b A 192.0.2.1\n"
	if _, err := zonefile.Parse(strings.NewReader(src), "", "big.zone", policy); err == nil || !strings.Contains(err.Error(), "more than 10 records") {
		t.Errorf("over the record limit: %v", err)
	}
	// $GENERATE turns one short line into many records of 51 kB each.
	restore()
	defer zonefile.SetLimits(zonefile.MaxRecords, 1<<20)()
	txt := strings.Repeat(`"`+strings.Repeat("y", 255)+`" `, 200)
	src = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 300\n" +
		"$GENERATE 1-65535 t$ TXT " + txt + "\n"
	_, err = zonefile.Parse(strings.NewReader(src), "", "big.zone", policy)
	if err == nil || !strings.Contains(err.Error(), "big.zone: line 4: the records take more than 1 MiB") {
		t.Errorf("too much data: %v", err)
	}
}

// TestStoreRoundTrip imports a zone file into a real store, exports the
// store's data and imports that again.
func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	if _, err := s.CreateAccount(ctx, "c1", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	f := parseFile(t, "testdata/example.com.zone", "")
	if _, err := s.ImportZone(ctx, f.Name, "c1", f.SOA, f.Serial, f.Records, false); err != nil {
		t.Fatalf("ImportZone: %v", err)
	}
	zd, err := s.ZoneData(ctx, f.Name)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, zd.Records, f.Records)
	if zd.SOA != f.SOA {
		t.Errorf("stored SOA %+v, want %+v", zd.SOA, f.SOA)
	}
	again, out := export(t, zd)
	if !bytes.Contains(out, []byte(fmt.Sprintf("serial %d\n", zd.Serial))) {
		t.Errorf("export header lacks serial %d:\n%s", zd.Serial, out)
	}
	if again.Serial != zd.Serial || again.SOA != zd.SOA || again.Name != zd.Name {
		t.Errorf("re-import: %s %+v %d, want %s %+v %d", again.Name, again.SOA, again.Serial, zd.Name, zd.SOA, zd.Serial)
	}
	sameRecords(t, again.Records, f.Records)
	if r := zd.Route(); len(r) == 0 || r[0].Port != 2525 {
		t.Errorf("stored zone route %v, want mail.example.com:2525 first", r)
	}

	// Replace with the export of the export: the same zone.
	if _, err := s.ImportZone(ctx, again.Name, "c1", again.SOA, again.Serial, again.Records, true); err != nil {
		t.Fatalf("ImportZone replace: %v", err)
	}
	zd2, err := s.ZoneData(ctx, f.Name)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, zd2.Records, f.Records)

	// CNAME and other data at one name: Parse takes it (the rule needs
	// the whole zone); the store refuses the import and names the owner.
	src := "$ORIGIN example.net.\n$TTL 3600\n@ SOA ns1.example.com. h.example.net. 1 3600 900 1209600 300\n" +
		"@ NS ns1.example.com.\nwww CNAME example.net.\nwww TXT \"hello\"\n"
	bad, err := zonefile.Parse(strings.NewReader(src), "", "cname.zone", policy)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	_, err = s.ImportZone(ctx, bad.Name, "c1", bad.SOA, bad.Serial, bad.Records, false)
	if err == nil || !strings.Contains(err.Error(), "CNAME cannot coexist with other records at www") {
		t.Errorf("ImportZone of CNAME and TXT at www: %v", err)
	}
	if _, err := s.ZoneData(ctx, "example.net"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused import left a zone: %v", err)
	}
}

// golden is a zone built by hand: records out of order, a forwarded MX, a
// wildcard, a delegation with glue, an unknown type, a long TXT.
var golden = store.ZoneData{
	Zone: store.Zone{
		Name: "example.com", Serial: 2024123199,
		SOA: store.SOA{MName: "ns1.fwd.test.", RName: "hostmaster.example.com.", Refresh: 3600,
			Retry: 900, Expire: 1209600, Minimum: 300, TTL: 3600},
	},
	Records: []record.Record{
		{ID: "9", Name: "www", Type: "A", TTL: 300, Data: "192.0.2.10"},
		{ID: "1", Name: "@", Type: "MX", TTL: 3600, Data: "20 backup.example.net."},
		{ID: "2", Name: "@", Type: "MX", TTL: 3600, Data: "10 home.example.com.:2525"},
		{ID: "3", Name: "@", Type: "NS", TTL: 3600, Data: "ns2.fwd.test."},
		{ID: "4", Name: "@", Type: "NS", TTL: 3600, Data: "ns1.fwd.test."},
		{ID: "5", Name: "@", Type: "A", TTL: 300, Data: "192.0.2.1"},
		{ID: "6", Name: "home", Type: "A", TTL: 60, Data: "198.51.100.7"},
		{ID: "7", Name: "*.dev", Type: "CNAME", TTL: 300, Data: "www.example.com."},
		{ID: "8", Name: "_dmarc", Type: "TXT", TTL: 3600, Data: `"v=DMARC1; p=none" "rua=mailto:\"d\"@example.com"`},
		{ID: "10", Name: "sub", Type: "NS", TTL: 86400, Data: "ns.sub.example.com."},
		{ID: "11", Name: "ns.sub", Type: "A", TTL: 86400, Data: "192.0.2.53"},
		{ID: "12", Name: "x", Type: "TYPE65280", TTL: 300, Data: `\# 4 0a000001`},
		{ID: "13", Name: "_xmpp-server._tcp", Type: "SRV", TTL: 3600, Data: "5 0 5269 home.example.com."},
		{ID: "14", Name: "@", Type: "TXT", TTL: 3600, Data: `"v=spf1 -all"`},
		{ID: "15", Name: "a.b", Type: "AAAA", TTL: 300, Data: "2001:db8::7"},
		{ID: "16", Name: "b", Type: "A", TTL: 300, Data: "192.0.2.16"},
	},
}

func TestWriteGolden(t *testing.T) {
	var b bytes.Buffer
	if err := zonefile.Write(&b, golden); err != nil {
		t.Fatal(err)
	}
	path := "testdata/example.com.golden"
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./store/zonefile -update to create it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("Write output differs from %s (go test ./store/zonefile -update rewrites it):\ngot:\n%s\nwant:\n%s", path, b.Bytes(), want)
	}
	checkzone(t, "example.com", path)
	f, err := zonefile.Parse(bytes.NewReader(want), "example.com", path, policy)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, f.Records, golden.Records)
	if f.Serial != golden.Serial || f.SOA != golden.SOA {
		t.Errorf("golden re-import: serial %d SOA %+v", f.Serial, f.SOA)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrors(t *testing.T) {
	if err := zonefile.Write(failWriter{}, golden); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("write error: %v", err)
	}
	zd := golden
	zd.Records = []record.Record{{Name: "www", Type: "A", TTL: 300, Data: "not an address"}}
	if err := zonefile.Write(&bytes.Buffer{}, zd); err == nil {
		t.Error("Write took a bad record")
	}
	zd = golden
	zd.SOA.MName = ""
	if err := zonefile.Write(&bytes.Buffer{}, zd); err == nil {
		t.Error("Write took an SOA without MNAME")
	}
	zd = golden
	zd.Name = "bad name"
	if err := zonefile.Write(&bytes.Buffer{}, zd); err == nil {
		t.Error("Write took a bad zone name")
	}
}

// FuzzParse: Parse never panics, and whatever it accepts survives Write and
// Parse unchanged.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.zone")
	goldens, _ := filepath.Glob("testdata/*.golden")
	for _, p := range append(paths, goldens...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "example.com")
	}
	f.Add([]byte(head+"@ MX 10 mail ; mxport:port=2525\n"), "")
	f.Add([]byte(head+"x TYPE65280 \\# 0\n"), "example.com")
	f.Add([]byte(head+"$GENERATE 1-3 h$ A 192.0.2.$\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, origin string) {
		zf, err := zonefile.Parse(bytes.NewReader(data), origin, "fuzz", policy)
		if err != nil {
			return
		}
		zd := store.ZoneData{Zone: store.Zone{Name: zf.Name, Serial: zf.Serial, SOA: zf.SOA}, Records: zf.Records}
		var b bytes.Buffer
		if err := zonefile.Write(&b, zd); err != nil {
			t.Fatalf("Write of a parsed zone: %v", err)
		}
		again, err := zonefile.Parse(&b, "", "export", policy)
		if err != nil {
			t.Fatalf("Parse of the export: %v\n%s", err, b.Bytes())
		}
		if again.Name != zf.Name || again.Serial != zf.Serial || again.SOA != zf.SOA {
			t.Fatalf("SOA changed: %+v -> %+v", zf, again)
		}
		if !reflect.DeepEqual(keys(again.Records), keys(zf.Records)) {
			t.Fatalf("records changed:\n%v\n->\n%v", keys(zf.Records), keys(again.Records))
		}
	})
}
