package panel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxport/mxport/panel"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	storetest.Main(m)
}

func serve(t *testing.T, cfg panel.Config) *httptest.Server {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = storetest.New(t)
	}
	cfg.Auth = auth.New(cfg.Store)
	srv := httptest.NewServer(panel.New(cfg))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func token(t *testing.T, st *store.Store, role store.Role) string {
	t.Helper()
	ctx := context.Background()
	id := string(role) + "1"
	if _, err := st.EnsureAccount(ctx, id, role); err != nil {
		t.Fatal(err)
	}
	tok, _, err := st.CreateToken(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestHealthAndReady(t *testing.T) {
	rs := storetest.Start(t)
	st := rs.Open(t, storetest.Options)
	var notReady error
	srv := serve(t, panel.Config{Store: st, Ready: func(context.Context) error { return notReady }})

	if res, body := get(t, srv.URL+"/healthz"); res.StatusCode != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", res.StatusCode, body)
	}
	if res, body := get(t, srv.URL+"/readyz"); res.StatusCode != 200 || body != "ok\n" {
		t.Errorf("readyz: %d %q", res.StatusCode, body)
	}
	notReady = errors.New("dns zone index not loaded")
	if res, body := get(t, srv.URL+"/readyz"); res.StatusCode != 503 || !strings.Contains(body, "dns zone index not loaded") {
		t.Errorf("readyz, index not loaded: %d %q", res.StatusCode, body)
	}
	notReady = nil
	rs.Stop()
	if res, body := get(t, srv.URL+"/readyz"); res.StatusCode != 503 || !strings.Contains(body, "store unavailable") {
		t.Errorf("readyz, Redis down: %d %q", res.StatusCode, body)
	}
	if res, _ := get(t, srv.URL+"/healthz"); res.StatusCode != 200 {
		t.Errorf("healthz, Redis down: %d", res.StatusCode)
	}
	// The API answers 503, not 500, while Redis is down.
	res, body := get(t, srv.URL+"/api/v1/zones", "Authorization", "Bearer mxp_x")
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || strings.Contains(body, "dial") {
		t.Errorf("API, Redis down: %d %q", res.StatusCode, body)
	}
	rs.Restart(t)
	if res, _ := get(t, srv.URL+"/readyz"); res.StatusCode != 200 {
		t.Errorf("readyz after Redis restart: %d", res.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "mxport_dns_test_total", Help: "x"})
	reg.MustRegister(other)
	srv := serve(t, panel.Config{Gatherer: reg, Registerer: reg, Rate: 1, Burst: 1})
	get(t, srv.URL+"/api/v1/zones")
	get(t, srv.URL+"/api/v1/zones") // rate limited
	res, body := get(t, srv.URL+"/metrics")
	if res.StatusCode != 200 {
		t.Fatalf("metrics: %d", res.StatusCode)
	}
	for _, want := range []string{
		`mxport_http_requests_total{code="401",route="/api/v1/zones"} 1`,
		`mxport_http_requests_total{code="429",route="/api/v1/zones"} 1`,
		`mxport_http_rate_limited_total 1`,
		`mxport_http_request_duration_seconds_bucket`,
		`mxport_dns_test_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	// A second server on the same registry does not panic.
	serve(t, panel.Config{Gatherer: reg, Registerer: reg})
}

func TestBodyLimit(t *testing.T) {
	st := storetest.New(t)
	tok := token(t, st, store.RoleCustomer)
	srv := serve(t, panel.Config{Store: st})
	big := `{"name":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(body) // no length: sent chunked
		}
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/zones", body)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 413 || !json.Valid(b) || !strings.Contains(string(b), `"error"`) {
			t.Errorf("chunked=%v: %d %s", chunked, res.StatusCode, b)
		}
	}
}

func TestRateLimit(t *testing.T) {
	st := storetest.New(t)
	tok := token(t, st, store.RoleCustomer)
	srv := serve(t, panel.Config{Store: st, Rate: 1, Burst: 3})
	codes := ""
	var last *http.Response
	for range 5 {
		res, body := get(t, srv.URL+"/api/v1/zones", "Authorization", "Bearer "+tok)
		codes += fmt.Sprint(res.StatusCode, " ")
		if res.StatusCode == 429 {
			last = res
			if !json.Valid([]byte(body)) {
				t.Errorf("429 body %q", body)
			}
		}
	}
	if codes != "200 200 200 429 429 " {
		t.Errorf("codes %s", codes)
	}
	if last == nil || last.Header.Get("Retry-After") != "1" {
		t.Errorf("429 without Retry-After")
	}
	// Another credential has its own budget; monitoring is never limited.
	if res, _ := get(t, srv.URL+"/api/v1/zones", "Authorization", "Bearer "+token(t, st, store.RoleOperator)); res.StatusCode != 200 {
		t.Errorf("other token: %d", res.StatusCode)
	}
	for range 10 {
		if res, _ := get(t, srv.URL+"/healthz"); res.StatusCode != 200 {
			t.Fatalf("healthz rate limited: %d", res.StatusCode)
		}
	}
	// The per-address ceiling (5x) catches many credentials from one address.
	limited := false
	for i := range 30 {
		res, _ := get(t, srv.URL+"/api/v1/zones", "Authorization", fmt.Sprintf("Bearer mxp_random%d", i))
		if res.StatusCode == 429 {
			limited = true
			break
		}
	}
	if !limited {
		t.Errorf("random credentials from one address never rate limited")
	}
}

func TestTrustedProxies(t *testing.T) {
	ip := func(c echo.Context) error { return c.String(200, c.RealIP()) }
	route := func(e *echo.Echo) { e.GET("/ip", ip) }
	direct := serve(t, panel.Config{Routes: []func(*echo.Echo){route}})
	if _, body := get(t, direct.URL+"/ip", "X-Forwarded-For", "203.0.113.9"); body != "127.0.0.1" {
		t.Errorf("untrusted X-Forwarded-For believed: %q", body)
	}
	proxied := serve(t, panel.Config{Routes: []func(*echo.Echo){route}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if _, body := get(t, proxied.URL+"/ip", "X-Forwarded-For", "203.0.113.9"); body != "203.0.113.9" {
		t.Errorf("trusted X-Forwarded-For ignored: %q", body)
	}
	other := serve(t, panel.Config{Routes: []func(*echo.Echo){route}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if _, body := get(t, other.URL+"/ip", "X-Forwarded-For", "203.0.113.9"); body != "127.0.0.1" {
		t.Errorf("X-Forwarded-For from an untrusted loopback peer believed: %q", body)
	}
}

func TestSecurityHeadersAndNotFound(t *testing.T) {
	srv := serve(t, panel.Config{})
	res, body := get(t, srv.URL+"/nope")
	if res.StatusCode != 404 || !json.Valid([]byte(body)) {
		t.Errorf("unknown path: %d %q", res.StatusCode, body)
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("X-Request-Id") == "" {
		t.Errorf("headers %v", res.Header)
	}
}

// TestErrorHandler: each error class gets its status and body, and
// internal text never reaches the client.
func TestErrorHandler(t *testing.T) {
	var ute *json.UnmarshalTypeError
	err := json.Unmarshal([]byte(`{"ttl":"x"}`), &struct {
		TTL int `json:"ttl"`
	}{})
	errors.As(err, &ute)
	for _, tc := range []struct {
		err   error
		code  int
		body  string
		extra string
	}{
		{&record.FieldError{Field: "data", Msg: "bad"}, 400, `{"error":"bad","field":"data"}`, ""},
		{fmt.Errorf("wrapped: %w", &record.FieldError{Field: "ttl", Msg: "too low"}), 400, `{"error":"too low","field":"ttl"}`, ""},
		{ute, 400, `{"error":"wrong JSON type for ttl: want int","field":"ttl"}`, ""},
		{fmt.Errorf("zone x.test: %w", store.ErrNotFound), 404, `{"error":"not found"}`, ""},
		{auth.ErrUnauthenticated, 401, `{"error":"missing or invalid credentials"}`, "Bearer"},
		{auth.ErrForbidden, 403, `{"error":"not allowed for this role"}`, ""},
		{fmt.Errorf("x: %w", store.ErrExists), 409, `{"error":"already exists"}`, ""},
		{fmt.Errorf("x: %w", store.ErrConflict), 409, `{"error":"changed concurrently, retry"}`, ""},
		{fmt.Errorf("%w: dial tcp 10.0.0.1:6379: refused", store.ErrUnavailable), 503, `{"error":"service temporarily unavailable, retry later"}`, ""},
		{echo.NewHTTPError(418, "teapot"), 418, `{"error":"teapot"}`, ""},
		{echo.NewHTTPError(502, "upstream secret 10.0.0.1"), 502, `{"error":"Bad Gateway"}`, ""},
		{errors.New("redis: secret internal detail"), 500, `{"error":"internal error"}`, ""},
	} {
		e := echo.New()
		req := httptest.NewRequest("GET", "/", nil)
		rec := httptest.NewRecorder()
		panel.ErrorHandler(tc.err, e.NewContext(req, rec))
		if rec.Code != tc.code || strings.TrimSpace(rec.Body.String()) != tc.body {
			t.Errorf("%v: %d %s, want %d %s", tc.err, rec.Code, rec.Body, tc.code, tc.body)
		}
		if tc.extra != "" && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), tc.extra) {
			t.Errorf("%v: WWW-Authenticate %q", tc.err, rec.Header().Get("WWW-Authenticate"))
		}
	}
	// A committed response is left alone.
	e := echo.New()
	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest("GET", "/", nil), rec)
	c.String(200, "done")
	panel.ErrorHandler(errors.New("late"), c)
	if rec.Code != 200 || rec.Body.String() != "done" {
		t.Errorf("committed response changed: %d %q", rec.Code, rec.Body)
	}
	// A panic is a 500 with the generic message.
	srv := serve(t, panel.Config{Routes: []func(*echo.Echo){func(e *echo.Echo) {
		e.GET("/panic", func(echo.Context) error { panic("secret panic detail") })
	}}})
	res, body := get(t, srv.URL+"/panic")
	if res.StatusCode != 500 || strings.Contains(body, "secret") {
		t.Errorf("panic: %d %q", res.StatusCode, body)
	}
}
