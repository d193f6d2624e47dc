package dyndns

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// env is a store with three tenants and a server running Register:
// customer alice (example.com, example.org), customer bob (other.test),
// registrar reg with its customer carol (carol.test).
type env struct {
	st                               *store.Store
	ctx                              context.Context
	srv                              *httptest.Server
	url                              string // http://host:port
	addr                             string // host:port
	alice, bob, reg, carol, operator string // API tokens
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = storetest.New(t)
	}
	st := cfg.Store
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []struct {
		id     string
		role   store.Role
		parent string
	}{{"alice", store.RoleCustomer, ""}, {"bob", store.RoleCustomer, ""}, {"reg", store.RoleRegistrar, ""}, {"carol", store.RoleCustomer, "reg"}, {"ops", store.RoleOperator, ""}} {
		_, err := st.CreateAccount(ctx, a.id, a.role, a.parent)
		must(err)
	}
	for z, acct := range map[string]string{"example.com": "alice", "example.org": "alice", "other.test": "bob", "carol.test": "carol"} {
		_, err := st.CreateZone(ctx, z, acct)
		must(err)
	}
	e := &env{st: st, ctx: ctx}
	for _, tk := range []struct {
		acct string
		dst  *string
	}{{"alice", &e.alice}, {"bob", &e.bob}, {"reg", &e.reg}, {"carol", &e.carol}, {"ops", &e.operator}} {
		secret, _, err := st.CreateToken(ctx, tk.acct, "test")
		must(err)
		*tk.dst = secret
	}
	if cfg.Auth == nil {
		cfg.Auth = auth.New(st)
	}
	ec := echo.New()
	ec.HideBanner, ec.HidePort = true, true
	Register(ec, cfg)
	e.srv = httptest.NewServer(ec)
	t.Cleanup(e.srv.Close)
	e.url = e.srv.URL
	e.addr = strings.TrimPrefix(e.srv.URL, "http://")
	return e
}

// nic calls /nic/update with query q and basic auth ("x", token; none when
// token is "").
func (e *env) nic(t *testing.T, token, q string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", e.url+"/nic/update?"+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth("x", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	return resp.StatusCode, string(body)
}

// rrset returns the data of zone's records at owner of type typ, sorted,
// each as "TTL DATA".
func (e *env) rrset(t *testing.T, zone, owner, typ string) []string {
	t.Helper()
	zd, err := e.st.ZoneData(e.ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range zd.Records {
		if r.Name == owner && r.Type == typ {
			out = append(out, strings.Join([]string{strconv.Itoa(int(r.TTL)), r.Data}, " "))
		}
	}
	slices.Sort(out)
	return out
}

func (e *env) add(t *testing.T, zone string, r record.Record) {
	t.Helper()
	if _, err := e.st.AddRecord(e.ctx, zone, r); err != nil {
		t.Fatal(err)
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t, Config{})
	e.add(t, "example.com", record.Record{Name: "ttl", Type: "A", TTL: 300, Data: "192.0.2.8"})
	e.add(t, "example.com", record.Record{Name: "ttl", Type: "A", TTL: 300, Data: "192.0.2.9"})
	e.add(t, "example.com", record.Record{Name: "alias", Type: "CNAME", TTL: 300, Data: "home.example.com."})
	e.add(t, "example.com", record.Record{Name: "dual", Type: "AAAA", TTL: 120, Data: "2001:db8::99"})

	steps := []nicStep{
		{"good", e.alice, "hostname=home.example.com&myip=192.0.2.1", 200, "good 192.0.2.1\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.1"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"nochg", e.alice, "hostname=home.example.com&myip=192.0.2.1", 200, "nochg 192.0.2.1\n", nil},
		{"changed again", e.alice, "hostname=HOME.example.com.&myip=192.0.2.2&system=dyndns&wildcard=NOCHG", 200, "good 192.0.2.2\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.2"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"rrset replaced, TTL kept", e.alice, "hostname=ttl.example.com&myip=192.0.2.9", 200, "good 192.0.2.9\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "ttl", "A"); !slices.Equal(got, []string{"300 192.0.2.9"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"apex", e.alice, "hostname=example.com&myip=192.0.2.10", 200, "good 192.0.2.10\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "@", "A"); !slices.Equal(got, []string{"60 192.0.2.10"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"ipv6 in myip", e.alice, "hostname=v6.example.com&myip=2001:DB8::1", 200, "good 2001:db8::1\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "v6", "AAAA"); !slices.Equal(got, []string{"60 2001:db8::1"}) {
				t.Errorf("AAAA = %v", got)
			}
			if got := e.rrset(t, "example.com", "v6", "A"); got != nil {
				t.Errorf("A = %v, want none", got)
			}
		}},
		{"myip and myipv6", e.alice, "hostname=dual.example.com&myip=192.0.2.3&myipv6=2001:db8::3", 200, "good 192.0.2.3,2001:db8::3\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "dual", "A"); !slices.Equal(got, []string{"60 192.0.2.3"}) {
				t.Errorf("A = %v", got)
			}
			if got := e.rrset(t, "example.com", "dual", "AAAA"); !slices.Equal(got, []string{"120 2001:db8::3"}) {
				t.Errorf("AAAA = %v", got)
			}
		}},
		{"myip with both families", e.alice, "hostname=dual.example.com&myip=192.0.2.3,2001:db8::4", 200, "good 192.0.2.3,2001:db8::4\n", nil},
		{"mapped ipv4", e.alice, "hostname=dual.example.com&myip=::ffff:192.0.2.3", 200, "nochg 192.0.2.3\n", nil},
		{"several hostnames", e.alice, "hostname=a.example.com,b.example.org,x.other.test,bad!name.example.com,nowhere.invalid,localhost&myip=192.0.2.4", 200,
			"good 192.0.2.4\ngood 192.0.2.4\nnohost\nnotfqdn\nnohost\nnotfqdn\n", func(t *testing.T) {
				if got := e.rrset(t, "example.org", "b", "A"); !slices.Equal(got, []string{"60 192.0.2.4"}) {
					t.Errorf("b.example.org A = %v", got)
				}
				if got := e.rrset(t, "other.test", "x", "A"); got != nil {
					t.Errorf("x.other.test A = %v, want none", got)
				}
			}},
		{"cname at the name", e.alice, "hostname=alias.example.com&myip=192.0.2.5", 200, "dnserr\n", nil},
		{"no hostname", e.alice, "myip=192.0.2.5", 200, "notfqdn\n", nil},
		{"wildcard", e.alice, "hostname=*.example.com&myip=192.0.2.5", 200, "notfqdn\n", nil},
		{"too many hosts", e.alice, "hostname=" + strings.Repeat("a.example.com,", MaxHosts) + "b.example.com&myip=192.0.2.5", 200, "numhost\n", nil},
		{"another tenant's zone", e.bob, "hostname=home.example.com&myip=192.0.2.66", 200, "nohost\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.2"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"registrar for its customer", e.reg, "hostname=home.carol.test&myip=192.0.2.20", 200, "good 192.0.2.20\n", nil},
		{"customer for its registrar's other customer", e.carol, "hostname=home.example.com&myip=192.0.2.66", 200, "nohost\n", nil},
		{"operator", e.operator, "hostname=op.other.test&myip=192.0.2.21", 200, "good 192.0.2.21\n", nil},
		{"bad token", "mxp_nonsense", "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", nil},
		{"not a token", "hunter2", "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", nil},
		{"no auth", "", "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.2"}) {
				t.Errorf("A = %v", got)
			}
		}},
	}
	e.run(t, steps)
}

// nicStep is one /nic/update request of a table test: its reply and what
// the store then holds (check, when set).
type nicStep struct {
	name   string
	token  string
	query  string
	status int
	body   string
	check  func(t *testing.T)
}

// run makes the steps' requests in order, each a subtest.
func (e *env) run(t *testing.T, steps []nicStep) {
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, body := e.nic(t, s.token, s.query)
			if status != s.status || body != s.body {
				t.Fatalf("got %d %q, want %d %q", status, body, s.status, s.body)
			}
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

func TestUpdatePOSTAndChallenge(t *testing.T) {
	e := newEnv(t, Config{})
	form := url.Values{"hostname": {"post.example.com"}, "myip": {"192.0.2.30"}}
	req, _ := http.NewRequest("POST", e.url+"/nic/update", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("", e.alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "good 192.0.2.30\n" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	// Without credentials, a challenge: clients that wait for one (curl
	// --anyauth, browsers) then send them.
	resp, err = http.Get(e.url + "/nic/update?hostname=post.example.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("no auth: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestAbuse(t *testing.T) {
	e := newEnv(t, Config{RequestsPerMinute: 3})
	for i := 0; i < 3; i++ {
		if _, body := e.nic(t, e.alice, "hostname=home.example.com&myip=192.0.2.1"); !strings.HasPrefix(body, "good") && !strings.HasPrefix(body, "nochg") {
			t.Fatalf("request %d: %q", i+1, body)
		}
	}
	if status, body := e.nic(t, e.alice, "hostname=home.example.com,b.example.com&myip=192.0.2.2"); status != 200 || body != "abuse\nabuse\n" {
		t.Fatalf("over the limit: %d %q", status, body)
	}
	if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.1"}) {
		t.Errorf("A = %v after abuse", got)
	}
	// Another token has its own budget.
	if _, body := e.nic(t, e.bob, "hostname=home.other.test&myip=192.0.2.1"); body != "good 192.0.2.1\n" {
		t.Fatalf("bob: %q", body)
	}
}

func TestLimiterRefills(t *testing.T) {
	l := newLimiter(2, time.Minute)
	t0 := time.Unix(1000, 0)
	if !l.allow("k", t0) || !l.allow("k", t0) || l.allow("k", t0) {
		t.Fatal("burst of 2 not enforced")
	}
	if l.allow("k", t0.Add(20*time.Second)) {
		t.Fatal("refilled too early")
	}
	if !l.allow("k", t0.Add(31*time.Second)) {
		t.Fatal("not refilled after half a minute")
	}
	l.allow("other", t0.Add(5*time.Minute)) // sweeps: k has refilled
	if _, ok := l.bucket["k"]; ok {
		t.Error("refilled bucket not forgotten")
	}
}

func Test911(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Open(t, storetest.Options)
	e := newEnv(t, Config{Store: st})
	if _, body := e.nic(t, e.alice, "hostname=home.example.com&myip=192.0.2.1"); body != "good 192.0.2.1\n" {
		t.Fatalf("before: %q", body)
	}
	// Zones in a store that is down, tokens in one that answers: the
	// failure comes after authentication, at the zone lookup.
	down, err := store.Open(context.Background(), srv.URL(1), storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { down.Close() })
	tokens := newEnv(t, Config{})
	ec := echo.New()
	Register(ec, Config{Store: down, Auth: auth.New(tokens.st)})
	other := httptest.NewServer(ec)
	t.Cleanup(other.Close)
	srv.Stop()
	for _, tc := range []struct{ name, url, token string }{
		{"authentication", e.url, e.alice},
		{"zone lookup", other.URL, tokens.alice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{url: tc.url}
			status, body := e.nic(t, tc.token, "hostname=home.example.com,b.example.com&myip=192.0.2.2")
			if status != 200 || body != "911\n911\n" {
				t.Fatalf("store down: %d %q, want 200 \"911\\n911\\n\"", status, body)
			}
		})
	}
}

func TestClientAddress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		xff     []string
		want    string
	}{
		{"peer", nil, nil, "127.0.0.1"},
		{"forwarded-for from an untrusted peer", nil, []string{"198.51.100.7"}, "127.0.0.1"},
		{"forwarded-for from a trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []string{"198.51.100.7"}, "198.51.100.7"},
		{"chain of trusted proxies", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			[]string{"203.0.113.66, 203.0.113.9", "10.1.2.3"}, "203.0.113.9"},
		{"spoofed left part ignored", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, []string{"192.0.2.99, 198.51.100.8"}, "198.51.100.8"},
		{"ipv6 client", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []string{"2001:db8::77"}, "2001:db8::77"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{TrustedProxies: tc.trusted})
			req, _ := http.NewRequest("GET", e.url+"/nic/update?hostname=home.example.com", nil)
			req.SetBasicAuth("x", e.alice)
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "good "+tc.want+"\n" {
				t.Fatalf("body %q, want good %s", body, tc.want)
			}
			typ := "A"
			if strings.Contains(tc.want, ":") {
				typ = "AAAA"
			}
			if got := e.rrset(t, "example.com", "home", typ); !slices.Equal(got, []string{"60 " + tc.want}) {
				t.Errorf("%s = %v", typ, got)
			}
		})
	}
}

// TestHTTP10 sends what inadyn sends: HTTP/1.0, a Host header without the
// port (or another service's name), credentials up front.
func TestHTTP10(t *testing.T) {
	e := newEnv(t, Config{})
	for i, host := range []string{"127.0.0.1", "members.dyndns.org", ""} {
		ip := "192.0.2." + strconv.Itoa(40+i)
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req := "GET /nic/update?hostname=home.example.com&myip=" + ip + " HTTP/1.0\r\n"
		if host != "" {
			req += "Host: " + host + "\r\n"
		}
		req += "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+e.alice)) + "\r\n" +
			"User-Agent: inadyn/2.10.0 https://github.com/troglobit/inadyn/issues\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body) // HTTP/1.0: the server closes after the body
		c.Close()
		if resp.StatusCode != 200 || string(body) != "good "+ip+"\n" {
			t.Fatalf("Host %q: %d %q", host, resp.StatusCode, body)
		}
	}
}

// TestFlush: an update of a host that is a forwarding target flushes the
// zones routed through it, and only those.
func TestFlush(t *testing.T) {
	e := newEnv(t, Config{})
	e.add(t, "example.com", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 home.example.com:2525"})
	e.add(t, "example.org", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 home.example.com:2525"})
	e.add(t, "other.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 home.example.com:2525"}) // bob's: not flushed
	e.add(t, "carol.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 mail.carol.test:25"})    // not forwarded
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := e.st.SubscribeControl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// drain reads controls up to a marker published after the request: the
	// publishes happen in order, so everything the request published
	// comes before it.
	marker := 0
	drain := func(t *testing.T) []string {
		t.Helper()
		marker++
		id := "marker-" + strconv.Itoa(marker)
		if err := e.st.PublishControl(e.ctx, store.Control{Kind: "remove", ID: id}); err != nil {
			t.Fatal(err)
		}
		var zones []string
		timeout := time.After(10 * time.Second)
		for {
			select {
			case c := <-ch:
				if c.Kind == "remove" && c.ID == id {
					slices.Sort(zones)
					return zones
				}
				if c.Kind != "flush" {
					t.Fatalf("unexpected control %+v", c)
				}
				zones = append(zones, c.Zone)
			case <-timeout:
				t.Fatal("no marker control within 10s")
			}
		}
	}
	for _, s := range []struct {
		name, query, body string
		flushed           []string
	}{
		{"target changed", "hostname=home.example.com&myip=192.0.2.1", "good 192.0.2.1\n", []string{"example.com", "example.org"}},
		{"target unchanged (the home server's client is back)", "hostname=home.example.com&myip=192.0.2.1", "nochg 192.0.2.1\n", []string{"example.com", "example.org"}},
		{"other host", "hostname=www.example.com&myip=192.0.2.1", "good 192.0.2.1\n", nil},
		{"target and other host in one request", "hostname=www.example.com,home.example.com&myip=192.0.2.2", "good 192.0.2.2\ngood 192.0.2.2\n", []string{"example.com", "example.org"}},
		{"refused update", "hostname=home.other.test&myip=192.0.2.2", "nohost\n", nil},
	} {
		t.Run(s.name, func(t *testing.T) {
			if _, body := e.nic(t, e.alice, s.query); body != s.body {
				t.Fatalf("body %q, want %q", body, s.body)
			}
			if got := drain(t); !slices.Equal(got, s.flushed) {
				t.Errorf("flushed %v, want %v", got, s.flushed)
			}
		})
	}
}

func TestParseAddrs(t *testing.T) {
	for _, tc := range []struct{ myip, myipv6, v4, v6 string }{
		{"192.0.2.1", "", "192.0.2.1", ""},
		{"", "2001:db8::1", "", "2001:db8::1"},
		{"192.0.2.1,2001:db8::1", "", "192.0.2.1", "2001:db8::1"},
		{"garbage", "", "", ""},
		{"0.0.0.0", "::", "", ""},
		{"224.0.0.1", "ff02::1", "", ""},
		{"fe80::1%eth0", "", "", ""},
		{" 192.0.2.1 ", "", "192.0.2.1", ""},
		{"2001:db8::1", "2001:db8::2", "", "2001:db8::2"},
	} {
		v4, v6 := parseAddrs(tc.myip, tc.myipv6)
		s := func(a netip.Addr) string {
			if !a.IsValid() {
				return ""
			}
			return a.String()
		}
		if s(v4) != tc.v4 || s(v6) != tc.v6 {
			t.Errorf("parseAddrs(%q, %q) = %v, %v; want %q, %q", tc.myip, tc.myipv6, v4, v6, tc.v4, tc.v6)
		}
	}
}
