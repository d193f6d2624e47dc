package dnsserver_test

// Tests with the real tools of issue 4: dig (bind9-dnsutils) reads our
// answers, Knot (knotd) is a real secondary that transfers a zone with TSIG
// and follows our NOTIFY, and nsupdate (bind9-dnsutils) sends TSIG-signed
// UPDATEs. A missing tool fails the test: make test installs it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver"
	"github.com/mxport/mxport/dnsserver/update"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// toolsStore returns a fresh store with the service's test MX and NS hosts.
func toolsStore(t *testing.T) *store.Store {
	t.Helper()
	return storetest.NewWith(t, store.Options{
		MXHosts: []string{"mx1.fwd.test", "mx2.fwd.test"},
		NS:      []string{"ns1.fwd.test", "ns2.fwd.test"},
	})
}

// toolsZone creates zone (with the store's default SOA and NS) and adds recs.
func toolsZone(t *testing.T, st *store.Store, zone string, recs ...record.Record) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.EnsureAccount(ctx, "tools", store.RoleCustomer); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateZone(ctx, zone, "tools"); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if _, err := st.AddRecord(ctx, zone, r); err != nil {
			t.Fatalf("add %+v: %v", r, err)
		}
	}
}

func rec(name, typ string, ttl uint32, data string) record.Record {
	return record.Record{Name: name, Type: typ, TTL: ttl, Data: data}
}

// toolsServe starts a dnsserver.Server on a UDP socket and a TCP listener
// sharing one 127.0.0.1 port, with an Updater, and waits until the index
// has loaded the store and knows every key in keys. It returns the
// address and the server.
func toolsServe(t *testing.T, st *store.Store, notify []string, keys ...string) (string, *dnsserver.Server) {
	t.Helper()
	known := map[string]string{}
	for _, k := range keys {
		known[dns.Fqdn(k)] = ""
	}
	p := protoStart(t, st, known, dnsserver.Config{
		MXHosts: []string{"mx1.fwd.test", "mx2.fwd.test"},
		Notify:  notify,
		Updater: update.New(st),
	})
	return p.addr, p.Server
}

// toolPath finds a tool on PATH or in the sbin directories, or fails.
func toolPath(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s not found (Debian package %s; make test installs it)", name, pkg)
	return ""
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// ---- dig ----

// digResult is dig's output, parsed.
type digResult struct {
	status   string
	flags    map[string]bool
	sections map[string][][]string // "ANSWER", "AUTHORITY", "ADDITIONAL" -> records as fields
	out      string
}

var (
	digStatus = regexp.MustCompile(`->>HEADER<<-.*status: ([A-Z]+)`)
	digFlags  = regexp.MustCompile(`^;; flags:([^;]*);`)
	digSect   = regexp.MustCompile(`^;; ([A-Z]+) SECTION:$`)
)

// dig runs dig against addr with args and parses header, flags and
// sections.
func dig(t *testing.T, addr string, args ...string) digResult {
	t.Helper()
	bin := toolPath(t, "dig", "bind9-dnsutils")
	host, port := hostPort(t, addr)
	argv := append([]string{"@" + host, "-p", port, "+norec", "+time=2", "+tries=2",
		"+noall", "+comments", "+question", "+answer", "+authority", "+additional"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	r := digResult{flags: map[string]bool{}, sections: map[string][][]string{}, out: string(out)}
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if m := digStatus.FindStringSubmatch(line); m != nil {
			r.status = m[1]
		}
		if m := digFlags.FindStringSubmatch(line); m != nil {
			for _, f := range strings.Fields(m[1]) {
				r.flags[f] = true
			}
		}
		if m := digSect.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		if section == "" {
			t.Fatalf("dig: record line outside a section: %q\n%s", line, out)
		}
		r.sections[section] = append(r.sections[section], strings.Fields(line))
	}
	if r.status == "" {
		t.Fatalf("dig %s: no header in output:\n%s", strings.Join(argv, " "), out)
	}
	return r
}

// rows returns a section's records of type typ as "owner rdata..." strings
// (TTL and class left out), lower case.
func (r digResult) rows(section, typ string) []string {
	var out []string
	for _, f := range r.sections[section] {
		if len(f) >= 4 && f[3] == typ {
			out = append(out, strings.ToLower(strings.Join(append([]string{f[0]}, f[4:]...), " ")))
		}
	}
	return out
}

func (r digResult) count(section string) int { return len(r.sections[section]) }

func TestToolsDig(t *testing.T) {
	st := toolsStore(t)
	toolsZone(t, st, "example.com",
		rec("@", "MX", 3600, "10 mail.example.com:2525"),
		rec("mail", "A", 300, "192.0.2.25"),
		rec("*", "A", 300, "192.0.2.10"),
		rec("sub", "NS", 3600, "ns1.sub.example.com."),
		rec("ns1.sub", "A", 3600, "192.0.2.53"),
	)
	addr, _ := toolsServe(t, st, nil)

	for _, transport := range []string{"+notcp", "+tcp"} {
		t.Run(transport, func(t *testing.T) {
			// Forwarded MX: the service's hosts, 10 and 20, never the
			// customer's target or port.
			r := dig(t, addr, transport, "example.com", "MX")
			if r.status != "NOERROR" || !r.flags["aa"] || r.flags["ra"] || r.flags["rd"] || !r.flags["qr"] {
				t.Fatalf("MX: status %s flags %v, want NOERROR with qr aa, no ra/rd\n%s", r.status, r.flags, r.out)
			}
			want := []string{"example.com. 10 mx1.fwd.test.", "example.com. 20 mx2.fwd.test."}
			if got := r.rows("ANSWER", "MX"); !reflect.DeepEqual(got, want) || r.count("ANSWER") != 2 {
				t.Fatalf("MX answer %q, want %q\n%s", got, want, r.out)
			}
			if strings.Contains(r.out, "mail.example.com") || strings.Contains(r.out, "2525") {
				t.Fatalf("MX answer shows the customer's target:\n%s", r.out)
			}

			// Wildcard (RFC 4592): the answer has the query's name.
			r = dig(t, addr, transport, "Anything.Example.com", "A")
			if r.status != "NOERROR" || !r.flags["aa"] || r.flags["ra"] {
				t.Fatalf("wildcard: status %s flags %v\n%s", r.status, r.flags, r.out)
			}
			if got, want := r.rows("ANSWER", "A"), []string{"anything.example.com. 192.0.2.10"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("wildcard answer %q, want %q\n%s", got, want, r.out)
			}
			if !strings.Contains(r.out, ";Anything.Example.com.") {
				t.Fatalf("wildcard: the question's case is not preserved:\n%s", r.out)
			}

			// Referral: no aa, NS in authority, glue in additional, no answer.
			r = dig(t, addr, transport, "www.sub.example.com", "A")
			if r.status != "NOERROR" || r.flags["aa"] || r.flags["ra"] || r.count("ANSWER") != 0 {
				t.Fatalf("referral: status %s flags %v, want NOERROR without aa and answer\n%s", r.status, r.flags, r.out)
			}
			if got, want := r.rows("AUTHORITY", "NS"), []string{"sub.example.com. ns1.sub.example.com."}; !reflect.DeepEqual(got, want) {
				t.Fatalf("referral authority %q, want %q\n%s", got, want, r.out)
			}
			if got, want := r.rows("ADDITIONAL", "A"), []string{"ns1.sub.example.com. 192.0.2.53"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("referral glue %q, want %q\n%s", got, want, r.out)
			}

			// Not hosted here: REFUSED, no recursion offered.
			r = dig(t, addr, transport, "example.org", "A")
			if r.status != "REFUSED" || r.flags["ra"] {
				t.Fatalf("outside: status %s flags %v, want REFUSED without ra\n%s", r.status, r.flags, r.out)
			}
		})
	}

	// +short, as people use it.
	bin := toolPath(t, "dig", "bind9-dnsutils")
	host, port := hostPort(t, addr)
	out, err := exec.Command(bin, "@"+host, "-p", port, "+short", "+time=2", "example.com", "MX").CombinedOutput()
	if err != nil {
		t.Fatalf("dig +short: %v\n%s", err, out)
	}
	if got, want := strings.Fields(string(out)), []string{"10", "mx1.fwd.test.", "20", "mx2.fwd.test."}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dig +short MX: %q, want %q", got, want)
	}
}

// ---- Knot as a secondary ----

// lockedBuffer collects a process's output for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// freeUDPTCPPort returns a loopback port free for UDP and TCP right now.
func freeUDPTCPPort(t *testing.T) int {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}

// knot is a knotd process secondary for one zone.
type knot struct {
	addr string
	log  *lockedBuffer
}

// startKnot runs knotd in the foreground on 127.0.0.1 port as secondary
// for zone from primary, transferring with key; it accepts unsigned NOTIFY
// from 127.0.0.1. It is stopped at t's cleanup.
func startKnot(t *testing.T, port int, zone, primary string, key store.TSIGKey) *knot {
	t.Helper()
	bin := toolPath(t, "knotd", "knot")
	dir := t.TempDir()
	for _, d := range []string{"run", "storage"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, pport := hostPort(t, primary)
	keyID := strings.TrimSuffix(key.Name, ".")
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s/run"
    listen: 127.0.0.1@%[2]d

log:
  - target: stderr
    any: info

database:
    storage: "%[1]s/storage"

key:
  - id: %[3]s
    algorithm: %[4]s
    secret: %[5]s

remote:
  - id: ours
    address: 127.0.0.1@%[6]s
    key: %[3]s

acl:
  - id: notify-from-ours
    address: 127.0.0.1
    action: notify

template:
  - id: default
    storage: "%[1]s/storage"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none

zone:
  - domain: %[7]s
    master: ours
    acl: notify-from-ours
`, dir, port, keyID, strings.TrimSuffix(key.Algorithm, "."), key.Secret, pport, zone)
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	k := &knot{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: &lockedBuffer{}}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = k.log, k.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start knotd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("knotd log:\n%s", k.log.String())
		}
	})
	// Wait until it answers at all (SERVFAIL while the zone is not loaded).
	protoPoll(t, 10*time.Second, "knotd answering", func() error {
		select {
		case <-exited:
			return fmt.Errorf("knotd exited: %v", cmd.ProcessState)
		default:
		}
		_, err := exchange(k.addr, zone, dns.TypeSOA)
		return err
	})
	return k
}

// exchange sends one plain query over UDP.
func exchange(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// soaSerial asks addr for zone's SOA and returns its serial.
func soaSerial(addr, zone string) (uint32, error) {
	r, err := exchange(addr, zone, dns.TypeSOA)
	if err != nil {
		return 0, err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return 0, fmt.Errorf("SOA %s: %s with %d answers", zone, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	soa, ok := r.Answer[0].(*dns.SOA)
	if !ok {
		return 0, fmt.Errorf("SOA %s: answer %v", zone, r.Answer[0])
	}
	return soa.Serial, nil
}

func TestToolsKnotSecondary(t *testing.T) {
	ctx := context.Background()
	st := toolsStore(t)
	toolsZone(t, st, "example.com",
		rec("@", "MX", 3600, "10 mail.example.com:2525"),
		rec("mail", "A", 300, "192.0.2.25"),
		rec("www", "AAAA", 300, "2001:db8::80"),
		rec("@", "TXT", 300, `"v=spf1 -all"`),
	)
	// Enough data that a transfer takes several messages, each signed
	// (RFC 8945 5.3.1), which Knot verifies.
	var ops []store.Op
	for i := 0; i < 2000; i++ {
		ops = append(ops, store.Op{Kind: store.OpAdd, Record: rec(fmt.Sprintf("host-%d", i), "TXT", 300,
			fmt.Sprintf(`"%d %s"`, i, strings.Repeat("x", 100)))})
	}
	if _, err := st.Change(ctx, "example.com", store.Change{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	key, err := st.CreateTSIGKey(ctx, "xfr-key", "hmac-sha256", []string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	// Knot's port first: our server NOTIFYs it. The zone and key exist
	// before our server starts, so its first load announces nothing and
	// the NOTIFY after the write below is the one that matters.
	knotPort := freeUDPTCPPort(t)
	knotAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(knotPort))
	addr, _ := toolsServe(t, st, []string{knotAddr}, key.Name)
	zd, err := st.ZoneData(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	k := startKnot(t, knotPort, "example.com", addr, key)

	// Knot bootstraps the zone from us: AXFR (or IXFR answered in full)
	// signed with xfr-key; our server allows no unsigned transfer
	// (Config.AllowTransfer is empty), so a transfer is a signed one.
	protoPoll(t, 10*time.Second, "knot has our serial", func() error {
		s, err := soaSerial(k.addr, "example.com")
		if err == nil && s != zd.Serial {
			err = fmt.Errorf("knot serial %d, ours %d", s, zd.Serial)
		}
		return err
	})
	// The transferred data: the forwarded MX as we publish it.
	r, err := exchange(k.addr, "example.com", dns.TypeMX)
	if err != nil {
		t.Fatal(err)
	}
	var mxs []string
	for _, rr := range r.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, fmt.Sprintf("%d %s", mx.Preference, mx.Mx))
		}
	}
	if want := []string{"10 mx1.fwd.test.", "20 mx2.fwd.test."}; !reflect.DeepEqual(mxs, want) {
		t.Fatalf("knot's MX %q, want %q", mxs, want)
	}
	if got := countTransfers(k.log.String()); got < 1 {
		t.Fatalf("knot logged no finished transfer:\n%s", k.log.String())
	}
	if !multiMessage.MatchString(k.log.String()) {
		t.Fatalf("the transfer took one message; the test wants several:\n%s", k.log.String())
	}
	r, err = exchange(k.addr, "host-1999.example.com", dns.TypeTXT)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("knot's answer for host-1999.example.com: %v %v", r, err)
	}

	// A store write: our server NOTIFYs Knot, which transfers again and
	// serves the new record and serial, long before its refresh timer.
	if _, err := st.AddRecord(ctx, "example.com", rec("new", "A", 300, "192.0.2.77")); err != nil {
		t.Fatal(err)
	}
	zd2, err := st.ZoneData(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if zd2.Serial == zd.Serial {
		t.Fatalf("serial not bumped: %d", zd2.Serial)
	}
	start := time.Now()
	protoPoll(t, 10*time.Second, "knot serves the new serial", func() error {
		s, err := soaSerial(k.addr, "example.com")
		if err == nil && s != zd2.Serial {
			err = fmt.Errorf("knot serial %d, ours %d", s, zd2.Serial)
		}
		return err
	})
	r, err = exchange(k.addr, "new.example.com", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.77" {
		t.Fatalf("knot's answer for new.example.com: %v", r)
	}
	// Knot says it acted on a NOTIFY and transferred a second time. It may
	// serve the new zone a moment before its log line reaches us.
	protoPoll(t, 5*time.Second, "knot logs the NOTIFY and the second transfer", func() error {
		if log := k.log.String(); !strings.Contains(log, "notify, incoming") || countTransfers(log) < 2 {
			return fmt.Errorf("knot logged no NOTIFY or no second transfer:\n%s", log)
		}
		return nil
	})
	t.Logf("knot serves serial %d %v after the store write", zd2.Serial, time.Since(start).Round(time.Millisecond))
}

var multiMessage = regexp.MustCompile(`finished, [0-9.]+ seconds, ([2-9]|[1-9][0-9]+) messages`)

// countTransfers counts the finished incoming transfers in Knot's log.
func countTransfers(log string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "incoming") && strings.Contains(l, "finished") {
			n++
		}
	}
	return n
}

// ---- nsupdate ----

// nsupdate runs nsupdate (signed with keyArg "alg:name:secret" unless
// empty) on a script sent to addr for zone example.com; it returns the
// output and whether nsupdate succeeded.
func nsupdate(t *testing.T, addr, keyArg string, updates ...string) (string, bool) {
	t.Helper()
	bin := toolPath(t, "nsupdate", "bind9-dnsutils")
	host, port := hostPort(t, addr)
	script := fmt.Sprintf("server %s %s\nzone example.com\n%s\nsend\n", host, port, strings.Join(updates, "\n"))
	args := []string{"-t", "10"}
	if keyArg != "" {
		args = append(args, "-y", keyArg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("nsupdate: %v\n%s", err, out)
	}
	return string(out), err == nil
}

// txts returns the TXT records at owner in the store's zone.
func txts(zd store.ZoneData, owner string) []string {
	var out []string
	for _, r := range zd.Records {
		if r.Name == owner && r.Type == "TXT" {
			out = append(out, r.Data)
		}
	}
	return out
}

func TestToolsNsupdate(t *testing.T) {
	ctx := context.Background()
	st := toolsStore(t)
	toolsZone(t, st, "example.com", rec("www", "A", 300, "192.0.2.80"))
	toolsZone(t, st, "other.test")
	acme, err := st.CreateTSIGKey(ctx, "acme-key", "hmac-sha256", []string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.CreateTSIGKey(ctx, "other-key", "hmac-sha256", []string{"other.test"})
	if err != nil {
		t.Fatal(err)
	}
	acme512, err := st.CreateTSIGKey(ctx, "acme-512", "hmac-sha512", []string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := toolsServe(t, st, nil, acme.Name, other.Name, acme512.Name)
	keyArg := func(k store.TSIGKey, secret string) string {
		return strings.TrimSuffix(k.Algorithm, ".") + ":" + strings.TrimSuffix(k.Name, ".") + ":" + secret
	}
	const owner = "_acme-challenge"
	const add = `update add _acme-challenge.example.com 60 TXT "token-1"`
	zoneData := func() store.ZoneData {
		t.Helper()
		zd, err := st.ZoneData(ctx, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		return zd
	}
	// dnsTXT polls our server until the TXT answer at the owner is want.
	dnsTXT := func(want []string) {
		t.Helper()
		protoPoll(t, 5*time.Second, "TXT answer "+strings.Join(want, ","), func() error {
			r, err := exchange(addr, owner+".example.com", dns.TypeTXT)
			if err != nil {
				return err
			}
			var got []string
			for _, rr := range r.Answer {
				if txt, ok := rr.(*dns.TXT); ok {
					got = append(got, strings.Join(txt.Txt, ""))
				}
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("%s, TXT %q", dns.RcodeToString[r.Rcode], got)
			}
			return nil
		})
	}

	// Failures that must change nothing, with nsupdate's report of the RCODE.
	wrongSecret := make([]byte, 32)
	for i := range wrongSecret {
		wrongSecret[i] = byte(i)
	}
	failures := []struct {
		name    string
		key     string
		updates []string
		want    string // nsupdate's report
	}{
		{"wrong secret", keyArg(acme, base64Std(wrongSecret)), []string{add}, "update failed: NOTAUTH(BADSIG)"},
		{"unknown key", "hmac-sha256:no-such-key:" + acme.Secret, []string{add}, "update failed: NOTAUTH(BADKEY)"},
		{"key of another zone", keyArg(other, other.Secret), []string{add}, "update failed: NOTAUTH"},
		{"name outside the zone", keyArg(acme, acme.Secret), []string{`update add _acme-challenge.example.net 60 TXT "token-1"`}, "update failed: NOTZONE"},
		{"unsigned", "", []string{add}, "update failed: REFUSED"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			before := zoneData()
			out, ok := nsupdate(t, addr, tc.key, tc.updates...)
			if ok {
				t.Fatalf("nsupdate succeeded:\n%s", out)
			}
			var report string
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "update failed:") {
					report = strings.TrimSpace(line)
				}
			}
			if report != tc.want {
				t.Fatalf("nsupdate reported %q, want %q:\n%s", report, tc.want, out)
			}
			after := zoneData()
			if after.Serial != before.Serial || after.Version != before.Version || !reflect.DeepEqual(after.Records, before.Records) {
				t.Fatalf("zone changed: serial %d -> %d, records %v -> %v", before.Serial, after.Serial, before.Records, after.Records)
			}
		})
	}

	// certbot-dns-rfc2136 first asks for the zone's SOA with the key and
	// checks that the answer is signed; then it sends its UPDATE.
	t.Run("signed SOA query", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			m := new(dns.Msg)
			m.SetQuestion("example.com.", dns.TypeSOA)
			m.SetTsig(acme.Name, dns.HmacSHA256, 300, time.Now().Unix())
			c := &dns.Client{Net: network, Timeout: 2 * time.Second, TsigSecret: map[string]string{acme.Name: acme.Secret}}
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatalf("%s: signed SOA query: %v", network, err) // includes a TSIG that does not verify
			}
			rt := r.IsTsig()
			if rt == nil || rt.Hdr.Name != acme.Name || rt.Error != dns.RcodeSuccess {
				t.Fatalf("%s: response TSIG %v, want one signed with %s", network, rt, acme.Name)
			}
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
				t.Fatalf("%s: SOA response %v", network, r)
			}
		}
	})

	// The ACME dance: add the TXT, see it in the store and in DNS, delete
	// it (with an hmac-sha512 key of the zone: both algorithms work).
	before := zoneData()
	out, ok := nsupdate(t, addr, keyArg(acme, acme.Secret), add)
	if !ok {
		t.Fatalf("nsupdate add failed:\n%s", out)
	}
	added := zoneData()
	if got, want := txts(added, owner), []string{`"token-1"`}; !reflect.DeepEqual(got, want) {
		t.Fatalf("store TXT after add: %q, want %q (records %v)", got, want, added.Records)
	}
	if added.Serial == before.Serial || len(added.Records) != len(before.Records)+1 {
		t.Fatalf("add: serial %d -> %d, %d -> %d records", before.Serial, added.Serial, len(before.Records), len(added.Records))
	}
	dnsTXT([]string{"token-1"})

	out, ok = nsupdate(t, addr, keyArg(acme512, acme512.Secret), `update delete _acme-challenge.example.com TXT "token-1"`)
	if !ok {
		t.Fatalf("nsupdate delete failed:\n%s", out)
	}
	deleted := zoneData()
	if got := txts(deleted, owner); len(got) != 0 {
		t.Fatalf("store TXT after delete: %q", got)
	}
	if deleted.Serial == added.Serial || !reflect.DeepEqual(deleted.Records, before.Records) {
		t.Fatalf("delete: serial %d -> %d, records %v, want %v", added.Serial, deleted.Serial, deleted.Records, before.Records)
	}
	dnsTXT(nil)
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
