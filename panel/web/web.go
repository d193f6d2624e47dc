// Package web is the panel's HTML UI: server-rendered html/template pages,
// assets embedded, working without JavaScript.
//
// It owns the browser side of the panel: sign-in with email and password
// (throttled per address and per email), server-side sessions in a strict
// cookie, a CSRF token on every form, security headers, and the pages for
// zones, records, MX forwarding, the delivery log and queue, the account
// (API tokens, password) and the operator overviews. Every read and write goes
// through package store; who may touch what is decided by package auth. It
// registers only its own routes and changes nothing global on the echo
// instance, so the API and dyndns2 can share it.
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Cookie names. The session cookie holds the session's secret; the login
// cookie holds the CSRF token of the sign-in form, before any session.
const (
	SessionCookie = "mxport_session"
	loginCookie   = "mxport_login"
)

// SessionTTL is how long a sign-in lasts.
const SessionTTL = 12 * time.Hour

// Config configures the web UI.
type Config struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	MXHosts []string // what DNS publishes for forwarded zones (for the preview)
	Secure  bool     // cookies always Secure; they are anyway on a request over TLS or from a proxy saying X-Forwarded-Proto: https

	// Now is the clock of the sign-in throttle; nil means time.Now.
	Now func() time.Time
	// Delay waits before answering a failed sign-in (the throttle's
	// slow-down); nil sleeps, ending early when ctx ends. Tests set it.
	Delay func(ctx context.Context, d time.Duration)
}

// Register adds the web UI's routes to e: "/", "/login", "/logout",
// "/zones", "/zones/:zone" with its record, flush and queue forms,
// "/account", the operator pages under "/admin/" and "/assets/*". Each
// route carries the UI's own middleware (security headers, session); e's
// global middleware and error handler are left alone. Sign-in throttling
// counts failures per c.RealIP(): set e.IPExtractor, or a client can pick
// its own address with X-Forwarded-For.
func Register(e *echo.Echo, cfg Config) {
	h := newHandler(cfg)
	pub := []echo.MiddlewareFunc{h.headers, h.session}
	in := append(pub, h.requireSession, h.checkCSRF)

	e.GET("/", h.home, pub...)
	e.GET("/login", h.loginPage, pub...)
	e.POST("/login", h.login, pub...)
	e.POST("/logout", h.logout, in...)

	e.GET("/zones", h.zones, in...)
	e.POST("/zones", h.createZone, in...)
	e.GET("/zones/:zone", h.zone, in...)
	e.POST("/zones/:zone/records", h.addRecord, in...)
	e.GET("/zones/:zone/records/:id/edit", h.editRecord, in...)
	e.POST("/zones/:zone/records/:id", h.updateRecord, in...)
	e.POST("/zones/:zone/records/:id/delete", h.deleteRecord, in...)
	e.POST("/zones/:zone/flush", h.flush, in...)
	e.POST("/zones/:zone/updatekeys", h.createUpdateKey, in...)
	e.POST("/zones/:zone/updatekeys/:id/revoke", h.revokeUpdateKey, in...)

	e.GET("/account", h.account, in...)
	e.POST("/account/tokens", h.createToken, in...)
	e.POST("/account/tokens/:id/revoke", h.revokeToken, in...)
	e.POST("/account/password", h.changePassword, in...)

	op := append(in[:len(in):len(in)], h.requireOperator)
	e.GET("/admin/accounts", h.adminAccounts, op...)
	e.GET("/admin/zones", h.adminZones, op...)
	e.GET("/admin/queue", h.adminQueue, op...)

	assets, _ := fs.Sub(assetFS, "assets")
	files := http.StripPrefix("/assets/", http.FileServer(http.FS(assets)))
	e.GET("/assets/*", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	}, h.headers)
}

type handler struct {
	st       *store.Store
	auth     *auth.Authenticator
	mxHosts  []string
	secure   bool
	throttle *throttle
	pages    map[string]*template.Template
}

func newHandler(cfg Config) *handler {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	delay := cfg.Delay
	if delay == nil {
		delay = sleep
	}
	a := cfg.Auth
	if a == nil {
		a = auth.New(cfg.Store)
	}
	return &handler{st: cfg.Store, auth: a, mxHosts: cfg.MXHosts, secure: cfg.Secure,
		throttle: newThrottle(now, delay), pages: parsePages()}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// headers sets the security headers of every UI response: no framing, no
// foreign sources, no MIME sniffing, no referrer leaving the site, and no
// caching of pages that show account data.
func (h *handler) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		hd := c.Response().Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		return next(c)
	}
}

const sessionKey = "mxport.web.session"

// session loads the session named by the cookie, when there is a live one,
// and makes it the request's principal.
func (h *handler) session(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ck, err := c.Cookie(SessionCookie)
		if err != nil || ck.Value == "" {
			return next(c)
		}
		s, err := h.st.LookupSession(c.Request().Context(), ck.Value)
		switch {
		case errors.Is(err, store.ErrNotFound):
			h.clearCookie(c, SessionCookie)
			return next(c)
		case err != nil:
			return h.fail(c, err)
		}
		c.Set(sessionKey, &s)
		auth.Set(c, &auth.Principal{Account: s.Account, Role: s.Role, Email: s.Email})
		return next(c)
	}
}

func sessionOf(c echo.Context) *store.Session {
	s, _ := c.Get(sessionKey).(*store.Session)
	return s
}

// requireSession sends a visitor without a session to the sign-in page
// (a GET) or refuses the request (anything else: a form post that lost its
// session must not be replayed after sign-in).
func (h *handler) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if sessionOf(c) != nil {
			return next(c)
		}
		if c.Request().Method == http.MethodGet {
			return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request().URL.RequestURI()))
		}
		return h.errorPage(c, http.StatusForbidden, "Your session has ended. Please sign in again.")
	}
}

// checkCSRF refuses a state-changing request whose form field "csrf" is not
// the session's token. Reads pass.
func (h *handler) checkCSRF(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return next(c)
		}
		s := sessionOf(c)
		if s == nil || !tokenEqual(c.FormValue("csrf"), s.CSRF) {
			return h.errorPage(c, http.StatusForbidden, "The form was stale or did not come from this site. Go back, reload the page and try again.")
		}
		return next(c)
	}
}

func (h *handler) requireOperator(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := auth.Get(c); p == nil || p.Role != store.RoleOperator {
			return h.errorPage(c, http.StatusForbidden, "This page is for operators.")
		}
		return next(c)
	}
}

func tokenEqual(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// setCookie sets a cookie only this site's pages get, never scripts, and
// only over HTTPS when the panel is reached over HTTPS: directly, or through
// a TLS-terminating proxy that says so. (A client that fakes the header only
// makes its own cookie Secure.)
func (h *handler) setCookie(c echo.Context, name, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.secure || c.Scheme() == "https", SameSite: http.SameSiteStrictMode})
}

func (h *handler) clearCookie(c echo.Context, name string) { h.setCookie(c, name, "", -1) }

// page is the data every template gets.
type page struct {
	Title   string
	User    *store.Session // nil when signed out
	CSRF    string
	Nav     string // the active navigation entry
	Notice  string
	Data    any
	Status  int
	Message string
}

// render writes template name with data, complete or not at all.
func (h *handler) render(c echo.Context, status int, name string, p page) error {
	t, ok := h.pages[name]
	if !ok {
		return h.fail(c, errors.New("web: no template "+name))
	}
	if s := sessionOf(c); s != nil {
		p.User = s
		p.CSRF = s.CSRF
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		slog.Error("web render", "page", name, "err", err)
		return c.String(http.StatusInternalServerError, "internal error")
	}
	return c.HTMLBlob(status, buf.Bytes())
}

func (h *handler) errorPage(c echo.Context, status int, msg string) error {
	return h.render(c, status, "error.html", page{Title: http.StatusText(status), Status: status, Message: msg})
}

// fail answers a store or internal error with an HTML page: 404 for
// ErrNotFound (also another tenant's zone), 503 for ErrUnavailable, 500
// (logged, no detail shown) otherwise.
func (h *handler) fail(c echo.Context, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return h.errorPage(c, http.StatusNotFound, "There is nothing here, or it is not yours.")
	case errors.Is(err, store.ErrUnavailable):
		c.Response().Header().Set("Retry-After", "30")
		return h.errorPage(c, http.StatusServiceUnavailable, "The service is briefly unavailable. Please try again in a moment.")
	}
	slog.Error("web error", "path", c.Path(), "err", err)
	return h.errorPage(c, http.StatusInternalServerError, "Something went wrong on our side.")
}

// fieldErrors is a form's validation errors by field name.
type fieldErrors map[string]string

func fieldErrorsOf(err error) (fieldErrors, bool) {
	var fe *record.FieldError
	if errors.As(err, &fe) {
		return fieldErrors{fe.Field: fe.Msg}, true
	}
	return nil, false
}

// localPath returns next when it is a path on this site, "/zones"
// otherwise, so the sign-in form cannot redirect elsewhere.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") || strings.HasPrefix(next, "/login") {
		return "/zones"
	}
	return next
}
