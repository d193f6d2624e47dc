package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// parsePages parses each page template together with the layout.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"join": strings.Join,
		"dot":  func(h string) string { return strings.TrimSuffix(h, ".") },
	}
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	pages := make(map[string]*template.Template)
	for _, n := range names {
		if n.Name() == "layout.html" {
			continue
		}
		pages[n.Name()] = template.Must(template.New(n.Name()).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n.Name()))
	}
	return pages
}

// notices are the messages a redirect after a successful form may ask for
// (?done=...); only these texts can be shown.
var notices = map[string]string{
	"created":    "Zone created.",
	"added":      "Record added.",
	"updated":    "Record saved.",
	"deleted":    "Record deleted.",
	"flushed":    "Retry requested: waiting mail for this zone is being delivered now.",
	"revoked":    "Token revoked.",
	"keyrevoked": "Update key revoked.",
	"password":   "Password changed.",
}

func notice(c echo.Context) string { return notices[c.QueryParam("done")] }

func (h *handler) home(c echo.Context) error {
	if sessionOf(c) != nil {
		return c.Redirect(http.StatusSeeOther, "/zones")
	}
	return c.Redirect(http.StatusSeeOther, "/login")
}

// Sign-in and sign-out.

type loginView struct {
	Email, Next, Error string
}

func (h *handler) loginPage(c echo.Context) error {
	if sessionOf(c) != nil {
		return c.Redirect(http.StatusSeeOther, localPath(c.QueryParam("next")))
	}
	return h.renderLogin(c, http.StatusOK, loginView{Next: c.QueryParam("next")})
}

// renderLogin shows the sign-in form with the pre-session CSRF token of the
// login cookie, making one when there is none.
func (h *handler) renderLogin(c echo.Context, status int, v loginView) error {
	tok := ""
	if ck, err := c.Cookie(loginCookie); err == nil && len(ck.Value) >= 32 && len(ck.Value) <= 64 {
		tok = ck.Value
	} else {
		tok = randomToken()
		h.setCookie(c, loginCookie, tok, int(time.Hour/time.Second))
	}
	return h.render(c, status, "login.html", page{Title: "Sign in", CSRF: tok, Data: v})
}

func (h *handler) login(c echo.Context) error {
	ck, err := c.Cookie(loginCookie)
	if err != nil || !tokenEqual(c.FormValue("csrf"), ck.Value) {
		return h.errorPage(c, http.StatusForbidden, "The sign-in form was stale. Go back, reload the page and try again.")
	}
	ctx := c.Request().Context()
	email := strings.ToLower(strings.TrimSpace(c.FormValue("email")))
	v := loginView{Email: email, Next: c.FormValue("next")}
	keys := []string{"ip:" + c.RealIP(), "email:" + email}
	if d := h.throttle.locked(keys...); d > 0 {
		return h.lockedOut(c, v, d)
	}
	u, err := h.st.Authenticate(ctx, email, c.FormValue("password"))
	if errors.Is(err, store.ErrBadCredentials) {
		if d := h.throttle.fail(ctx, keys...); d > 0 {
			return h.lockedOut(c, v, d)
		}
		v.Error = "Wrong email or password."
		return h.renderLogin(c, http.StatusUnauthorized, v)
	}
	if err != nil {
		return h.fail(c, err)
	}
	h.throttle.succeed("email:" + email)
	if old, err := c.Cookie(SessionCookie); err == nil && old.Value != "" {
		h.st.DeleteSession(ctx, old.Value)
	}
	secret, _, err := h.st.CreateSession(ctx, u, SessionTTL)
	if err != nil {
		return h.fail(c, err)
	}
	h.setCookie(c, SessionCookie, secret, int(SessionTTL/time.Second))
	h.clearCookie(c, loginCookie)
	return c.Redirect(http.StatusSeeOther, localPath(v.Next))
}

func (h *handler) lockedOut(c echo.Context, v loginView, d time.Duration) error {
	mins := int((d + time.Minute - 1) / time.Minute)
	c.Response().Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	v.Error = fmt.Sprintf("Too many failed sign-ins. Try again in %d minute(s).", mins)
	return h.renderLogin(c, http.StatusTooManyRequests, v)
}

func (h *handler) logout(c echo.Context) error {
	if ck, err := c.Cookie(SessionCookie); err == nil {
		if err := h.st.DeleteSession(c.Request().Context(), ck.Value); err != nil {
			return h.fail(c, err)
		}
	}
	h.clearCookie(c, SessionCookie)
	return c.Redirect(http.StatusSeeOther, "/login")
}

// Zones.

type zoneRow struct {
	Name    string
	Account string
	Records int
	Route   []record.Target
}

type zonesView struct {
	Zones       []zoneRow
	Detailed    bool // rows carry records and route
	AskAccount  bool // the form has an account field (operator, registrar)
	Form        map[string]string
	Errors      fieldErrors
	GeneralErr  string
	Page, Pages int
}

// detailLimit is how many zones a list page reads in full.
const detailLimit = 100

func (h *handler) zones(c echo.Context) error {
	return h.renderZones(c, http.StatusOK, map[string]string{}, nil)
}

func (h *handler) renderZones(c echo.Context, status int, form map[string]string, errs fieldErrors) error {
	ctx := c.Request().Context()
	p := auth.Get(c)
	names, err := h.auth.Zones(ctx, p)
	if err != nil {
		return h.fail(c, err)
	}
	sort.Strings(names)
	v := zonesView{AskAccount: p.Role != store.RoleCustomer, Form: form, Errors: errs}
	if v.Form["account"] == "" {
		v.Form["account"] = p.Account
	}
	if g := generalError(errs, "name", "account"); g != "" {
		v.GeneralErr = g
	}
	v.Detailed = len(names) <= detailLimit
	for _, n := range names {
		row := zoneRow{Name: n}
		if v.Detailed {
			zd, err := h.st.ZoneData(ctx, n)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return h.fail(c, err)
			}
			row.Account, row.Records, row.Route = zd.Account, len(zd.Records), zd.Route()
		}
		v.Zones = append(v.Zones, row)
	}
	return h.render(c, status, "zones.html", page{Title: "Zones", Nav: "zones", Notice: notice(c), Data: v})
}

// generalError returns the message of an error whose field is none of
// fields (shown above the form rather than next to an input).
func generalError(errs fieldErrors, fields ...string) string {
outer:
	for f, msg := range errs {
		for _, known := range fields {
			if f == known {
				continue outer
			}
		}
		return msg
	}
	return ""
}

func (h *handler) createZone(c echo.Context) error {
	ctx := c.Request().Context()
	p := auth.Get(c)
	form := map[string]string{"name": strings.TrimSpace(c.FormValue("name")), "account": strings.TrimSpace(c.FormValue("account"))}
	acct := p.Account
	if p.Role != store.RoleCustomer && form["account"] != "" {
		acct = form["account"]
	}
	ok, err := h.auth.CanAccessAccount(ctx, p, acct)
	if err != nil {
		return h.fail(c, err)
	}
	if !ok {
		return h.renderZones(c, http.StatusBadRequest, form, fieldErrors{"account": "No such account among yours."})
	}
	z, err := h.st.CreateZone(ctx, form["name"], acct)
	if errs, isField := fieldErrorsOf(err); isField {
		return h.renderZones(c, http.StatusBadRequest, form, errs)
	}
	if errors.Is(err, store.ErrNotFound) {
		return h.renderZones(c, http.StatusBadRequest, form, fieldErrors{"account": "No such account."})
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/zones/"+url.PathEscape(z.Name)+"?done=created")
}

// recordForm is a record form as the user filled it in.
type recordForm struct {
	ID, Name, Type, TTL, Data string
	Errors                    fieldErrors
	General                   string
}

func readRecordForm(c echo.Context) (recordForm, record.Record, error) {
	f := recordForm{
		Name: strings.TrimSpace(c.FormValue("name")),
		Type: strings.ToUpper(strings.TrimSpace(c.FormValue("type"))),
		TTL:  strings.TrimSpace(c.FormValue("ttl")),
		Data: strings.TrimSpace(c.FormValue("data")),
	}
	r := record.Record{Name: f.Name, Type: f.Type, Data: f.Data}
	if f.Name == "" {
		r.Name = record.Apex
	}
	ttl, err := strconv.ParseUint(f.TTL, 10, 32)
	if err != nil {
		return f, r, &record.FieldError{Field: "ttl", Msg: fmt.Sprintf("TTL %q is not a number of seconds", f.TTL)}
	}
	r.TTL = uint32(ttl)
	// An MX entered as "mail.example.com:2525" gets the preference 10.
	if r.Type == "MX" && len(strings.Fields(r.Data)) == 1 {
		r.Data = "10 " + r.Data
	}
	return f, r, nil
}

// withErrors attaches err to the form: next to its field, or above.
func (f recordForm) withErrors(err error) recordForm {
	errs, _ := fieldErrorsOf(err)
	f.Errors = errs
	f.General = generalError(errs, "name", "type", "ttl", "data")
	return f
}

// forwardingView is the MX section of a zone page.
type forwardingView struct {
	Forwarded bool
	HasMX     bool
	Published []string        // "10 mx1.fwd.example.net"
	Route     []record.Target // where the forwarder delivers
	Last      *store.Delivery // the last delivery attempt's result
	Answered  bool            // the home server replied to it
}

type zoneView struct {
	Zone       store.ZoneData
	Form       recordForm
	Fwd        forwardingView
	Deliveries []store.Delivery
	Queue      []store.QueueItem
	// The zone's dyndns update keys; NewKey is a new key's secret (shown
	// once, for NewKeyHost); KeyHost and KeyErr refill a refused form.
	Keys               []store.UpdateKey
	NewKey, NewKeyHost string
	KeyHost, KeyErr    string
}

// deliveriesShown is how many delivery events a zone page lists.
const deliveriesShown = 50

func (h *handler) zone(c echo.Context) error {
	return h.renderZone(c, http.StatusOK, recordForm{TTL: "3600"})
}

func (h *handler) renderZone(c echo.Context, status int, form recordForm) error {
	return h.renderZoneView(c, status, zoneView{Form: form})
}

// renderZoneView shows the zone page with v's forms; it fills in the rest.
func (h *handler) renderZoneView(c echo.Context, status int, v zoneView) error {
	ctx := c.Request().Context()
	zd, err := h.auth.Zone(ctx, auth.Get(c), c.Param("zone"))
	if err != nil {
		return h.fail(c, err)
	}
	v.Zone = zd
	if v.Keys, err = h.st.UpdateKeys(ctx, zd.Account, zd.Name); err != nil {
		return h.fail(c, err)
	}
	if v.Deliveries, err = h.st.Deliveries(ctx, zd.Name, deliveriesShown); err != nil {
		return h.fail(c, err)
	}
	if v.Queue, err = h.st.Queued(ctx, zd.Name); err != nil {
		return h.fail(c, err)
	}
	v.Fwd = h.forwarding(zd, v.Deliveries)
	return h.render(c, status, "zone.html", page{Title: zd.Name, Nav: "zones", Notice: notice(c), Data: v})
}

func (h *handler) forwarding(zd store.ZoneData, log []store.Delivery) forwardingView {
	var f forwardingView
	for _, r := range zd.Records {
		if r.Type == "MX" && r.Name == record.Apex {
			f.HasMX = true
		}
	}
	f.Route = zd.Route()
	f.Forwarded = len(f.Route) > 0
	if !f.Forwarded {
		return f
	}
	for i, mx := range h.mxHosts {
		f.Published = append(f.Published, fmt.Sprintf("%d %s", 10*(i+1), strings.TrimSuffix(mx, ".")))
	}
	for i := range log {
		switch log[i].Event {
		case "delivered", "deferred", "bounced":
			f.Last = &log[i]
			f.Answered = log[i].Code > 0
			return f
		}
	}
	return f
}

// zoneFor checks that the caller may touch the zone of the URL.
func (h *handler) zoneFor(c echo.Context) (store.ZoneData, error) {
	return h.auth.Zone(c.Request().Context(), auth.Get(c), c.Param("zone"))
}

func zoneURL(zone, done string) string {
	u := "/zones/" + url.PathEscape(zone)
	if done != "" {
		u += "?done=" + done
	}
	return u
}

func (h *handler) addRecord(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	f, r, err := readRecordForm(c)
	if err == nil {
		_, err = h.st.AddRecord(c.Request().Context(), zd.Name, r)
	}
	if _, isField := fieldErrorsOf(err); isField {
		return h.renderZone(c, http.StatusBadRequest, f.withErrors(err))
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, zoneURL(zd.Name, "added")+"#records")
}

type editView struct {
	Zone string
	Form recordForm
}

func (h *handler) editRecord(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	r, err := h.st.Record(c.Request().Context(), zd.Name, c.Param("id"))
	if err != nil {
		return h.fail(c, err)
	}
	f := recordForm{ID: r.ID, Name: r.Name, Type: r.Type, TTL: strconv.FormatUint(uint64(r.TTL), 10), Data: r.Data}
	return h.render(c, http.StatusOK, "record.html", page{Title: "Edit record", Nav: "zones", Data: editView{Zone: zd.Name, Form: f}})
}

func (h *handler) updateRecord(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	f, r, err := readRecordForm(c)
	f.ID = c.Param("id")
	if err == nil {
		_, err = h.st.UpdateRecord(c.Request().Context(), zd.Name, f.ID, r)
	}
	if _, isField := fieldErrorsOf(err); isField {
		return h.render(c, http.StatusBadRequest, "record.html", page{Title: "Edit record", Nav: "zones", Data: editView{Zone: zd.Name, Form: f.withErrors(err)}})
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, zoneURL(zd.Name, "updated")+"#records")
}

func (h *handler) deleteRecord(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	err = h.st.RemoveRecord(c.Request().Context(), zd.Name, c.Param("id"))
	if _, isField := fieldErrorsOf(err); isField {
		f := recordForm{TTL: "3600"}.withErrors(err)
		if f.General == "" {
			f.General = err.Error()
		}
		return h.renderZone(c, http.StatusBadRequest, f)
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, zoneURL(zd.Name, "deleted")+"#records")
}

// flush asks every forwarder to retry the zone's waiting mail now.
func (h *handler) flush(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	if err := h.st.PublishControl(c.Request().Context(), store.Control{Kind: "flush", Zone: zd.Name}); err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, zoneURL(zd.Name, "flushed")+"#queue")
}

// createUpdateKey makes a dyndns update key for one host of the zone and
// shows its secret, once.
func (h *handler) createUpdateKey(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	host := strings.TrimSpace(c.FormValue("host"))
	secret, k, err := h.st.CreateUpdateKey(c.Request().Context(), zd.Name, host)
	if errs, isField := fieldErrorsOf(err); isField {
		return h.renderZoneView(c, http.StatusBadRequest, zoneView{Form: recordForm{TTL: "3600"}, KeyHost: host, KeyErr: errs["host"] + generalError(errs, "host")})
	}
	if err != nil {
		return h.fail(c, err)
	}
	return h.renderZoneView(c, http.StatusOK, zoneView{Form: recordForm{TTL: "3600"}, NewKey: secret, NewKeyHost: k.Host})
}

func (h *handler) revokeUpdateKey(c echo.Context) error {
	zd, err := h.zoneFor(c)
	if err != nil {
		return h.fail(c, err)
	}
	if err := h.st.RevokeUpdateKey(c.Request().Context(), zd.Account, zd.Name, c.Param("id")); err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, zoneURL(zd.Name, "keyrevoked")+"#updatekeys")
}

// Account.

type accountView struct {
	Account   store.Account
	Tokens    []store.Token
	NewSecret string // shown once, right after creation
	NewName   string
	TokenErr  string
	PwErrors  fieldErrors
}

func (h *handler) account(c echo.Context) error {
	return h.renderAccount(c, http.StatusOK, accountView{})
}

func (h *handler) renderAccount(c echo.Context, status int, v accountView) error {
	ctx := c.Request().Context()
	p := auth.Get(c)
	a, err := h.st.Account(ctx, p.Account)
	if err != nil {
		return h.fail(c, err)
	}
	v.Account = a
	if v.Tokens, err = h.st.Tokens(ctx, p.Account); err != nil {
		return h.fail(c, err)
	}
	return h.render(c, status, "account.html", page{Title: "Account", Nav: "account", Notice: notice(c), Data: v})
}

func (h *handler) createToken(c echo.Context) error {
	p := auth.Get(c)
	name := strings.TrimSpace(c.FormValue("name"))
	secret, _, err := h.st.CreateToken(c.Request().Context(), p.Account, name)
	if errs, isField := fieldErrorsOf(err); isField {
		return h.renderAccount(c, http.StatusBadRequest, accountView{NewName: name, TokenErr: errs["name"] + generalError(errs, "name")})
	}
	if err != nil {
		return h.fail(c, err)
	}
	return h.renderAccount(c, http.StatusOK, accountView{NewSecret: secret, NewName: name})
}

func (h *handler) revokeToken(c echo.Context) error {
	p := auth.Get(c)
	if err := h.st.RevokeToken(c.Request().Context(), p.Account, c.Param("id")); err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/account?done=revoked")
}

func (h *handler) changePassword(c echo.Context) error {
	ctx := c.Request().Context()
	s := sessionOf(c)
	cur, pw, again := c.FormValue("current"), c.FormValue("new"), c.FormValue("confirm")
	key := "email:" + s.Email
	if d := h.throttle.locked(key); d > 0 {
		return h.renderAccount(c, http.StatusTooManyRequests, accountView{PwErrors: fieldErrors{"current": "Too many wrong passwords; try again later."}})
	}
	_, err := h.st.Authenticate(ctx, s.Email, cur)
	if errors.Is(err, store.ErrBadCredentials) {
		h.throttle.fail(ctx, key)
		return h.renderAccount(c, http.StatusBadRequest, accountView{PwErrors: fieldErrors{"current": "This is not your current password."}})
	}
	if err != nil {
		return h.fail(c, err)
	}
	if pw != again {
		return h.renderAccount(c, http.StatusBadRequest, accountView{PwErrors: fieldErrors{"confirm": "The two new passwords differ."}})
	}
	err = h.st.SetPassword(ctx, s.Email, pw)
	if errs, isField := fieldErrorsOf(err); isField {
		return h.renderAccount(c, http.StatusBadRequest, accountView{PwErrors: fieldErrors{"new": errs["password"] + generalError(errs, "password")}})
	}
	if err != nil {
		return h.fail(c, err)
	}
	// Sessions opened with the old password (a stolen one, say) end here;
	// this one goes on.
	keep := ""
	if ck, err := c.Cookie(SessionCookie); err == nil {
		keep = ck.Value
	}
	if err := h.st.EndOtherSessions(ctx, s.Email, keep); err != nil {
		return h.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/account?done=password")
}

// Operator pages.

func (h *handler) adminAccounts(c echo.Context) error {
	accts, err := h.st.Accounts(c.Request().Context(), "")
	if err != nil {
		return h.fail(c, err)
	}
	return h.render(c, http.StatusOK, "admin_accounts.html", page{Title: "Accounts", Nav: "admin", Data: accts})
}

// adminPage is how many zones the operator's zone list shows a page.
const adminPage = 100

func (h *handler) adminZones(c echo.Context) error {
	ctx := c.Request().Context()
	names, err := h.st.Zones(ctx, "")
	if err != nil {
		return h.fail(c, err)
	}
	pages := max(1, (len(names)+adminPage-1)/adminPage)
	n, _ := strconv.Atoi(c.QueryParam("page"))
	n = min(max(n, 1), pages)
	v := zonesView{Detailed: true, Page: n, Pages: pages}
	for _, name := range names[min((n-1)*adminPage, len(names)):min(n*adminPage, len(names))] {
		zd, err := h.st.ZoneData(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return h.fail(c, err)
		}
		v.Zones = append(v.Zones, zoneRow{Name: name, Account: zd.Account, Records: len(zd.Records), Route: zd.Route()})
	}
	return h.render(c, http.StatusOK, "admin_zones.html", page{Title: "All zones", Nav: "admin", Data: v})
}

func (h *handler) adminQueue(c echo.Context) error {
	ctx := c.Request().Context()
	names, err := h.st.Zones(ctx, "")
	if err != nil {
		return h.fail(c, err)
	}
	var items []store.QueueItem
	for _, n := range names {
		q, err := h.st.Queued(ctx, n)
		if err != nil {
			return h.fail(c, err)
		}
		items = append(items, q...)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Arrived.Before(items[j].Arrived) })
	return h.render(c, http.StatusOK, "admin_queue.html", page{Title: "Queue", Nav: "admin", Data: items})
}
