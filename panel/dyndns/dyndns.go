// Package dyndns serves the dyndns2 protocol (/nic/update) as ddclient and
// inadyn speak it, and the lego httpreq ACME helper; an update of a zone's
// forwarding target flushes that zone's waiting mail. /nic/update takes an
// API token or a per-host update key (store.UpdateKey) as the password; the
// ACME helpers take API tokens only.
//
// It knows no Redis: every read and write goes through package store, every
// access decision through package auth. It never returns an error to echo's
// error handler: dyndns2 clients read plain-text codes and lego reads the
// status, so each handler writes its own reply.
package dyndns

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// Config is what the handlers need.
type Config struct {
	Store *store.Store
	Auth  *auth.Authenticator
	// TrustedProxies are the peers whose X-Forwarded-For is believed;
	// from any other peer the client address is the TCP peer's.
	TrustedProxies []netip.Prefix
	// RequestsPerMinute limits the requests of one API token (or one
	// per-host update key) to /nic/update and the ACME helpers (a burst of that many, refilled
	// evenly over a minute); 0 means DefaultRequestsPerMinute. Beyond it
	// /nic/update answers "abuse" and the ACME helpers 429.
	RequestsPerMinute int
}

// DefaultRequestsPerMinute is the per-token (and per-update-key) limit when
// Config leaves it 0.
const DefaultRequestsPerMinute = 30

// MaxHosts is the most hostnames one /nic/update may name; more gets
// "numhost" (dyndns2).
const MaxHosts = 20

// DefaultTTL is the TTL of an address record /nic/update creates; an
// existing record's TTL is kept.
const DefaultTTL = 60

// maxRetries bounds the read-check-write rounds of one hostname when the
// zone keeps changing under it (store.ErrConflict).
const maxRetries = 5

// maxAccountZones bounds the other zones of an account searched for
// forwarding routes through an updated host.
const maxAccountZones = 100

type handler struct {
	st      *store.Store
	auth    *auth.Authenticator
	trusted []netip.Prefix
	limit   *limiter
}

// Register adds the routes: GET and POST /nic/update (dyndns2), and POST
// /acme/present and /acme/cleanup (lego's httpreq provider with
// HTTPREQ_ENDPOINT=http(s)://HOST/acme). Routing does not look at the Host
// header.
func Register(e *echo.Echo, cfg Config) {
	n := cfg.RequestsPerMinute
	if n <= 0 {
		n = DefaultRequestsPerMinute
	}
	h := &handler{st: cfg.Store, auth: cfg.Auth, trusted: cfg.TrustedProxies, limit: newLimiter(n, time.Minute)}
	e.GET("/nic/update", h.update)
	e.POST("/nic/update", h.update)
	e.POST("/acme/present", h.present)
	e.POST("/acme/cleanup", h.cleanup)
}

// The dyndns2 return codes (dyn.com "Perform Update" return codes), as
// ddclient's nic_dyndns2_update and inadyn's plugins read them.
const (
	codeGood    = "good"
	codeNochg   = "nochg"
	codeBadauth = "badauth"
	codeNohost  = "nohost"
	codeNotfqdn = "notfqdn"
	codeNumhost = "numhost"
	codeAbuse   = "abuse"
	codeDNSErr  = "dnserr"
	code911     = "911"
)

// caller is who asks for an update: an API token's principal, or a
// per-host update key (store.UpdateKey), which may update its own host
// name only.
type caller struct {
	p   *auth.Principal
	key *store.UpdateKey
}

// limitKey is the rate limiter's key: the token's or the update key's id.
func (w caller) limitKey() string {
	if w.key != nil {
		return "uk:" + w.key.ID
	}
	return w.p.TokenID
}

// authenticate reads HTTP basic auth whose password is an update key
// (store.IsUpdateKey) or an API token; the user name is not checked.
// Unknown credentials give auth.ErrUnauthenticated.
func (h *handler) authenticate(c echo.Context) (caller, error) {
	_, pass, ok := c.Request().BasicAuth()
	if !ok || !store.IsUpdateKey(pass) {
		p, err := h.auth.Basic(c)
		return caller{p: p}, err
	}
	k, err := h.st.LookupUpdateKey(c.Request().Context(), pass)
	if errors.Is(err, store.ErrNotFound) {
		return caller{}, auth.ErrUnauthenticated
	}
	if err != nil {
		return caller{}, err
	}
	return caller{key: &k}, nil
}

// update serves /nic/update: one reply line per hostname, in order.
func (h *handler) update(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	who, err := h.authenticate(c)
	if errors.Is(err, auth.ErrUnauthenticated) {
		// 401 and the code in the body: inadyn reads either; ddclient
		// 3.10 logs "authorization failed" on the status alone.
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="mxport"`)
		return c.String(http.StatusUnauthorized, codeBadauth+"\n")
	}
	// The query, or a form body (POST): FormValue reads both.
	hosts := splitList(c.FormValue("hostname"))
	switch {
	case err != nil:
		slog.Warn("dyndns auth failed", "remote", r.RemoteAddr, "err", err)
		return c.String(http.StatusOK, repeatLine(code911, max(1, len(hosts))))
	case len(hosts) == 0:
		return c.String(http.StatusOK, codeNotfqdn+"\n")
	case len(hosts) > MaxHosts:
		return c.String(http.StatusOK, codeNumhost+"\n")
	}
	if !h.limit.allow(who.limitKey(), time.Now()) {
		slog.Warn("dyndns abuse", "token", who.limitKey(), "remote", r.RemoteAddr)
		return c.String(http.StatusOK, repeatLine(codeAbuse, len(hosts)))
	}
	v4, v6 := parseAddrs(c.FormValue("myip"), c.FormValue("myipv6"))
	if !v4.IsValid() && !v6.IsValid() {
		if a := h.clientAddr(r); a.Is4() {
			v4 = a
		} else if a.IsValid() {
			v6 = a
		}
	}
	var b strings.Builder
	flushed := map[string]bool{}
	line := ""
	for _, host := range hosts {
		if line != code911 { // once the store failed, spare the rest its timeouts
			line = h.updateHost(ctx, who, host, v4, v6, flushed)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return c.String(http.StatusOK, b.String())
}

// updateHost sets one hostname's addresses and returns its reply line. An
// update key's caller gets "nohost" for any name but the key's own, as for
// a name it has no zone of.
func (h *handler) updateHost(ctx context.Context, who caller, host string, v4, v6 netip.Addr, flushed map[string]bool) string {
	name, ok := hostName(host)
	if !ok {
		return codeNotfqdn
	}
	if who.key != nil && name != who.key.Host {
		return codeNohost
	}
	if !v4.IsValid() && !v6.IsValid() {
		return code911 // no address at all: not even the peer's parsed
	}
	for attempt := 0; ; attempt++ {
		zd, owner, err := h.findZone(ctx, who, name)
		if errors.Is(err, store.ErrNotFound) {
			return codeNohost
		}
		if err != nil {
			slog.Warn("dyndns update failed", "host", name, "err", err)
			return code911
		}
		ops := addrOps(zd.Records, owner, v4)
		ops = append(ops, addrOps(zd.Records, owner, v6)...)
		status := codeNochg
		if len(ops) > 0 {
			_, err = h.st.Change(ctx, zd.Name, store.Change{IfVersion: zd.Version, Ops: ops})
			switch {
			case errors.Is(err, store.ErrConflict) && attempt < maxRetries:
				continue
			case errors.Is(err, store.ErrNotFound):
				return codeNohost // the zone went away meanwhile
			case record.Field(err) != "":
				// The store refused the record (a CNAME at the name, the
				// zone's record limit): a DNS problem, not ours to retry.
				slog.Info("dyndns update refused", "zone", zd.Name, "host", name, "err", err)
				return codeDNSErr
			case err != nil:
				slog.Warn("dyndns update failed", "zone", zd.Name, "host", name, "err", err)
				return code911
			}
			status = codeGood
			slog.Info("dyndns updated", "zone", zd.Name, "host", name, "addr", addrList(v4, v6))
		}
		h.flushRoutes(ctx, zd, name, flushed)
		return status + " " + addrList(v4, v6)
	}
}

// addrOps returns the ops that make a's family's RRset at owner exactly a
// (none when it already is, or a is not valid), keeping the first existing
// record's TTL.
func addrOps(recs []record.Record, owner string, a netip.Addr) []store.Op {
	if !a.IsValid() {
		return nil
	}
	typ := "A"
	if a.Is6() {
		typ = "AAAA"
	}
	var old []record.Record
	for _, r := range recs {
		if r.Name == owner && r.Type == typ {
			old = append(old, r)
		}
	}
	if len(old) == 1 {
		if cur, err := netip.ParseAddr(old[0].Data); err == nil && cur.Unmap() == a {
			return nil
		}
	}
	ttl := uint32(DefaultTTL)
	if len(old) > 0 {
		ttl = old[0].TTL
	}
	ops := make([]store.Op, 0, len(old)+1)
	for _, r := range old {
		ops = append(ops, store.Op{Kind: store.OpDelete, ID: r.ID})
	}
	return append(ops, store.Op{Kind: store.OpAdd, Record: record.Record{Name: owner, Type: typ, TTL: ttl, Data: a.String()}})
}

// flushRoutes publishes a flush for every zone whose forwarding route goes
// through host: the zone host is in, and the other zones of the same
// account (up to maxAccountZones of them). A successful update, changed or
// not, says the home server's client is up again, so its mail should be
// retried now; a flush is only a hint (DESIGN.md, the MX forwarding rule).
func (h *handler) flushRoutes(ctx context.Context, zd store.ZoneData, host string, flushed map[string]bool) {
	h.flushIfTarget(ctx, zd, host, flushed)
	names, err := h.st.Zones(ctx, zd.Account)
	if err != nil || len(names) > maxAccountZones {
		return
	}
	for _, n := range names {
		if n == zd.Name || flushed[n] {
			continue
		}
		other, err := h.st.ZoneData(ctx, n)
		if err != nil {
			continue
		}
		h.flushIfTarget(ctx, other, host, flushed)
	}
}

func (h *handler) flushIfTarget(ctx context.Context, zd store.ZoneData, host string, flushed map[string]bool) {
	if flushed[zd.Name] {
		return
	}
	for _, t := range zd.Route() {
		if t.Host != host {
			continue
		}
		flushed[zd.Name] = true
		if err := h.st.PublishControl(ctx, store.Control{Kind: "flush", Zone: zd.Name}); err != nil {
			slog.Warn("dyndns flush failed", "zone", zd.Name, "host", host, "err", err)
			return
		}
		slog.Info("dyndns flush", "zone", zd.Name, "host", host)
		return
	}
}

// findZone finds the hosted zone that name (canonical, no trailing dot) is
// in, by longest suffix, and name's owner inside it. A name whose zone is
// missing, or belongs to a tenant who may not act for, gives
// store.ErrNotFound; the nearest zone decides (a parent zone who owns does
// not make a name inside another tenant's child zone who's). An update key
// may act in its own zone only: the same name, account and generation.
func (h *handler) findZone(ctx context.Context, who caller, name string) (store.ZoneData, string, error) {
	for suffix := name; suffix != ""; {
		zd, err := h.st.ZoneData(ctx, suffix)
		if err == nil {
			ok := false
			if k := who.key; k != nil {
				ok = zd.Name == k.Zone && zd.Account == k.Account && zd.Gen == k.Gen
			} else if ok, err = h.auth.CanAccessAccount(ctx, who.p, zd.Account); err != nil {
				return store.ZoneData{}, "", err
			}
			if !ok {
				return store.ZoneData{}, "", store.ErrNotFound
			}
			owner, _ := record.RelativeOwner(zd.Name, name)
			return zd, owner, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.ZoneData{}, "", err
		}
		_, rest, ok := strings.Cut(suffix, ".")
		if !ok {
			break
		}
		suffix = rest
	}
	return store.ZoneData{}, "", store.ErrNotFound
}

// hostName validates a dyndns2 hostname: a fully qualified host name (at
// least two labels of letters, digits and '-', or '_'), returned lower
// case without the trailing dot.
func hostName(s string) (string, bool) {
	n, err := record.ZoneName(s)
	if err != nil || !strings.Contains(n, ".") {
		return "", false
	}
	return n, true
}

// splitList splits a comma-separated parameter, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseAddrs reads myip (one address, or an IPv4 and an IPv6 address
// comma-separated, as some clients send) and myipv6. An address that does
// not parse, or cannot be a host's (unspecified, multicast), is ignored,
// as dyn.com ignored a malformed myip and used its best guess.
func parseAddrs(myip, myipv6 string) (v4, v6 netip.Addr) {
	for _, s := range append(splitList(myip), splitList(myipv6)...) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		a = a.Unmap()
		if a.Is4() {
			v4 = a
		} else {
			v6 = a
		}
	}
	return v4, v6
}

func addrList(v4, v6 netip.Addr) string {
	switch {
	case v4.IsValid() && v6.IsValid():
		return v4.String() + "," + v6.String()
	case v4.IsValid():
		return v4.String()
	}
	return v6.String()
}

func repeatLine(line string, n int) string {
	return strings.Repeat(line+"\n", n)
}

// clientAddr is the request's client address: the TCP peer, or, when the
// peer is a trusted proxy, the nearest X-Forwarded-For entry that is not a
// trusted proxy (read from the right, where the proxies appended).
func (h *handler) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	client := ap.Addr().Unmap()
	if !h.isTrusted(client) {
		return client
	}
	var hops []string
	for _, v := range r.Header.Values(echo.HeaderXForwardedFor) {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a mangled entry: trust nothing to its left
		}
		client = a.Unmap()
		if !h.isTrusted(client) {
			break
		}
	}
	return client
}

func (h *handler) isTrusted(a netip.Addr) bool {
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
