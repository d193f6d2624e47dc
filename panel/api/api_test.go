package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxport/mxport/panel"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	storetest.Main(m)
}

// env is a store with accounts of every role, a token each, and the panel
// on a real HTTP server:
//
//	ops (operator)
//	reg (registrar) -> cust (customer)
//	reg2 (registrar) -> cust3 (customer)
//	cust2 (customer, no registrar)
type env struct {
	t   *testing.T
	st  *store.Store
	srv *httptest.Server
	tok map[string]string // account -> token
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := storetest.New(t)
	ctx := context.Background()
	e := &env{t: t, st: st, tok: map[string]string{}}
	for _, a := range []struct {
		id     string
		role   store.Role
		parent string
	}{
		{"ops", store.RoleOperator, ""}, {"reg", store.RoleRegistrar, ""}, {"reg2", store.RoleRegistrar, ""},
		{"cust", store.RoleCustomer, "reg"}, {"cust3", store.RoleCustomer, "reg2"}, {"cust2", store.RoleCustomer, ""},
	} {
		if _, err := st.CreateAccount(ctx, a.id, a.role, a.parent); err != nil {
			t.Fatal(err)
		}
		secret, _, err := st.CreateToken(ctx, a.id, "test")
		if err != nil {
			t.Fatal(err)
		}
		e.tok[a.id] = secret
	}
	e.srv = httptest.NewServer(panel.New(panel.Config{Store: st, Auth: auth.New(st), Rate: -1}))
	t.Cleanup(e.srv.Close)
	return e
}

// resp is an answer.
type resp struct {
	code int
	hdr  http.Header
	body []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) errField(t *testing.T) (msg, field string) {
	t.Helper()
	var b struct{ Error, Field string }
	r.json(t, &b)
	if b.Error == "" {
		t.Errorf("error body without error: %s", r.body)
	}
	return b.Error, b.Field
}

// do sends a request as account who ("" for none); body is a string or
// []byte sent as is, or a value sent as JSON.
func (e *env) do(method, path, who string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if who != "" {
		tok, ok := e.tok[who]
		if !ok {
			tok = who // a raw token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode == http.StatusInternalServerError {
		e.t.Errorf("%s %s: 500: %s", method, path, b)
	}
	return resp{code: res.StatusCode, hdr: res.Header, body: b}
}

// want checks the status.
func (e *env) want(r resp, code int, what string) resp {
	e.t.Helper()
	if r.code != code {
		e.t.Errorf("%s: status %d, want %d: %s", what, r.code, code, r.body)
	}
	return r
}

// wantErr checks an error answer's status and field.
func (e *env) wantErr(r resp, code int, field, what string) {
	e.t.Helper()
	if r.code != code {
		e.t.Errorf("%s: status %d, want %d: %s", what, r.code, code, r.body)
		return
	}
	if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Errorf("%s: Content-Type %q", what, ct)
	}
	if _, f := r.errField(e.t); f != field {
		e.t.Errorf("%s: field %q, want %q (%s)", what, f, field, r.body)
	}
}

type zoneJSON struct {
	Name      string `json:"name"`
	Account   string `json:"account"`
	Serial    uint32 `json:"serial"`
	Forwarded bool   `json:"forwarded"`
	Route     []struct {
		Pref    uint16 `json:"pref"`
		Host    string `json:"host"`
		Port    uint16 `json:"port"`
		Address string `json:"address"`
	} `json:"route"`
	PublishedMX []string  `json:"published_mx"`
	Records     []recJSON `json:"records"`
}

type recJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	TTL  uint32 `json:"ttl"`
	Data string `json:"data"`
}

func (e *env) zone(who, name string, account ...string) zoneJSON {
	e.t.Helper()
	body := map[string]string{"name": name}
	if len(account) > 0 {
		body["account"] = account[0]
	}
	var z zoneJSON
	e.want(e.do("POST", "/api/v1/zones", who, body), 201, "create "+name).json(e.t, &z)
	return z
}

func (e *env) addRecord(who, zone, name, typ string, ttl int, data string) recJSON {
	e.t.Helper()
	var r recJSON
	e.want(e.do("POST", "/api/v1/zones/"+zone+"/records", who,
		map[string]any{"name": name, "type": typ, "ttl": ttl, "data": data}), 201, "add "+typ).json(e.t, &r)
	return r
}

func TestZonesAndRecords(t *testing.T) {
	e := newEnv(t)
	z := e.zone("cust", "Example.COM.")
	if z.Name != "example.com" || z.Account != "cust" || z.Forwarded || len(z.Route) != 0 || len(z.PublishedMX) != 0 {
		t.Errorf("created zone: %+v", z)
	}
	if len(z.Records) != 2 || z.Records[0].Type != "NS" {
		t.Errorf("new zone records: %+v", z.Records)
	}
	// The same account retrying the create gets the zone, not an error.
	var again zoneJSON
	e.want(e.do("POST", "/api/v1/zones", "cust", map[string]string{"name": "example.com"}), 200, "retry create").json(t, &again)
	if again.Name != "example.com" || again.Serial != z.Serial {
		t.Errorf("retried create: %+v", again)
	}

	a := e.addRecord("cust", "example.com", "mail", "A", 300, "192.0.2.7")
	if a.ID == "" || a.Name != "mail" || a.Data != "192.0.2.7" {
		t.Errorf("added A: %+v", a)
	}
	mx := e.addRecord("cust", "example.com", "@", "MX", 3600, "10 mail.example.com:2525")
	if mx.Data != "10 mail.example.com.:2525" {
		t.Errorf("MX data %q", mx.Data)
	}
	var got zoneJSON
	e.want(e.do("GET", "/api/v1/zones/example.com", "cust", nil), 200, "get zone").json(t, &got)
	if !got.Forwarded || len(got.Route) != 1 || got.Route[0].Address != "mail.example.com:2525" || got.Route[0].Pref != 10 {
		t.Errorf("route: %+v", got)
	}
	if fmt.Sprint(got.PublishedMX) != "[10 mx1.fwd.test. 20 mx2.fwd.test.]" {
		t.Errorf("published MX %v", got.PublishedMX)
	}
	if len(got.Records) != 4 || got.Serial <= z.Serial {
		t.Errorf("records %+v, serial %d after %d", got.Records, got.Serial, z.Serial)
	}

	// Duplicate record: 409.
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/records", "cust",
		map[string]any{"name": "mail.example.com.", "type": "a", "ttl": 300, "data": "192.0.2.7"}), 409, "data", "duplicate record")

	// PUT replaces, accepting the id GET returned; a different id is 400.
	var put recJSON
	e.want(e.do("PUT", "/api/v1/zones/example.com/records/"+mx.ID, "cust",
		map[string]any{"id": mx.ID, "name": "@", "type": "MX", "ttl": 600, "data": "10 mail.example.com"}), 200, "put MX").json(t, &put)
	if put.ID != mx.ID || put.TTL != 600 || put.Data != "10 mail.example.com." {
		t.Errorf("put: %+v", put)
	}
	e.wantErr(e.do("PUT", "/api/v1/zones/example.com/records/"+mx.ID, "cust",
		map[string]any{"id": "other", "name": "@", "type": "MX", "ttl": 600, "data": "10 mail.example.com"}), 400, "id", "put with another id")
	e.want(e.do("GET", "/api/v1/zones/example.com", "cust", nil), 200, "get").json(t, &got)
	if got.Forwarded || fmt.Sprint(got.PublishedMX) != "[10 mail.example.com.]" {
		t.Errorf("after unforwarding: %+v", got)
	}
	e.wantErr(e.do("PUT", "/api/v1/zones/example.com/records/nope", "cust",
		map[string]any{"name": "@", "type": "MX", "ttl": 600, "data": "10 mail.example.com"}), 404, "", "put missing record")

	e.want(e.do("DELETE", "/api/v1/zones/example.com/records/"+a.ID, "cust", nil), 204, "delete record")
	e.wantErr(e.do("DELETE", "/api/v1/zones/example.com/records/"+a.ID, "cust", nil), 404, "", "delete record again")

	var list []zoneJSON
	e.want(e.do("GET", "/api/v1/zones", "cust", nil), 200, "list").json(t, &list)
	if len(list) != 1 || list[0].Name != "example.com" || list[0].Records != nil {
		t.Errorf("list: %+v", list)
	}

	e.want(e.do("DELETE", "/api/v1/zones/example.com", "cust", nil), 204, "delete zone")
	e.wantErr(e.do("GET", "/api/v1/zones/example.com", "cust", nil), 404, "", "deleted zone")
	e.want(e.do("GET", "/api/v1/zones", "cust", nil), 200, "list").json(t, &list)
	if len(list) != 0 {
		t.Errorf("list after delete: %+v", list)
	}
}

func TestCreateZoneRoles(t *testing.T) {
	e := newEnv(t)
	if z := e.zone("reg", "cust.test", "cust"); z.Account != "cust" {
		t.Errorf("registrar for its customer: %+v", z)
	}
	if z := e.zone("reg", "reg.test"); z.Account != "reg" {
		t.Errorf("registrar for itself: %+v", z)
	}
	if z := e.zone("ops", "c2.test", "cust2"); z.Account != "cust2" {
		t.Errorf("operator for cust2: %+v", z)
	}
	e.zone("cust", "self.test", "cust")
	// Accounts the caller may not act for look missing.
	e.wantErr(e.do("POST", "/api/v1/zones", "reg", map[string]string{"name": "x.test", "account": "cust2"}), 404, "account", "registrar for a stranger")
	e.wantErr(e.do("POST", "/api/v1/zones", "reg", map[string]string{"name": "x.test", "account": "cust3"}), 404, "account", "registrar for another registrar's customer")
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", map[string]string{"name": "x.test", "account": "cust2"}), 404, "account", "customer for another")
	e.wantErr(e.do("POST", "/api/v1/zones", "ops", map[string]string{"name": "x.test", "account": "nobody"}), 404, "account", "operator for a missing account")
	// Another account's zone: 409, whoever asks.
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", map[string]string{"name": "c2.test"}), 409, "name", "another account's zone")
	e.wantErr(e.do("POST", "/api/v1/zones", "reg", map[string]string{"name": "cust.test"}), 409, "name", "registrar's own account vs its customer's zone")
	e.want(e.do("POST", "/api/v1/zones", "reg", map[string]string{"name": "cust.test", "account": "cust"}), 200, "registrar retry")
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", map[string]string{"name": "bad..name"}), 400, "name", "bad zone name")
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", map[string]string{"name": "under_score!.test"}), 400, "name", "bad zone name")

	// Lists: operator all, registrar its own and its customers', customer its own.
	for who, want := range map[string]string{
		"ops": "[c2.test cust.test reg.test self.test]", "reg": "[cust.test reg.test self.test]",
		"cust": "[cust.test self.test]", "cust2": "[c2.test]", "reg2": "[]", "cust3": "[]",
	} {
		var list []zoneJSON
		e.want(e.do("GET", "/api/v1/zones", who, nil), 200, "list").json(t, &list)
		var names []string
		for _, z := range list {
			names = append(names, z.Name)
		}
		if got := fmt.Sprint(names); got != want && !(want == "[]" && len(names) == 0) {
			t.Errorf("%s lists %s, want %s", who, got, want)
		}
	}
}

// TestConcurrentCreate: a registrar that retries a create after a timeout
// never gets two zones, nor an error.
func TestConcurrentCreate(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	codes := make(chan int, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- e.do("POST", "/api/v1/zones", "reg", map[string]string{"name": "race.test", "account": "cust"}).code
		}()
	}
	wg.Wait()
	close(codes)
	created := 0
	for c := range codes {
		switch c {
		case 201:
			created++
		case 200:
		default:
			t.Errorf("concurrent create: %d", c)
		}
	}
	if created != 1 {
		t.Errorf("%d creates answered 201, want 1", created)
	}
	names, _ := e.st.Zones(context.Background(), "")
	if fmt.Sprint(names) != "[race.test]" {
		t.Errorf("zones %v", names)
	}
}

// TestCrossTenant: every zone endpoint answers another tenant's zone
// exactly like a missing one.
func TestCrossTenant(t *testing.T) {
	e := newEnv(t)
	e.zone("cust2", "other.test")
	r := e.addRecord("cust2", "other.test", "www", "A", 300, "192.0.2.1")
	e.zone("cust3", "third.test")
	_, uk, err := e.st.CreateUpdateKey(context.Background(), "other.test", "home")
	if err != nil {
		t.Fatal(err)
	}
	rec := map[string]any{"name": "x", "type": "A", "ttl": 300, "data": "192.0.2.9"}
	calls := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/zones/%s", nil},
		{"DELETE", "/api/v1/zones/%s", nil},
		{"POST", "/api/v1/zones/%s/records", rec},
		{"PUT", "/api/v1/zones/%s/records/" + r.ID, rec},
		{"DELETE", "/api/v1/zones/%s/records/" + r.ID, nil},
		{"GET", "/api/v1/zones/%s/deliveries", nil},
		{"GET", "/api/v1/zones/%s/queue", nil},
		{"POST", "/api/v1/zones/%s/queue/flush", nil},
		{"GET", "/api/v1/zones/%s/export", nil},
		{"POST", "/api/v1/zones/%s/import", "$TTL 300\n@ SOA ns1.fwd.test. h.x. 1 2 3 4 5\n@ NS ns1.fwd.test.\n"},
		{"GET", "/api/v1/zones/%s/tsig", nil},
		{"POST", "/api/v1/zones/%s/tsig", map[string]string{"name": "k1"}},
		{"DELETE", "/api/v1/zones/%s/tsig/k1", nil},
		{"GET", "/api/v1/zones/%s/updatekeys", nil},
		{"POST", "/api/v1/zones/%s/updatekeys", map[string]string{"host": "home"}},
		{"DELETE", "/api/v1/zones/%s/updatekeys/" + uk.ID, nil},
	}
	for _, who := range []string{"cust", "reg", "reg2"} {
		for _, zone := range []string{"other.test", "missing.test"} {
			if who == "reg2" && zone == "other.test" {
				continue
			}
			for _, c := range calls {
				path := fmt.Sprintf(c.path, zone)
				res := e.do(c.method, path, who, c.body)
				if res.code != 404 || string(res.body) != "{\"error\":\"not found\"}\n" {
					t.Errorf("%s %s as %s: %d %s, want 404 like a missing zone", c.method, path, who, res.code, res.body)
				}
			}
		}
	}
	// Nothing changed.
	zd, err := e.st.ZoneData(context.Background(), "other.test")
	if err != nil || len(zd.Records) != 3 {
		t.Errorf("other.test after the attempts: %v %+v", err, zd.Records)
	}
	if ks, err := e.st.UpdateKeys(context.Background(), "cust2", ""); err != nil || len(ks) != 1 || ks[0].ID != uk.ID {
		t.Errorf("other.test's update keys after the attempts: %v %+v", err, ks)
	}
	// reg2 may touch its customer's zone; reg may not.
	e.want(e.do("GET", "/api/v1/zones/third.test", "reg2", nil), 200, "registrar reads its customer's zone")
	e.wantErr(e.do("GET", "/api/v1/zones/third.test", "reg", nil), 404, "", "registrar reads a stranger's zone")
	// Operators see everything.
	e.want(e.do("GET", "/api/v1/zones/other.test", "ops", nil), 200, "operator")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	const path = "/api/v1/zones/example.com/records"
	for _, tc := range []struct {
		body  string
		field string
	}{
		{``, ""},
		{`{`, ""},
		{`{"name":"www",}`, ""},
		{`not json`, ""},
		{`[]`, ""},
		{`"a string"`, ""},
		{`null`, "name"},
		{`{}`, "name"},
		{`{"name":"www","type":"A","data":"192.0.2.1"}`, "ttl"},
		{`{"name":"www","type":"A","ttl":300}`, "data"},
		{`{"name":"www","ttl":300,"data":"192.0.2.1"}`, "type"},
		{`{"name":"www","type":"A","ttl":"300","data":"192.0.2.1"}`, "ttl"},
		{`{"name":"www","type":"A","ttl":-1,"data":"192.0.2.1"}`, "ttl"},
		{`{"name":"www","type":"A","ttl":3.5,"data":"192.0.2.1"}`, "ttl"},
		{`{"name":"www","type":"A","ttl":1e20,"data":"192.0.2.1"}`, "ttl"},
		{`{"name":"www","type":"A","ttl":0,"data":"192.0.2.1"}`, "ttl"},
		{`{"name":7,"type":"A","ttl":300,"data":"192.0.2.1"}`, "name"},
		{`{"name":"www","type":"A","ttl":300,"data":["192.0.2.1"]}`, "data"},
		{`{"name":"www","type":"A","ttl":300,"data":"192.0.2.1","extra":1}`, "extra"},
		{`{"name":"www","type":"A","ttl":300,"data":"192.0.2.1"} {}`, ""},
		{`{"name":"www","type":"A","ttl":300,"data":"192.0.2.1"} x`, ""},
		{`{"name":"bad name","type":"A","ttl":300,"data":"192.0.2.1"}`, "name"},
		{`{"name":"www.elsewhere.org.","type":"A","ttl":300,"data":"192.0.2.1"}`, "name"},
		{`{"name":"www","type":"BOGUS","ttl":300,"data":"192.0.2.1"}`, "type"},
		{`{"name":"www","type":"SOA","ttl":300,"data":"a. b. 1 2 3 4 5"}`, "type"},
		{`{"name":"www","type":"A","ttl":300,"data":"300.1.1.1"}`, "data"},
		{`{"name":"www","type":"A","ttl":300,"data":""}`, "data"},
		{`{"name":"@","type":"MX","ttl":300,"data":"10 mail.example.com:99999"}`, "data"},
		{`{"name":"@","type":"MX","ttl":300,"data":"10 mx1.fwd.test:2525"}`, "data"},
		{`{"name":"www","type":"A","ttl":300,"data":"192.0.2.1\n192.0.2.2"}`, "data"},
		{`{"name":"@","type":"CNAME","ttl":300,"data":"x.example.net."}`, "type"},
	} {
		res := e.do("POST", path, "cust", tc.body)
		e.wantErr(res, 400, tc.field, "POST "+tc.body)
	}
	// Other bodies, same rules.
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", `{"name":"a.test","owner":"x"}`), 400, "owner", "zone unknown field")
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", `{"name":5}`), 400, "name", "zone name type")
	e.wantErr(e.do("POST", "/api/v1/zones", "cust", ``), 400, "", "zone empty body")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", `{"id":"x","role":1}`), 400, "role", "account role type")
	e.wantErr(e.do("POST", "/api/v1/tokens", "cust", `{"name":["x"]}`), 400, "name", "token name type")
	e.wantErr(e.do("GET", "/api/v1/zones/example.com/deliveries?limit=abc", "cust", nil), 400, "limit", "bad limit")
	e.wantErr(e.do("GET", "/api/v1/zones/example.com/deliveries?limit=0", "cust", nil), 400, "limit", "zero limit")
	// Unknown routes and methods are JSON errors too.
	e.wantErr(e.do("GET", "/api/v1/nope", "cust", nil), 404, "", "unknown route")
	e.wantErr(e.do("PATCH", "/api/v1/zones/example.com", "cust", nil), 405, "", "unknown method")
}

func TestUnauthenticated(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	for _, tok := range []string{"", "mxp_bogus", "nonsense", "mxp_" + strings.Repeat("a", 300)} {
		for _, p := range []string{"/api/v1/zones", "/api/v1/zones/example.com", "/api/v1/tokens", "/api/v1/accounts"} {
			res := e.do("GET", p, tok, nil)
			e.wantErr(res, 401, "", "GET "+p+" with "+tok)
			if h := res.hdr.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Errorf("WWW-Authenticate %q", h)
			}
		}
	}
	// Basic auth is not accepted by the API.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/zones", nil)
	req.SetBasicAuth("x", e.tok["cust"])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("basic auth: %d", res.StatusCode)
	}
	// The OpenAPI document is public.
	e.want(e.do("GET", "/api/v1/openapi.json", "", nil), 200, "openapi")
}

func TestAccountsAndUsers(t *testing.T) {
	e := newEnv(t)
	type acct struct{ ID, Role, Parent string }
	var a acct
	e.want(e.do("POST", "/api/v1/accounts", "reg", map[string]string{"id": "newcust"}), 201, "registrar creates").json(t, &a)
	if a.ID != "newcust" || a.Role != "customer" || a.Parent != "reg" {
		t.Errorf("registrar's new account: %+v", a)
	}
	e.want(e.do("POST", "/api/v1/accounts", "reg", map[string]string{"id": "newcust2", "role": "customer", "parent": "reg"}), 201, "registrar names itself")
	e.wantErr(e.do("POST", "/api/v1/accounts", "reg", map[string]string{"id": "r3", "role": "registrar"}), 403, "", "registrar creates registrar")
	e.wantErr(e.do("POST", "/api/v1/accounts", "reg", map[string]string{"id": "c9", "parent": "reg2"}), 403, "", "registrar for another parent")
	e.wantErr(e.do("POST", "/api/v1/accounts", "cust", map[string]string{"id": "c9"}), 403, "", "customer creates")
	e.wantErr(e.do("POST", "/api/v1/accounts", "reg", map[string]string{"id": "cust"}), 409, "id", "duplicate")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "Bad ID"}), 400, "id", "bad id")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "x1", "role": "king"}), 400, "role", "bad role")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", map[string]string{}), 400, "id", "missing id")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "x2", "parent": "nobody"}), 404, "parent", "missing parent")
	e.wantErr(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "x3", "role": "registrar", "parent": "reg"}), 400, "role", "registrar under a registrar")
	e.want(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "reg3", "role": "registrar"}), 201, "operator creates registrar")
	e.want(e.do("POST", "/api/v1/accounts", "ops", map[string]string{"id": "c4", "parent": "reg3"}), 201, "operator creates customer for registrar")

	list := func(who string) string {
		var as []acct
		e.want(e.do("GET", "/api/v1/accounts", who, nil), 200, "list accounts").json(t, &as)
		var ids []string
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		return fmt.Sprint(ids)
	}
	if got := list("reg"); got != "[cust newcust newcust2]" {
		t.Errorf("registrar lists %s", got)
	}
	if got := list("cust"); got != "[cust]" {
		t.Errorf("customer lists %s", got)
	}
	if got := list("ops"); got != "[c4 cust cust2 cust3 newcust newcust2 ops reg reg2 reg3]" {
		t.Errorf("operator lists %s", got)
	}
	if got := list("reg2"); got != "[cust3]" {
		t.Errorf("reg2 lists %s", got)
	}

	e.want(e.do("GET", "/api/v1/accounts/newcust", "reg", nil), 200, "registrar reads customer")
	e.want(e.do("GET", "/api/v1/accounts/cust", "cust", nil), 200, "customer reads itself")
	for _, c := range []struct{ who, id string }{{"reg", "cust3"}, {"reg", "cust2"}, {"cust", "cust2"}, {"cust", "reg"}, {"reg2", "cust"}, {"reg", "nobody"}} {
		e.wantErr(e.do("GET", "/api/v1/accounts/"+c.id, c.who, nil), 404, "", c.who+" reads "+c.id)
		e.wantErr(e.do("POST", "/api/v1/accounts/"+c.id+"/users", c.who, map[string]string{"email": "a@b.test", "password": "0123456789ab"}), 404, "", c.who+" adds a user to "+c.id)
		e.wantErr(e.do("GET", "/api/v1/accounts/"+c.id+"/users", c.who, nil), 404, "", c.who+" lists the users of "+c.id)
	}

	type user struct{ Email, Account, Role string }
	var u user
	e.want(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "Owner@Example.com", "password": "correct horse battery"}), 201, "create user").json(t, &u)
	if u.Email != "owner@example.com" || u.Account != "newcust" || u.Role != "customer" {
		t.Errorf("user %+v", u)
	}
	if _, err := e.st.Authenticate(context.Background(), "owner@example.com", "correct horse battery"); err != nil {
		t.Errorf("new user cannot sign in: %v", err)
	}
	e.want(e.do("POST", "/api/v1/accounts/cust/users", "cust", map[string]string{"email": "me@cust.test", "password": "0123456789ab"}), 201, "customer adds a user to itself")
	e.wantErr(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "owner@example.com", "password": "0123456789ab"}), 409, "email", "duplicate user")
	e.wantErr(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "not an email", "password": "0123456789ab"}), 400, "email", "bad email")
	e.wantErr(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "x@y.test", "password": "short"}), 400, "password", "short password")
	e.wantErr(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "x@y.test"}), 400, "password", "missing password")
	e.wantErr(e.do("POST", "/api/v1/accounts/nobody/users", "ops", map[string]string{"email": "x@y.test", "password": "0123456789ab"}), 404, "", "operator, missing account")

	// Listing: by email, no password hash; the registrar sees its
	// customer's users, the operator anyone's.
	e.want(e.do("POST", "/api/v1/accounts/newcust/users", "reg", map[string]string{"email": "admin@example.com", "password": "0123456789ab"}), 201, "second user")
	for _, who := range []string{"reg", "ops"} {
		res := e.want(e.do("GET", "/api/v1/accounts/newcust/users", who, nil), 200, who+" lists newcust's users")
		var us []user
		res.json(t, &us)
		if len(us) != 2 || us[0].Email != "admin@example.com" || us[1].Email != "owner@example.com" || us[1].Account != "newcust" {
			t.Errorf("%s lists %+v", who, us)
		}
		if bytes.Contains(res.body, []byte("hash")) || bytes.Contains(res.body, []byte("argon2")) {
			t.Errorf("%s: the list shows a password hash: %s", who, res.body)
		}
	}
	var none []user
	e.want(e.do("GET", "/api/v1/accounts/newcust2/users", "reg", nil), 200, "an account without users").json(t, &none)
	if len(none) != 0 {
		t.Errorf("newcust2 has users %+v", none)
	}
}

func TestTokens(t *testing.T) {
	e := newEnv(t)
	type tok struct {
		Token, ID, Account, Role, Name string
	}
	var nt tok
	res := e.want(e.do("POST", "/api/v1/tokens", "cust", map[string]string{"name": "ci"}), 201, "create token")
	res.json(t, &nt)
	if !strings.HasPrefix(nt.Token, "mxp_") || nt.ID == "" || nt.Account != "cust" || nt.Name != "ci" {
		t.Errorf("new token %+v", nt)
	}
	if res.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", res.hdr.Get("Cache-Control"))
	}
	e.want(e.do("POST", "/api/v1/tokens", "cust", nil), 201, "create token, empty body")
	e.want(e.do("GET", "/api/v1/zones", nt.Token, nil), 200, "new token works")

	var ts []tok
	res = e.want(e.do("GET", "/api/v1/tokens", "cust", nil), 200, "list tokens")
	res.json(t, &ts)
	if len(ts) != 3 || strings.Contains(string(res.body), "mxp_") {
		t.Errorf("token list %s", res.body)
	}

	// Registrars manage their customers' tokens; nobody another tenant's.
	var ct tok
	e.want(e.do("POST", "/api/v1/tokens", "reg", map[string]string{"account": "cust"}), 201, "registrar for customer").json(t, &ct)
	if ct.Account != "cust" || ct.Role != "customer" {
		t.Errorf("registrar-made token %+v", ct)
	}
	e.want(e.do("GET", "/api/v1/tokens?account=cust", "reg", nil), 200, "registrar lists customer's tokens")
	e.wantErr(e.do("POST", "/api/v1/tokens", "reg", map[string]string{"account": "cust2"}), 404, "account", "registrar for stranger")
	e.wantErr(e.do("POST", "/api/v1/tokens", "cust", map[string]string{"account": "reg"}), 404, "account", "customer for its registrar")
	e.wantErr(e.do("GET", "/api/v1/tokens?account=cust2", "cust", nil), 404, "account", "list stranger's tokens")
	e.wantErr(e.do("DELETE", "/api/v1/tokens/"+nt.ID, "cust2", nil), 404, "", "revoke stranger's token")
	e.wantErr(e.do("DELETE", "/api/v1/tokens/"+nt.ID+"?account=cust", "cust2", nil), 404, "account", "revoke stranger's token by account")
	e.wantErr(e.do("DELETE", "/api/v1/tokens/"+nt.ID, "reg", nil), 404, "", "registrar revokes without naming the account")
	e.wantErr(e.do("POST", "/api/v1/tokens", "cust", map[string]string{"name": strings.Repeat("n", 101)}), 400, "name", "long name")
	e.want(e.do("GET", "/api/v1/zones", nt.Token, nil), 200, "token still works")

	e.want(e.do("DELETE", "/api/v1/tokens/"+nt.ID, "cust", nil), 204, "revoke")
	e.wantErr(e.do("GET", "/api/v1/zones", nt.Token, nil), 401, "", "revoked token")
	e.wantErr(e.do("DELETE", "/api/v1/tokens/"+nt.ID, "cust", nil), 404, "", "revoke again")
	e.want(e.do("DELETE", "/api/v1/tokens/"+ct.ID+"?account=cust", "reg", nil), 204, "registrar revokes customer's token")
}

func TestTSIG(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	e.zone("cust2", "other.test")
	type key struct {
		Name, Algorithm, Secret string
		Zones                   []string
	}
	var k key
	e.want(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{"name": "ex-key"}), 201, "create").json(t, &k)
	if k.Name != "ex-key." || k.Algorithm != "hmac-sha256." || k.Secret == "" || fmt.Sprint(k.Zones) != "[example.com]" {
		t.Errorf("key %+v", k)
	}
	e.want(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{"name": "ex-512", "algorithm": "hmac-sha512"}), 201, "create sha512")
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{"name": "ex-key"}), 409, "name", "duplicate")
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{"name": "x", "algorithm": "md5"}), 400, "algorithm", "bad algorithm")
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{"name": "bad name!"}), 400, "name", "bad name")
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/tsig", "cust", map[string]string{}), 400, "name", "missing name")

	res := e.want(e.do("GET", "/api/v1/zones/example.com/tsig", "cust", nil), 200, "list")
	var ks []key
	res.json(t, &ks)
	if len(ks) != 2 || strings.Contains(string(res.body), k.Secret) || strings.Contains(string(res.body), "secret") {
		t.Errorf("list %s", res.body)
	}
	e.wantErr(e.do("DELETE", "/api/v1/zones/other.test/tsig/ex-key", "cust2", nil), 404, "", "delete via another zone")
	// A key that also covers a stranger's zone (made by the CLI) is not the customer's to delete.
	if _, err := e.st.CreateTSIGKey(context.Background(), "shared", "", []string{"example.com", "other.test"}); err != nil {
		t.Fatal(err)
	}
	e.wantErr(e.do("DELETE", "/api/v1/zones/example.com/tsig/shared", "cust", nil), 403, "", "delete shared key")
	e.want(e.do("DELETE", "/api/v1/zones/example.com/tsig/shared", "ops", nil), 204, "operator deletes shared key")
	e.want(e.do("DELETE", "/api/v1/zones/example.com/tsig/ex-key.", "cust", nil), 204, "delete")
	e.wantErr(e.do("DELETE", "/api/v1/zones/example.com/tsig/ex-key", "cust", nil), 404, "", "delete again")
}

func TestDeliveriesQueueFlush(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	ctx := context.Background()
	for i, ev := range []string{"accepted", "deferred", "delivered"} {
		if err := e.st.LogDelivery(ctx, "example.com", store.Delivery{Time: time.Unix(int64(1000+i), 0), ID: "q1", Event: ev, From: "a@b.test"}); err != nil {
			t.Fatal(err)
		}
	}
	var ds []store.Delivery
	e.want(e.do("GET", "/api/v1/zones/example.com/deliveries", "cust", nil), 200, "deliveries").json(t, &ds)
	if len(ds) != 3 || ds[0].Event != "delivered" {
		t.Errorf("deliveries %+v", ds)
	}
	e.want(e.do("GET", "/api/v1/zones/example.com/deliveries?limit=1", "cust", nil), 200, "deliveries").json(t, &ds)
	if len(ds) != 1 {
		t.Errorf("limit=1: %d", len(ds))
	}
	if err := e.st.MirrorQueued(ctx, store.QueueItem{ID: "q2", Zone: "example.com", From: "a@b.test", Rcpts: []string{"u@example.com"}}); err != nil {
		t.Fatal(err)
	}
	var q []store.QueueItem
	e.want(e.do("GET", "/api/v1/zones/example.com/queue", "cust", nil), 200, "queue").json(t, &q)
	if len(q) != 1 || q[0].ID != "q2" {
		t.Errorf("queue %+v", q)
	}

	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := e.st.SubscribeControl(sub)
	if err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/zones/Example.com/queue/flush", "cust", nil), 202, "flush")
	select {
	case c := <-ch:
		if c.Kind != "flush" || c.Zone != "example.com" {
			t.Errorf("control %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no flush control published")
	}
}

func TestExportImport(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	e.addRecord("cust", "example.com", "@", "MX", 3600, "10 mail.example.com:2525")
	e.addRecord("cust", "example.com", "mail", "A", 300, "192.0.2.7")
	res := e.want(e.do("GET", "/api/v1/zones/example.com/export", "cust", nil), 200, "export")
	if ct := res.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("export Content-Type %q", ct)
	}
	file := string(res.body)
	if !strings.Contains(file, "$ORIGIN example.com.") || !strings.Contains(file, "; mxport:port=2525") {
		t.Errorf("export:\n%s", file)
	}
	// Edit and import: the records are replaced, the port survives.
	file = strings.Replace(file, "192.0.2.7", "192.0.2.8", 1) + "www.example.com. 300 IN A 192.0.2.9\n"
	var z zoneJSON
	e.want(e.do("POST", "/api/v1/zones/example.com/import", "cust", file), 200, "import").json(t, &z)
	data := map[string]string{}
	for _, r := range z.Records {
		data[r.Name+" "+r.Type] = r.Data
	}
	if data["mail A"] != "192.0.2.8" || data["www A"] != "192.0.2.9" || data["@ MX"] != "10 mail.example.com.:2525" || len(z.Records) != 5 || !z.Forwarded {
		t.Errorf("after import: %+v", z)
	}
	// Bad files: 400 naming the problem; nothing changes.
	for _, bad := range []string{
		"",
		"garbage here\n",
		strings.Replace(file, "192.0.2.9", "192.0.2.999", 1),
		strings.Replace(file, ":2525", "", 1) + "@ 300 IN MX 10 mx1.fwd.test. ; mxport:port=2525\n",
		"$INCLUDE /etc/passwd\n",
	} {
		res := e.do("POST", "/api/v1/zones/example.com/import", "cust", bad)
		if res.code != 400 {
			t.Errorf("import %q: %d %s", bad, res.code, res.body)
		}
	}
	e.want(e.do("GET", "/api/v1/zones/example.com", "cust", nil), 200, "get").json(t, &z)
	if len(z.Records) != 5 {
		t.Errorf("records after bad imports: %+v", z.Records)
	}
}

// FuzzRecordBody: no record body gets a 500.
func FuzzRecordBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"www","type":"A","ttl":300,"data":"192.0.2.1"}`,
		`{"name":"@","type":"MX","ttl":300,"data":"10 mail.example.com:2525"}`,
		`{"name":"_sip._tcp","type":"SRV","ttl":300,"data":"0 5 5060 sip.example.com."}`,
		`{"name":"*.dev","type":"TXT","ttl":300,"data":"\"v=spf1 -all\""}`,
		`{"name":"x","type":"TYPE65280","ttl":300,"data":"\\# 2 abcd"}`,
		`{"name":"x","type":"CAA","ttl":300,"data":"0 issue \"letsencrypt.org\""}`,
		`{"name":"x","type":"A","ttl":1e400,"data":1}`, `{`, `[]`, `null`, ``, `{"name":null}`,
	} {
		f.Add([]byte(s))
	}
	st := storetest.New(f)
	ctx := context.Background()
	if _, err := st.CreateAccount(ctx, "c", store.RoleCustomer, ""); err != nil {
		f.Fatal(err)
	}
	tok, _, err := st.CreateToken(ctx, "c", "")
	if err != nil {
		f.Fatal(err)
	}
	if _, err := st.CreateZone(ctx, "example.com", "c"); err != nil {
		f.Fatal(err)
	}
	h := panel.New(panel.Config{Store: st, Auth: auth.New(st), Rate: -1})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range []string{"POST", "PUT"} {
			path := "/api/v1/zones/example.com/records"
			if m == "PUT" {
				path += "/someid"
			}
			req := httptest.NewRequest(m, path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %q: %d %s", m, body, rec.Code, rec.Body)
			}
			if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %q: error body not JSON: %s", m, body, rec.Body)
			}
		}
	})
}
