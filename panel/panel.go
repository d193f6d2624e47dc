// Package panel is the http role: echo setup, the one error handler,
// /metrics, /healthz, /readyz; the API, web UI and dyndns register their
// routes on it. It owns how errors become HTTP answers ({"error","field"}),
// request logging, rate limiting and body limits; it knows no Redis keys
// (everything goes through package store) and no HTML.
package panel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/mxport/mxport/panel/api"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// Default rate limits: requests per second and burst per identifier (a
// credential, else the client address), and the per-address ceiling that
// also covers requests with many different credentials.
const (
	DefaultRate      = 20
	DefaultBurst     = 40
	ipCeilingFactor  = 5
	apiBodyLimit     = "1M"  // every request body but zone imports
	importBodyLimit  = "10M" // zonefile.MaxSize
	readyCheckTimout = 2 * time.Second
)

// Config is what New needs.
type Config struct {
	Store *store.Store
	Auth  *auth.Authenticator
	// Gatherer is served at /metrics (all roles register into one
	// registry). Nil: /metrics serves the panel's own metrics only.
	Gatherer prometheus.Gatherer
	// Registerer takes the panel's own metrics (API requests by status,
	// rate-limit hits). Nil: a private registry.
	Registerer prometheus.Registerer
	// Ready reports readiness besides store.Ping (indexes loaded); nil
	// means ready. Checked by /readyz.
	Ready func(ctx context.Context) error
	// TrustedProxies are the only peers whose X-Forwarded-For is believed;
	// none means the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// Routes add more routes (dyndns, web).
	Routes []func(e *echo.Echo)
	// Rate and Burst limit requests per identifier; 0 means DefaultRate
	// and DefaultBurst, a negative Rate turns rate limiting off (tests).
	Rate  float64
	Burst int
}

// New returns the http role's echo server with the API registered on
// /api/v1 and cfg.Routes added.
func New(cfg Config) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = ErrorHandler
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)

	m := newMetrics(cfg.Registerer)
	e.Use(middleware.RequestID())
	e.Use(logRequests(m))
	e.Use(middleware.Recover())
	e.Use(middleware.SecureWithConfig(middleware.SecureConfig{
		ContentTypeNosniff: "nosniff",
		XFrameOptions:      "DENY",
		ReferrerPolicy:     "same-origin",
	}))
	isImport := func(c echo.Context) bool {
		return c.Request().Method == http.MethodPost && strings.HasSuffix(c.Request().URL.Path, "/import")
	}
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: apiBodyLimit, Skipper: isImport}))
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: importBodyLimit,
		Skipper: func(c echo.Context) bool { return !isImport(c) }}))
	if cfg.Rate >= 0 {
		r, b := cfg.Rate, cfg.Burst
		if r == 0 {
			r, b = DefaultRate, DefaultBurst
		}
		if b <= 0 {
			b = max(1, int(r))
		}
		e.Use(rateLimit(m, r*ipCeilingFactor, b*ipCeilingFactor, func(c echo.Context) string { return "ip:" + c.RealIP() }))
		e.Use(rateLimit(m, r, b, identifier))
	}

	gatherer := cfg.Gatherer
	if gatherer == nil {
		gatherer = m.reg
	}
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), readyCheckTimout)
		defer cancel()
		if err := cfg.Store.Ping(ctx); err != nil {
			return c.String(http.StatusServiceUnavailable, "not ready: store unavailable\n")
		}
		if cfg.Ready != nil {
			if err := cfg.Ready(ctx); err != nil {
				return c.String(http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
			}
		}
		return c.String(http.StatusOK, "ok\n")
	})
	api.Register(e.Group("/api/v1"), cfg.Store, cfg.Auth)
	for _, r := range cfg.Routes {
		r(e)
	}
	return e
}

// ipExtractor believes X-Forwarded-For only from trusted proxies. echo
// trusts loopback and private networks by default: that is turned off.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		p = p.Masked()
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// identifier keys the rate limit: a hash of the credential when the
// request carries one (so a registrar's many clients share its token's
// budget), else the client address.
func identifier(c echo.Context) string {
	if h := c.Request().Header.Get(echo.HeaderAuthorization); h != "" {
		sum := sha256.Sum256([]byte(h))
		return "cred:" + hex.EncodeToString(sum[:16])
	}
	return "ip:" + c.RealIP()
}

// unlimited are paths monitoring polls; they are never rate limited.
func unlimited(c echo.Context) bool {
	switch c.Request().URL.Path {
	case "/metrics", "/healthz", "/readyz":
		return true
	}
	return false
}

func rateLimit(m *metrics, r float64, burst int, id func(echo.Context) string) echo.MiddlewareFunc {
	return middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Skipper: unlimited,
		Store: middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
			Rate: rate.Limit(r), Burst: burst, ExpiresIn: 3 * time.Minute,
		}),
		IdentifierExtractor: func(c echo.Context) (string, error) { return id(c), nil },
		DenyHandler: func(c echo.Context, _ string, _ error) error {
			m.limited.Inc()
			wait := max(1, int((1/r)+0.999))
			c.Response().Header().Set("Retry-After", strconv.Itoa(wait))
			return echo.NewHTTPError(http.StatusTooManyRequests, "rate limit exceeded, retry later")
		},
	})
}

// metrics are the panel's own.
type metrics struct {
	reg      *prometheus.Registry // when Config.Registerer is nil
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	limited  prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxport_http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mxport_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxport_http_rate_limited_total",
			Help: "HTTP requests refused with 429 by the rate limiter.",
		}),
	}
	if r == nil {
		m.reg = prometheus.NewRegistry()
		r = m.reg
	}
	m.requests = register(r, m.requests)
	m.duration = register(r, m.duration)
	m.limited = register(r, m.limited)
	return m
}

// register registers c, or returns the collector already registered in
// its place (several servers on one registry, as in tests).
func register[C prometheus.Collector](r prometheus.Registerer, c C) C {
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}

// logRequests writes one log line per request and counts it; errors go
// through the error handler first, so the status logged is the one sent.
func logRequests(m *metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			dur := time.Since(start)
			res := c.Response()
			route := c.Path()
			if route == "" {
				route = "none"
			}
			m.requests.WithLabelValues(route, strconv.Itoa(res.Status)).Inc()
			m.duration.WithLabelValues(route).Observe(dur.Seconds())
			// The path only: a query may carry credentials.
			slog.Info("http", "id", res.Header().Get(echo.HeaderXRequestID), "method", c.Request().Method,
				"path", c.Request().URL.Path, "code", res.Status, "remote", c.RealIP(),
				"bytes", res.Size, "dur", dur.Round(time.Microsecond))
			return nil
		}
	}
}

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// ErrorHandler is the one echo HTTPErrorHandler: it answers
// {"error","field"} with the status err means, and never internal text:
// anything unknown is a 500 with a generic message, logged in detail.
func ErrorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, body := classify(err)
	if code == http.StatusUnauthorized {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="mxport"`)
	}
	if code >= 500 && code != http.StatusServiceUnavailable {
		slog.Error("http error", "id", c.Response().Header().Get(echo.HeaderXRequestID),
			"method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	if code == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "5")
	}
	if c.Request().Method == http.MethodHead {
		err = c.NoContent(code)
	} else {
		err = c.JSON(code, body)
	}
	if err != nil {
		slog.Warn("http error reply", "err", err)
	}
}

// classify maps an error to a status and body.
func classify(err error) (int, errorBody) {
	var (
		fe  *record.FieldError
		he  *echo.HTTPError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "service temporarily unavailable, retry later"}
	case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, store.ErrBadCredentials):
		return http.StatusUnauthorized, errorBody{Error: "missing or invalid credentials"}
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, errorBody{Error: "not allowed for this role"}
	case errors.Is(err, store.ErrNotFound):
		b := errorBody{Error: "not found"}
		if errors.As(err, &fe) {
			b = errorBody{Error: fe.Msg, Field: fe.Field}
		}
		return http.StatusNotFound, b
	case errors.Is(err, store.ErrExists):
		b := errorBody{Error: "already exists"}
		if errors.As(err, &fe) {
			b = errorBody{Error: fe.Msg, Field: fe.Field}
		}
		return http.StatusConflict, b
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, errorBody{Error: "changed concurrently, retry"}
	case errors.As(err, &he):
		// Before FieldError: a 413 from the body limit can surface
		// while JSON is being decoded.
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && s != "" {
			msg = s
		}
		if he.Code >= 500 {
			msg = http.StatusText(he.Code)
		}
		return he.Code, errorBody{Error: msg}
	case errors.As(err, &fe):
		return http.StatusBadRequest, errorBody{Error: fe.Msg, Field: fe.Field}
	case errors.As(err, &ute):
		return http.StatusBadRequest, errorBody{Error: "wrong JSON type for " + ute.Field + ": want " + ute.Type.String(), Field: ute.Field}
	case errors.As(err, &se):
		return http.StatusBadRequest, errorBody{Error: "bad JSON"}
	}
	return http.StatusInternalServerError, errorBody{Error: "internal error"}
}
