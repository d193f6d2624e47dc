package route

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store/record"
)

// Errors of Resolver. Every other non-nil error of Addrs and MX (DNS
// SERVFAIL, REFUSED, timeouts, network failures) is temporary: the mail
// waits and is retried (DESIGN.md; STYLE.md 6).
var (
	// ErrLoop: the target is this service itself: one of the --mx-hosts,
	// or every address of it is one of our listening addresses at our
	// SMTP port. Never dial it. Temporary for delivery: the customer may
	// fix the target while the mail waits; the queue should log it.
	ErrLoop = errors.New("route: target is this service itself")
	// ErrNoAddress: the target has no A or AAAA record (NXDOMAIN or no
	// data). Temporary for delivery: a dynamic-DNS host may come back.
	ErrNoAddress = errors.New("route: target has no address")
	// ErrNullMX: the domain publishes a null MX (RFC 7505): it accepts no
	// mail. Permanent.
	ErrNullMX = errors.New("route: domain accepts no mail (null MX)")
	// ErrNoDomain: the domain does not exist (NXDOMAIN for its MX, or
	// neither MX nor address records through the system resolver), so
	// mail to it cannot be delivered (RFC 5321 5.1). Permanent.
	ErrNoDomain = errors.New("route: domain does not exist")
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Server is the host:port of the --resolver; "" uses the system
	// resolver (net.DefaultResolver).
	Server string
	// Own are our own --mx-hosts names: a target equal to one is refused
	// (ErrLoop).
	Own []string
	// OwnAddrs are our own listening addresses (the SMTP listener's IPs,
	// loopback ones too). An unspecified address (0.0.0.0, ::) stands for
	// every address of this host's interfaces.
	OwnAddrs []netip.Addr
	// OwnPort is our SMTP listening port (default 25): only an address at
	// this port is us; the home server may well be 127.0.0.1:2525 in tests
	// while we listen on 127.0.0.1:2500.
	OwnPort int
	// Timeout bounds one Addrs or MX call; default 10 s.
	Timeout time.Duration
}

// Resolver finds the addresses of a target: hosted zones first (the index's
// A/AAAA for that exact name, following a CNAME once), else DNS through the
// configured server (A and AAAA over UDP, TCP when truncated) or the system
// resolver. It keeps no cache: each call reads the index and asks DNS again
// (late binding). It is safe for concurrent use.
type Resolver struct {
	ix       *Index
	server   string
	own      map[string]bool
	ownAddrs map[netip.Addr]bool
	ownPort  uint16
	timeout  time.Duration
	udp, tcp *dns.Client
}

// NewResolver returns a Resolver over ix (nil: no hosted zones).
func NewResolver(ix *Index, cfg ResolverConfig) *Resolver {
	r := &Resolver{ix: ix, server: cfg.Server, own: map[string]bool{},
		ownAddrs: map[netip.Addr]bool{}, ownPort: uint16(cfg.OwnPort), timeout: cfg.Timeout}
	if r.ix == nil {
		r.ix = NewIndex()
	}
	if r.ownPort == 0 {
		r.ownPort = record.DefaultPort
	}
	if r.timeout <= 0 {
		r.timeout = 10 * time.Second
	}
	for _, h := range cfg.Own {
		if h = canonical(h); h != "" {
			r.own[h] = true
		}
	}
	for _, a := range cfg.OwnAddrs {
		a = a.Unmap()
		r.ownAddrs[a] = true
		if a.IsUnspecified() {
			r.addInterfaceAddrs()
		}
	}
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r
}

// addInterfaceAddrs marks every address of this host as ours (a listener
// on the unspecified address answers on all of them).
func (r *Resolver) addInterfaceAddrs() {
	r.ownAddrs[netip.IPv4Unspecified()] = true
	r.ownAddrs[netip.IPv6Unspecified()] = true
	r.ownAddrs[netip.MustParseAddr("127.0.0.1")] = true
	r.ownAddrs[netip.IPv6Loopback()] = true
	as, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			r.ownAddrs[p.Addr().Unmap()] = true
		}
	}
}

// isOwn reports whether a:port is this service's SMTP listener.
func (r *Resolver) isOwn(a netip.Addr, port uint16) bool {
	if port != r.ownPort {
		return false
	}
	a = a.Unmap()
	if r.ownAddrs[a] {
		return true
	}
	anyAddr := r.ownAddrs[netip.IPv4Unspecified()] || r.ownAddrs[netip.IPv6Unspecified()]
	switch {
	case a.IsUnspecified(): // dialling 0.0.0.0 or :: reaches the loopback
		return anyAddr || r.ownAddrs[netip.MustParseAddr("127.0.0.1")] || r.ownAddrs[netip.IPv6Loopback()]
	case a.IsLoopback(): // a listener on the unspecified address has them all
		return anyAddr
	}
	return false
}

// Addrs resolves t.Host to addresses at t.Port (25 when 0), IPv4 first,
// then IPv6, for a forwarding target. A host that is one of our --mx-hosts
// is ErrLoop without a lookup; addresses that are our own listener at our
// port are dropped, and ErrLoop returned when none is left. A host without
// addresses is ErrNoAddress; DNS failures are other, temporary, errors.
func (r *Resolver) Addrs(ctx context.Context, t record.Target) ([]netip.AddrPort, error) {
	host := canonical(strings.TrimSuffix(strings.TrimPrefix(t.Host, "["), "]"))
	port := t.Port
	if port == 0 {
		port = record.DefaultPort
	}
	if host == "" {
		return nil, fmt.Errorf("route: target %q: %w", t.Host, ErrNoAddress)
	}
	if r.own[host] {
		return nil, fmt.Errorf("route: target %s is one of our MX hosts: %w", host, ErrLoop)
	}
	var v4, v6 []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil { // an address literal
		if a = a.Unmap(); a.Is4() {
			v4 = []netip.Addr{a}
		} else {
			v6 = []netip.Addr{a}
		}
	} else if h4, h6, ok := r.ix.hostAddrs(host); ok {
		v4, v6 = h4, h6
	} else {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		if v4, v6, err = r.lookupHost(ctx, host); err != nil {
			return nil, err
		}
	}
	out := make([]netip.AddrPort, 0, len(v4)+len(v6))
	own := 0
	for _, a := range slices.Concat(v4, v6) {
		if r.isOwn(a, port) {
			own++
			continue
		}
		ap := netip.AddrPortFrom(a, port)
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if len(out) == 0 {
		if own > 0 {
			return nil, fmt.Errorf("route: target %s resolves to our own listener at port %d: %w", host, port, ErrLoop)
		}
		return nil, fmt.Errorf("route: target %s: %w", host, ErrNoAddress)
	}
	return out, nil
}

// MX finds where to deliver mail for a domain that is not forwarded here
// (bounces go to the sender's domain), RFC 5321 5.1: its MX targets in
// preference order (equal preferences shuffled) at port 25; the implicit MX
// (the domain itself, preference 0) when it has none; ErrNullMX for a null
// MX (RFC 7505), ErrNoDomain for a domain that does not exist. Hosted zones
// come first: a forwarded hosted zone gives its route (the customer's
// targets with their ports, the real destination), another hosted name its
// MX records as entered. Else DNS through the resolver.
func (r *Resolver) MX(ctx context.Context, domain string) ([]record.Target, error) {
	name := canonical(strings.TrimSuffix(strings.TrimPrefix(domain, "["), "]"))
	if name == "" {
		return nil, fmt.Errorf("route: domain %q: %w", domain, ErrNoDomain)
	}
	if _, err := netip.ParseAddr(name); err == nil { // address literal: deliver there
		return []record.Target{{Host: name, Port: record.DefaultPort}}, nil
	}
	if ts, ok, err := r.hostedMX(name); ok {
		return ts, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var (
		mxs []record.MX
		err error
	)
	if r.server == "" {
		mxs, err = r.systemMX(ctx, name)
	} else {
		mxs, err = r.dnsMX(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	return mxTargets(name, mxs)
}

// hostedMX answers MX from the index when name is in a hosted zone and the
// answer is there; ok is false when DNS must answer (a CNAME, or a name the
// zone does not hold, which may be a wildcard or a delegation).
func (r *Resolver) hostedMX(name string) (ts []record.Target, ok bool, err error) {
	e, owner := r.ix.find(name)
	if e == nil {
		return nil, false, nil
	}
	if owner == record.Apex && e.route != nil {
		return append([]record.Target(nil), e.route...), true, nil
	}
	n := e.nodes[owner]
	switch {
	case n == nil && owner != record.Apex, n != nil && n.cname != "":
		return nil, false, nil
	case n == nil || len(n.mx) == 0:
		return []record.Target{{Host: name, Port: record.DefaultPort}}, true, nil
	}
	ts, err = mxTargets(name, n.mx)
	return ts, true, err
}

// mxTargets orders MX records (RFC 5321 5.1): by preference, equal ones
// shuffled; null MX records (RFC 7505) make ErrNullMX when they are all
// there is, and are skipped otherwise; no records give the implicit MX.
// Published MX targets are at port 25, whatever a ":PORT" says.
func mxTargets(domain string, mxs []record.MX) ([]record.Target, error) {
	if len(mxs) == 0 {
		return []record.Target{{Host: domain, Port: record.DefaultPort}}, nil
	}
	ts := make([]record.Target, 0, len(mxs))
	for _, m := range mxs {
		h := canonical(m.Host)
		if h == "" {
			continue // "." or not a usable name
		}
		t := record.Target{Pref: m.Pref, Host: h, Port: record.DefaultPort}
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("route: domain %s: %w", domain, ErrNullMX)
	}
	rand.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	slices.SortStableFunc(ts, func(a, b record.Target) int { return int(a.Pref) - int(b.Pref) })
	return ts, nil
}

// lookupHost finds the A and AAAA addresses of host through DNS.
func (r *Resolver) lookupHost(ctx context.Context, host string) (v4, v6 []netip.Addr, err error) {
	if r.server == "" {
		as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				return nil, nil, fmt.Errorf("route: target %s: %w", host, ErrNoAddress)
			}
			return nil, nil, fmt.Errorf("route: resolve %s: %w", host, err)
		}
		for _, a := range as {
			if a = a.Unmap(); a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		return v4, v6, nil
	}
	var (
		wg         sync.WaitGroup
		rr4, rr6   []dns.RR
		err4, err6 error
	)
	wg.Add(2)
	go func() { defer wg.Done(); rr4, _, err4 = r.query(ctx, host, dns.TypeA) }()
	go func() { defer wg.Done(); rr6, _, err6 = r.query(ctx, host, dns.TypeAAAA) }()
	wg.Wait()
	for _, rr := range rr4 {
		if a, ok := rr.(*dns.A); ok {
			if ad, ok := netip.AddrFromSlice(a.A); ok {
				v4 = append(v4, ad.Unmap())
			}
		}
	}
	for _, rr := range rr6 {
		if a, ok := rr.(*dns.AAAA); ok {
			if ad, ok := netip.AddrFromSlice(a.AAAA); ok {
				v6 = append(v6, ad)
			}
		}
	}
	if len(v4)+len(v6) > 0 {
		return v4, v6, nil // one family failing does not stop delivery to the other
	}
	if err := errors.Join(err4, err6); err != nil {
		return nil, nil, err
	}
	return nil, nil, fmt.Errorf("route: target %s: %w", host, ErrNoAddress)
}

// dnsMX asks the configured server for name's MX records.
func (r *Resolver) dnsMX(ctx context.Context, name string) ([]record.MX, error) {
	rrs, rcode, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if rcode == dns.RcodeNameError {
		return nil, fmt.Errorf("route: domain %s: NXDOMAIN: %w", name, ErrNoDomain)
	}
	var mxs []record.MX
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, record.MX{Pref: mx.Preference, Host: strings.ToLower(mx.Mx), Port: record.DefaultPort})
		}
	}
	return mxs, nil
}

// systemMX asks the system resolver for name's MX records. It cannot tell
// NXDOMAIN from no data, so a name with neither MX nor address records is
// ErrNoDomain.
func (r *Resolver) systemMX(ctx context.Context, name string) ([]record.MX, error) {
	res, err := net.DefaultResolver.LookupMX(ctx, name)
	var de *net.DNSError
	if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
		return nil, fmt.Errorf("route: mx %s: %w", name, err)
	}
	if len(res) == 0 {
		_, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		if err != nil {
			if errors.As(err, &de) && de.IsNotFound {
				return nil, fmt.Errorf("route: domain %s: %w", name, ErrNoDomain)
			}
			return nil, fmt.Errorf("route: resolve %s: %w", name, err)
		}
		return nil, nil
	}
	mxs := make([]record.MX, 0, len(res))
	for _, m := range res {
		mxs = append(mxs, record.MX{Pref: m.Pref, Host: strings.ToLower(m.Host), Port: record.DefaultPort})
	}
	return mxs, nil
}

// query asks the configured server one question over UDP, again over TCP
// when the answer is truncated. It returns the answer section's records of
// type qtype (whichever owner: a recursive answer carries the CNAME chain
// before them) and the rcode, NOERROR or NXDOMAIN; any other rcode, or no
// answer, is a temporary error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, int, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	in, _, err := r.udp.ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		in, _, err = r.tcp.ExchangeContext(ctx, m, r.server)
	}
	tname := dns.TypeToString[qtype]
	if err != nil {
		return nil, 0, fmt.Errorf("route: lookup %s %s at %s: %w", name, tname, r.server, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, in.Rcode, fmt.Errorf("route: lookup %s %s at %s: %s", name, tname, r.server, dns.RcodeToString[in.Rcode])
	}
	var out []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out, in.Rcode, nil
}
