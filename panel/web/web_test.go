package web

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

const (
	alicePW = "alice-password-1"
	bobPW   = "bob-password-123"
	opsPW   = "operator-pass-1"
)

// env is a web UI over a fresh store, with a fake clock and recorded
// sign-in delays.
type env struct {
	t   *testing.T
	st  *store.Store
	srv *httptest.Server

	mu     sync.Mutex
	now    time.Time
	delays []time.Duration
}

func newEnv(t *testing.T, secure bool) *env {
	t.Helper()
	ev := &env{t: t, st: storetest.New(t), now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	ctx := context.Background()
	for _, u := range []struct {
		acct  string
		role  store.Role
		email string
		pw    string
	}{
		{"alice", store.RoleCustomer, "alice@example.test", alicePW},
		{"bob", store.RoleCustomer, "bob@example.test", bobPW},
		{"ops", store.RoleOperator, "ops@example.test", opsPW},
	} {
		if _, err := ev.st.CreateAccount(ctx, u.acct, u.role, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := ev.st.CreateUser(ctx, u.email, u.acct, u.pw); err != nil {
			t.Fatal(err)
		}
	}
	for _, z := range []struct{ name, acct string }{{"alice.test", "alice"}, {"bob.test", "bob"}} {
		if _, err := ev.st.CreateZone(ctx, z.name, z.acct); err != nil {
			t.Fatal(err)
		}
	}
	e := echo.New()
	e.IPExtractor = echo.ExtractIPDirect()
	Register(e, Config{Store: ev.st, Auth: auth.New(ev.st), MXHosts: storetest.Options.MXHosts, Secure: secure,
		Now: ev.clock, Delay: ev.delay})
	ev.srv = httptest.NewServer(e)
	t.Cleanup(ev.srv.Close)
	return ev
}

func (ev *env) clock() time.Time {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.now
}

func (ev *env) advance(d time.Duration) {
	ev.mu.Lock()
	ev.now = ev.now.Add(d)
	ev.mu.Unlock()
}

func (ev *env) delay(_ context.Context, d time.Duration) {
	ev.mu.Lock()
	ev.delays = append(ev.delays, d)
	ev.mu.Unlock()
}

// client is a browser without JavaScript: a cookie jar, redirects not
// followed so that tests see them.
type client struct {
	ev *env
	hc *http.Client
}

func (ev *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{ev: ev, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type response struct {
	*http.Response
	body string
}

func (c *client) do(method, path string, form url.Values) response {
	c.ev.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.ev.srv.URL+path, body)
	if err != nil {
		c.ev.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.ev.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp, string(b)}
}

func (c *client) get(path string) response { return c.do(http.MethodGet, path, nil) }

func (c *client) post(path string, form url.Values) response {
	return c.do(http.MethodPost, path, form)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token of a form on page path.
func (c *client) csrf(path string) string {
	c.ev.t.Helper()
	r := c.get(path)
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		c.ev.t.Fatalf("GET %s: %d, no csrf field in %s", path, r.StatusCode, r.body)
	}
	return m[1]
}

func (c *client) login(email, pw string) response {
	c.ev.t.Helper()
	tok := c.csrf("/login")
	return c.post("/login", url.Values{"csrf": {tok}, "email": {email}, "password": {pw}})
}

func (c *client) mustLogin(email, pw string) {
	c.ev.t.Helper()
	if r := c.login(email, pw); r.StatusCode != http.StatusSeeOther {
		c.ev.t.Fatalf("login %s: %d %s", email, r.StatusCode, r.body)
	}
}

func cookie(r response, name string) *http.Cookie {
	for _, ck := range r.Cookies() {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

func wantStatus(t *testing.T, r response, code int) {
	t.Helper()
	if r.StatusCode != code {
		t.Fatalf("%s %s: status %d, want %d; body:\n%s", r.Request.Method, r.Request.URL.Path, r.StatusCode, code, r.body)
	}
}

func wantBody(t *testing.T, r response, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.body, s) {
			t.Errorf("%s %s: body lacks %q:\n%s", r.Request.Method, r.Request.URL.Path, s, r.body)
		}
	}
}

func TestLoginLogout(t *testing.T) {
	ev := newEnv(t, false)
	c := ev.client()

	r := c.get("/zones")
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/login?next=%2Fzones" {
		t.Errorf("signed out /zones redirects to %q", loc)
	}

	r = c.login("alice@example.test", "wrong-password")
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, "Wrong email or password", `value="alice@example.test"`)
	if cookie(r, SessionCookie) != nil {
		t.Error("failed login set a session cookie")
	}
	r = c.login("nobody@example.test", alicePW)
	wantStatus(t, r, http.StatusUnauthorized)

	r = c.login("Alice@Example.test", alicePW)
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/zones" {
		t.Errorf("login redirects to %q", loc)
	}
	ck := cookie(r, SessionCookie)
	if ck == nil || ck.Value == "" {
		t.Fatal("no session cookie")
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" || ck.MaxAge <= 0 {
		t.Errorf("session cookie flags: %+v", ck)
	}
	r = c.get("/zones")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "alice.test", "alice@example.test")
	if strings.Contains(r.body, "bob.test") {
		t.Error("alice sees bob's zone")
	}

	// Sign out needs the CSRF token too, then ends the session server-side.
	wantStatus(t, c.post("/logout", url.Values{}), http.StatusForbidden)
	tok := c.csrf("/zones")
	r = c.post("/logout", url.Values{"csrf": {tok}})
	wantStatus(t, r, http.StatusSeeOther)
	if ck2 := cookie(r, SessionCookie); ck2 == nil || ck2.MaxAge >= 0 {
		t.Errorf("logout does not clear the cookie: %+v", ck2)
	}
	if _, err := ev.st.LookupSession(context.Background(), ck.Value); err == nil {
		t.Error("session still alive after logout")
	}
	wantStatus(t, c.get("/zones"), http.StatusSeeOther)
}

func TestLoginRedirectsOnlyLocally(t *testing.T) {
	ev := newEnv(t, false)
	for next, want := range map[string]string{
		"/zones/alice.test":   "/zones/alice.test",
		"//evil.example/":     "/zones",
		"https://evil.test/":  "/zones",
		"/\\evil.example":     "/zones",
		"/login?next=/zones":  "/zones",
		"":                    "/zones",
		"/account?done=x#tok": "/account?done=x#tok",
	} {
		c := ev.client()
		tok := c.csrf("/login")
		r := c.post("/login", url.Values{"csrf": {tok}, "email": {"alice@example.test"}, "password": {alicePW}, "next": {next}})
		wantStatus(t, r, http.StatusSeeOther)
		if loc := r.Header.Get("Location"); loc != want {
			t.Errorf("next=%q: redirect to %q, want %q", next, loc, want)
		}
	}
}

func TestSecureCookie(t *testing.T) {
	ev := newEnv(t, true)
	c := ev.client()
	// The jar keeps Secure cookies away from http://, so read the
	// Set-Cookie headers themselves.
	r := c.get("/login")
	if ck := cookie(r, loginCookie); ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login cookie: %+v", ck)
	}
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	req, _ := http.NewRequest(http.MethodPost, ev.srv.URL+"/login",
		strings.NewReader(url.Values{"csrf": {tok}, "email": {"alice@example.test"}, "password": {alicePW}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: loginCookie, Value: tok})
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ck := cookie(response{Response: resp}, SessionCookie)
	if resp.StatusCode != http.StatusSeeOther || ck == nil {
		t.Fatalf("login: %d, cookie %+v", resp.StatusCode, ck)
	}
	if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Errorf("session cookie flags: %+v", ck)
	}
	if !strings.Contains(resp.Header.Get("Set-Cookie"), "; Secure") {
		t.Errorf("Set-Cookie %q lacks Secure", resp.Header.Get("Set-Cookie"))
	}
}

func TestCSRF(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()

	// The sign-in form has its own token, before any session.
	c := ev.client()
	c.get("/login")
	r := c.post("/login", url.Values{"email": {"alice@example.test"}, "password": {alicePW}})
	wantStatus(t, r, http.StatusForbidden)
	if cookie(r, SessionCookie) != nil {
		t.Error("login without CSRF token set a session")
	}
	r = c.post("/login", url.Values{"csrf": {"x" + strings.Repeat("a", 42)}, "email": {"alice@example.test"}, "password": {alicePW}})
	wantStatus(t, r, http.StatusForbidden)

	c.mustLogin("alice@example.test", alicePW)
	before, _ := ev.st.ZoneData(ctx, "alice.test")
	form := url.Values{"name": {"www"}, "type": {"A"}, "ttl": {"300"}, "data": {"192.0.2.1"}}

	wantStatus(t, c.post("/zones/alice.test/records", form), http.StatusForbidden)
	form.Set("csrf", "wrong-token")
	wantStatus(t, c.post("/zones/alice.test/records", form), http.StatusForbidden)
	// Another session's token is wrong too.
	other := ev.client()
	other.mustLogin("alice@example.test", alicePW)
	form.Set("csrf", other.csrf("/zones"))
	r = c.post("/zones/alice.test/records", form)
	wantStatus(t, r, http.StatusForbidden)
	wantBody(t, r, "did not come from this site")
	for _, p := range []string{"/zones", "/zones/alice.test/flush", "/account/tokens", "/account/password", "/zones/alice.test/records/x/delete"} {
		wantStatus(t, c.post(p, url.Values{"name": {"csrf.test"}}), http.StatusForbidden)
	}
	after, _ := ev.st.ZoneData(ctx, "alice.test")
	if after.Serial != before.Serial || len(after.Records) != len(before.Records) {
		t.Errorf("a refused post changed the zone: serial %d -> %d", before.Serial, after.Serial)
	}
	if zs, _ := ev.st.Zones(ctx, "alice"); len(zs) != 1 {
		t.Errorf("a refused post created a zone: %v", zs)
	}
	if ts, _ := ev.st.Tokens(ctx, "alice"); len(ts) != 0 {
		t.Errorf("a refused post created a token: %v", ts)
	}

	form.Set("csrf", c.csrf("/zones/alice.test"))
	r = c.post("/zones/alice.test/records", form)
	wantStatus(t, r, http.StatusSeeOther)
	after, _ = ev.st.ZoneData(ctx, "alice.test")
	if len(after.Records) != len(before.Records)+1 {
		t.Errorf("with the token the record was not added: %v", after.Records)
	}

	// Without a session a post is refused, not redirected and replayed.
	anon := ev.client()
	wantStatus(t, anon.post("/zones/alice.test/records", form), http.StatusForbidden)
}

func TestLoginThrottle(t *testing.T) {
	ev := newEnv(t, false)
	c := ev.client()
	for i := 1; i < MaxFailures; i++ {
		r := c.login("alice@example.test", "wrong-password")
		wantStatus(t, r, http.StatusUnauthorized)
	}
	r := c.login("alice@example.test", "wrong-password")
	wantStatus(t, r, http.StatusTooManyRequests)
	wantBody(t, r, "Too many failed sign-ins")
	if ra := r.Header.Get("Retry-After"); ra != "300" {
		t.Errorf("Retry-After %q", ra)
	}
	// Each failure was answered more slowly than the one before.
	if len(ev.delays) != MaxFailures {
		t.Fatalf("delays %v", ev.delays)
	}
	for i := 1; i < len(ev.delays); i++ {
		if ev.delays[i] <= ev.delays[i-1] {
			t.Errorf("delay %d (%v) not above delay %d (%v)", i, ev.delays[i], i-1, ev.delays[i-1])
		}
	}

	// The 6th attempt, even with the right password, is refused at once.
	r = c.login("alice@example.test", alicePW)
	wantStatus(t, r, http.StatusTooManyRequests)
	if cookie(r, SessionCookie) != nil {
		t.Error("locked-out login set a session")
	}
	if len(ev.delays) != MaxFailures {
		t.Errorf("a locked-out attempt reached the password check: delays %v", ev.delays)
	}
	// The lockout is per address too: another email from the same client.
	wantStatus(t, ev.client().login("bob@example.test", bobPW), http.StatusTooManyRequests)

	ev.advance(Lockout + time.Second)
	r = c.login("alice@example.test", alicePW)
	wantStatus(t, r, http.StatusSeeOther)
}

func TestTenancy(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()
	bobRec, err := ev.st.AddRecord(ctx, "bob.test", record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.9"})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := ev.st.ZoneData(ctx, "bob.test")

	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	tok := c.csrf("/zones")
	missing := c.get("/zones/nosuch.test")
	wantStatus(t, missing, http.StatusNotFound)
	for _, r := range []response{
		c.get("/zones/bob.test"),
		c.get("/zones/bob.test/records/" + bobRec.ID + "/edit"),
		c.post("/zones/bob.test/records", url.Values{"csrf": {tok}, "name": {"x"}, "type": {"A"}, "ttl": {"300"}, "data": {"192.0.2.1"}}),
		c.post("/zones/bob.test/records/"+bobRec.ID, url.Values{"csrf": {tok}, "name": {"www"}, "type": {"A"}, "ttl": {"300"}, "data": {"192.0.2.1"}}),
		c.post("/zones/bob.test/records/"+bobRec.ID+"/delete", url.Values{"csrf": {tok}}),
		c.post("/zones/bob.test/flush", url.Values{"csrf": {tok}}),
	} {
		wantStatus(t, r, http.StatusNotFound)
		if r.body != missing.body {
			t.Errorf("%s %s: another tenant's zone answers unlike a missing one", r.Request.Method, r.Request.URL.Path)
		}
	}
	// A record id of another zone through alice's own zone.
	wantStatus(t, c.get("/zones/alice.test/records/"+bobRec.ID+"/edit"), http.StatusNotFound)
	after, _ := ev.st.ZoneData(ctx, "bob.test")
	if after.Serial != before.Serial {
		t.Error("alice changed bob's zone")
	}
	// A customer cannot create a zone for another account.
	r := c.post("/zones", url.Values{"csrf": {tok}, "name": {"sneaky.test"}, "account": {"bob"}})
	wantStatus(t, r, http.StatusSeeOther)
	if zd, err := ev.st.ZoneData(ctx, "sneaky.test"); err != nil || zd.Account != "alice" {
		t.Errorf("zone created for %q (%v), want alice's", zd.Account, err)
	}
	for _, p := range []string{"/admin/accounts", "/admin/zones", "/admin/queue"} {
		wantStatus(t, c.get(p), http.StatusForbidden)
	}

	op := ev.client()
	op.mustLogin("ops@example.test", opsPW)
	wantBody(t, op.get("/zones/bob.test"), "192.0.2.9")
	wantBody(t, op.get("/admin/accounts"), "alice", "bob", "ops", "operator")
	wantBody(t, op.get("/admin/zones"), "alice.test", "bob.test", "sneaky.test")
	// An operator creates a zone for a customer.
	r = op.post("/zones", url.Values{"csrf": {op.csrf("/zones")}, "name": {"for-bob.test"}, "account": {"bob"}})
	wantStatus(t, r, http.StatusSeeOther)
	if zd, err := ev.st.ZoneData(ctx, "for-bob.test"); err != nil || zd.Account != "bob" {
		t.Errorf("operator's zone for bob: account %q, %v", zd.Account, err)
	}
}

func TestSecurityHeaders(t *testing.T) {
	ev := newEnv(t, false)
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	for _, p := range []string{"/login", "/zones", "/zones/alice.test", "/zones/nosuch.test", "/account", "/assets/style.css"} {
		r := c.get(p)
		h := r.Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", p, h)
		}
	}
	r := c.get("/assets/style.css")
	wantStatus(t, r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("style.css Content-Type %q", ct)
	}
	if cc := c.get("/zones").Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("page Cache-Control %q", cc)
	}
}

func TestRecordForms(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	tok := c.csrf("/zones/alice.test")
	add := func(name, typ, ttl, data string) response {
		return c.post("/zones/alice.test/records", url.Values{"csrf": {tok}, "name": {name}, "type": {typ}, "ttl": {ttl}, "data": {data}})
	}

	for _, tc := range []struct{ name, typ, ttl, data, field string }{
		{"@", "MX", "3600", "mail.example.com:99999", "data"},
		{"www", "A", "3600", "not-an-address", "data"},
		{"bad name!", "A", "3600", "192.0.2.1", "name"},
		{"www", "BOGUS", "3600", "192.0.2.1", "type"},
		{"www", "A", "soon", "192.0.2.1", "ttl"},
		{"www", "A", "5", "192.0.2.1", "ttl"},
	} {
		r := add(tc.name, tc.typ, tc.ttl, tc.data)
		wantStatus(t, r, http.StatusBadRequest)
		wantBody(t, r, `id="`+tc.field+`-error"`, `value="`+tc.data+`"`, `aria-invalid="true"`)
		if n := strings.Count(r.body, `class="field-error"`); n != 1 {
			t.Errorf("%+v: %d field errors", tc, n)
		}
	}

	wantStatus(t, add("www", "A", "300", "192.0.2.1"), http.StatusSeeOther)
	r := add("www", "A", "300", "192.0.2.1")
	wantStatus(t, r, http.StatusBadRequest) // duplicate
	wantBody(t, r, "-error")

	zd, _ := ev.st.ZoneData(ctx, "alice.test")
	var id string
	for _, rec := range zd.Records {
		if rec.Type == "A" {
			id = rec.ID
		}
	}
	r = c.get("/zones/alice.test/records/" + id + "/edit")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `value="192.0.2.1"`, `value="www"`)
	r = c.post("/zones/alice.test/records/"+id, url.Values{"csrf": {tok}, "name": {"www"}, "type": {"A"}, "ttl": {"300"}, "data": {"192.0.2.300"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="data-error"`, `value="192.0.2.300"`)
	r = c.post("/zones/alice.test/records/"+id, url.Values{"csrf": {tok}, "name": {"www"}, "type": {"A"}, "ttl": {"600"}, "data": {"192.0.2.2"}})
	wantStatus(t, r, http.StatusSeeOther)
	if rec, _ := ev.st.Record(ctx, "alice.test", id); rec.Data != "192.0.2.2" || rec.TTL != 600 {
		t.Errorf("updated record %+v", rec)
	}
	wantBody(t, c.get(r.Header.Get("Location")), "Record saved.", "192.0.2.2")

	wantStatus(t, c.post("/zones/alice.test/records/"+id+"/delete", url.Values{"csrf": {tok}}), http.StatusSeeOther)
	if _, err := ev.st.Record(ctx, "alice.test", id); err == nil {
		t.Error("record not deleted")
	}
	wantStatus(t, c.post("/zones/alice.test/records/"+id+"/delete", url.Values{"csrf": {tok}}), http.StatusNotFound)

	// Creating a zone: errors next to the domain field.
	r = c.post("/zones", url.Values{"csrf": {tok}, "name": {"bad..name"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="zone-name-error"`, `value="bad..name"`)
	r = c.post("/zones", url.Values{"csrf": {tok}, "name": {"bob.test"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="zone-name-error"`, "already exists")
}

func TestForwardingPreviewQueueAndFlush(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	tok := c.csrf("/zones/alice.test")

	wantBody(t, c.get("/zones/alice.test"), "No MX record yet")
	r := c.post("/zones/alice.test/records", url.Values{"csrf": {tok}, "name": {"@"}, "type": {"MX"}, "ttl": {"3600"}, "data": {"mail.example.com:2525"}})
	wantStatus(t, r, http.StatusSeeOther)
	r = c.get("/zones/alice.test")
	wantBody(t, r, "DNS publishes", "10 mx1.fwd.test, 20 mx2.fwd.test", "Mail is delivered to", "mail.example.com port 2525", "none yet", "10 mail.example.com.:2525")

	ev.st.LogDelivery(ctx, "alice.test", store.Delivery{ID: "q1", Event: "deferred", From: "a@x.test", Rcpt: "me@alice.test",
		Target: "mail.example.com:2525", Reply: "dial tcp 192.0.2.7:2525: connection refused"})
	r = c.get("/zones/alice.test")
	wantBody(t, r, "the home server did not answer", "connection refused")
	ev.st.LogDelivery(ctx, "alice.test", store.Delivery{ID: "q1", Event: "delivered", From: "a@x.test", Rcpt: "me@alice.test",
		Target: "mail.example.com:2525", Code: 250, Reply: "2.0.0 Ok: queued as ABC"})
	r = c.get("/zones/alice.test")
	wantBody(t, r, "the home server answered", "250 2.0.0 Ok: queued as ABC")
	if i, j := strings.Index(r.body, "queued as ABC"), strings.Index(r.body, "connection refused"); i < 0 || j < 0 || i > j {
		t.Error("delivery log is not newest first")
	}

	ev.st.MirrorQueued(ctx, store.QueueItem{ID: "q2", Node: "n1", Zone: "alice.test", From: "b@y.test", Rcpts: []string{"you@alice.test"},
		Arrived: time.Now(), Attempts: 3, LastReply: "451 4.3.0 try later"})
	r = c.get("/zones/alice.test")
	wantBody(t, r, "b@y.test", "you@alice.test", "451 4.3.0 try later", "Retry now")

	ctl, err := ev.st.SubscribeControl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = c.post("/zones/alice.test/flush", url.Values{"csrf": {tok}})
	wantStatus(t, r, http.StatusSeeOther)
	select {
	case m := <-ctl:
		if m.Kind != "flush" || m.Zone != "alice.test" {
			t.Errorf("control %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no flush published")
	}
	wantBody(t, c.get(r.Header.Get("Location")), "Retry requested")

	// A zone with a plain MX is published as entered.
	if _, err := ev.st.AddRecord(ctx, "bob.test", record.Record{Name: "@", Type: "MX", TTL: 300, Data: "10 mail.bob.test"}); err != nil {
		t.Fatal(err)
	}
	op := ev.client()
	op.mustLogin("ops@example.test", opsPW)
	r = op.get("/zones/bob.test")
	wantBody(t, r, "published as entered")
	if strings.Contains(r.body, "DNS publishes") {
		t.Error("unforwarded zone shows the forwarding preview")
	}
	wantBody(t, op.get("/admin/queue"), "alice.test", "b@y.test", "451 4.3.0 try later")
	wantBody(t, op.get("/admin/zones"), "forwarded to mail.example.com:2525")
}

func TestAccountPage(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	tok := c.csrf("/account")

	r := c.post("/account/tokens", url.Values{"csrf": {tok}, "name": {"router"}})
	wantStatus(t, r, http.StatusOK)
	m := regexp.MustCompile(`id="new-secret" readonly value="(mxp_[^"]+)"`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no secret shown:\n%s", r.body)
	}
	tk, err := ev.st.LookupToken(ctx, m[1])
	if err != nil || tk.Account != "alice" || tk.Name != "router" {
		t.Fatalf("token %+v, %v", tk, err)
	}
	r = c.get("/account")
	wantBody(t, r, "router", tk.ID)
	if strings.Contains(r.body, m[1]) {
		t.Error("secret shown again")
	}
	wantStatus(t, c.post("/account/tokens", url.Values{"csrf": {tok}, "name": {strings.Repeat("n", 101)}}), http.StatusBadRequest)

	// Bob cannot revoke alice's token.
	b := ev.client()
	b.mustLogin("bob@example.test", bobPW)
	wantStatus(t, b.post("/account/tokens/"+tk.ID+"/revoke", url.Values{"csrf": {b.csrf("/account")}}), http.StatusNotFound)
	wantStatus(t, c.post("/account/tokens/"+tk.ID+"/revoke", url.Values{"csrf": {tok}}), http.StatusSeeOther)
	if _, err := ev.st.LookupToken(ctx, m[1]); err == nil {
		t.Error("revoked token still works")
	}

	pw := func(cur, nw, again string) response {
		return c.post("/account/password", url.Values{"csrf": {tok}, "current": {cur}, "new": {nw}, "confirm": {again}})
	}
	r = pw("wrong-password", "new-password-1", "new-password-1")
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="pw-current-error"`)
	r = pw(alicePW, "new-password-1", "new-password-2")
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="pw-confirm-error"`)
	r = pw(alicePW, "short", "short")
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="pw-new-error"`, "at least 10")
	// Another session of alice's, opened with the old password, ends with
	// the change; this one goes on.
	elsewhere := ev.client()
	elsewhere.mustLogin("alice@example.test", alicePW)
	wantStatus(t, elsewhere.get("/zones"), http.StatusOK)
	wantStatus(t, pw(alicePW, "new-password-1", "new-password-1"), http.StatusSeeOther)
	if _, err := ev.st.Authenticate(ctx, "alice@example.test", "new-password-1"); err != nil {
		t.Errorf("new password: %v", err)
	}
	r = elsewhere.get("/zones")
	if wantStatus(t, r, http.StatusSeeOther); !strings.HasPrefix(r.Header.Get("Location"), "/login") {
		t.Errorf("the other session after the password change: sent to %q, want the sign-in page", r.Header.Get("Location"))
	}
	wantStatus(t, c.get("/zones"), http.StatusOK)
	wantStatus(t, b.get("/zones"), http.StatusOK) // bob's session is his own
}

func TestStoreUnavailable(t *testing.T) {
	ev := newEnv(t, false)
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	ev.st.Close()
	r := c.get("/zones")
	wantStatus(t, r, http.StatusServiceUnavailable)
	wantBody(t, r, "briefly unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

func TestThrottleWindow(t *testing.T) {
	now := time.Unix(0, 0)
	var delays []time.Duration
	th := newThrottle(func() time.Time { return now }, func(_ context.Context, d time.Duration) { delays = append(delays, d) })
	ctx := context.Background()
	for i := 0; i < MaxFailures-1; i++ {
		if d := th.fail(ctx, "k"); d != 0 {
			t.Fatalf("failure %d locks", i+1)
		}
	}
	now = now.Add(FailureWindow + time.Second) // forgotten
	if d := th.fail(ctx, "k"); d != 0 {
		t.Error("old failures still counted")
	}
	if delays[len(delays)-1] != failureDelay {
		t.Errorf("delay after the window %v", delays[len(delays)-1])
	}
	for i := 0; i < 20; i++ {
		th.fail(ctx, "k")
	}
	if d := delays[len(delays)-1]; d != maxDelay {
		t.Errorf("delay not capped: %v", d)
	}
	if th.locked("k") != Lockout {
		t.Errorf("locked %v", th.locked("k"))
	}
}

// TestSecureCookies: behind a TLS-terminating proxy (X-Forwarded-Proto:
// https) the cookies are Secure; over plain HTTP they cannot be.
func TestSecureCookies(t *testing.T) {
	ev := newEnv(t, false)
	for _, tc := range []struct {
		proto  string
		secure bool
	}{{"", false}, {"https", true}, {"http", false}} {
		req, err := http.NewRequest(http.MethodGet, ev.srv.URL+"/login", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.proto != "" {
			req.Header.Set("X-Forwarded-Proto", tc.proto)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cks := resp.Cookies()
		if len(cks) == 0 {
			t.Fatalf("X-Forwarded-Proto %q: no cookie set on /login", tc.proto)
		}
		for _, ck := range cks {
			if ck.Secure != tc.secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
				t.Errorf("X-Forwarded-Proto %q: cookie %s Secure=%v HttpOnly=%v SameSite=%v, want Secure=%v, HttpOnly, Strict",
					tc.proto, ck.Name, ck.Secure, ck.HttpOnly, ck.SameSite, tc.secure)
			}
		}
	}
}
