package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/rrl"
	"github.com/mxport/mxport/dnsserver/xfr"
	"github.com/mxport/mxport/dnsserver/zone"
)

// EDNS sizes (RFC 6891 6.2.5): below 512 counts as 512; ours is capped at
// 1232, the DNS flag day 2020 value that avoids IP fragmentation.
const (
	minUDPSize = 512
	maxUDPSize = 1232
)

// Updater applies DNS UPDATE messages (dnsserver/update); it returns the
// response RCODE.
type Updater interface {
	Apply(ctx context.Context, msg *dns.Msg, key string, keyZones []string) int
}

// Handler is the one dns.Handler of the server: it answers from the index
// only, and writes every reply itself.
type Handler struct {
	ix            *Index
	updater       Updater
	allowTransfer []netip.Prefix
	rrl           *rrl.Limiter
	metrics       *Metrics
}

// ServeDNS implements dns.Handler. A panic answers SERVFAIL.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	defer func() {
		if p := recover(); p != nil {
			slog.Error("dns panic", "err", p, "remote", w.RemoteAddr().String())
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			m.Question = nil
			if len(req.Question) == 1 {
				m.Question = req.Question
			}
			h.write(w, req, m, nil)
		}
	}()
	resp, signed := h.answer(w, req)
	if resp == nil {
		return
	}
	h.write(w, req, resp, signed)
}

// answer builds the reply to req; nil means write nothing (AXFR wrote it).
// signed is the verified TSIG of the request whose key signs the reply.
func (h *Handler) answer(w dns.ResponseWriter, req *dns.Msg) (*dns.Msg, *dns.TSIG) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Compress = true
	if req.Opcode != dns.OpcodeQuery && req.Opcode != dns.OpcodeNotify && req.Opcode != dns.OpcodeUpdate {
		return reply(m, dns.RcodeNotImplemented), nil
	}
	if len(req.Question) != 1 {
		return reply(m, dns.RcodeFormatError), nil
	}
	// EDNS (RFC 6891): at most one OPT; version 0 only.
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return reply(m, dns.RcodeFormatError), nil
			}
			opt = o
		}
	}
	if opt != nil {
		m.SetEdns0(maxUDPSize, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			m.Question = req.Question
			return m, nil
		}
	}
	// TSIG (RFC 8945): miekg/dns verified it against the index's keys.
	tsig := req.IsTsig()
	if tsig != nil {
		if err := w.TsigStatus(); err != nil {
			return tsigError(m, tsig, err), nil
		}
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return reply(m, dns.RcodeRefused), tsig
	}
	switch req.Opcode {
	case dns.OpcodeUpdate:
		return h.update(m, req, tsig), tsig
	case dns.OpcodeNotify:
		// We are the primary: acknowledge a NOTIFY for a hosted zone.
		if h.ix.Zone(q.Name) == nil {
			return reply(m, dns.RcodeNotAuth), tsig
		}
		m.Authoritative = true
		return m, tsig
	}
	z := h.ix.Find(q.Name)
	if z == nil {
		return reply(m, dns.RcodeRefused), tsig
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return h.transfer(w, req, m, z, tsig)
	}
	r := z.Lookup(q.Name, q.Qtype)
	m.Rcode = r.Rcode
	m.Authoritative = r.Authoritative
	m.Answer, m.Ns = r.Answer, r.Ns
	m.Extra = append(r.Extra[:len(r.Extra):len(r.Extra)], m.Extra...)
	return m, tsig
}

// reject answers a request the accept filter refused or that did not
// unpack: its header's id and opcode, the question when it has exactly one,
// and rcode; nothing else of the request is echoed.
func (h *Handler) reject(w dns.ResponseWriter, req *dns.Msg, dh dns.Header, rcode int) {
	m := new(dns.Msg)
	m.Id = dh.Id
	m.Response = true
	m.Opcode = int(dh.Bits>>11) & 0xF
	m.Rcode = rcode
	if len(req.Question) == 1 && rcode != dns.RcodeNotImplemented {
		m.Question = req.Question
	}
	h.metrics.query(rcode, true)
	w.WriteMsg(m)
}

func reply(m *dns.Msg, rcode int) *dns.Msg {
	m.Rcode = rcode
	return m
}

// tsigError answers a request whose TSIG failed: NOTAUTH with the TSIG
// error (RFC 8945 5.2). BADKEY and BADSIG go unsigned. BADTIME (the MAC was
// good, the time not) is signed with the request's key when written, and
// carries the request's time and, in Other Data, ours (RFC 8945 5.2.3), so
// the client can tell its clock is off.
func tsigError(m *dns.Msg, t *dns.TSIG, err error) *dns.Msg {
	m.Rcode = dns.RcodeNotAuth
	now := uint64(time.Now().Unix())
	e := &dns.TSIG{Hdr: dns.RR_Header{Name: t.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.Fqdn(t.Algorithm), TimeSigned: now, Fudge: t.Fudge, OrigId: m.Id}
	switch {
	case errors.Is(err, dns.ErrTime):
		e.Error = dns.RcodeBadTime
		e.TimeSigned = t.TimeSigned
		e.OtherLen, e.OtherData = 6, fmt.Sprintf("%012x", now)
	case errors.Is(err, dns.ErrSig):
		e.Error = dns.RcodeBadSig
	default:
		e.Error = dns.RcodeBadKey
	}
	m.Extra = append(m.Extra, e)
	return m
}

// keyZones returns the zones the verified key of a signed request may touch.
func (h *Handler) keyZones(t *dns.TSIG) (string, []string) {
	if t == nil {
		return "", nil
	}
	k, ok := h.ix.Key(t.Hdr.Name)
	if !ok {
		return "", nil
	}
	return k.Name, k.Zones
}

func (h *Handler) update(m *dns.Msg, req *dns.Msg, t *dns.TSIG) *dns.Msg {
	if h.updater == nil {
		return reply(m, dns.RcodeNotImplemented)
	}
	key, zones := h.keyZones(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return reply(m, h.updater.Apply(ctx, req, key, zones))
}

// transfer answers AXFR and IXFR (RFC 5936, RFC 1995): over TCP to a key of
// the zone or an allowed address; an IXFR gets a full transfer (RFC 1995 4).
// Over UDP an IXFR gets the SOA alone, telling the client to use TCP.
func (h *Handler) transfer(w dns.ResponseWriter, req, m *dns.Msg, z *zone.Zone, t *dns.TSIG) (*dns.Msg, *dns.TSIG) {
	q := req.Question[0]
	if !dns.IsFqdn(q.Name) || !equalFold(q.Name, z.Name()) || !h.transferAllowed(w, z, t) {
		return reply(m, dns.RcodeRefused), t
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		if q.Qtype == dns.TypeAXFR {
			return reply(m, dns.RcodeRefused), t
		}
		m.Authoritative = true
		m.Answer = []dns.RR{z.SOA()}
		return m, t
	}
	if err := xfr.Out(w, req, z); err != nil {
		slog.Warn("transfer failed", "zone", z.Name(), "remote", w.RemoteAddr().String(), "err", err)
	} else {
		slog.Info("transfer", "zone", z.Name(), "serial", z.Serial(), "remote", w.RemoteAddr().String())
	}
	return nil, nil
}

func (h *Handler) transferAllowed(w dns.ResponseWriter, z *zone.Zone, t *dns.TSIG) bool {
	if t != nil {
		_, zones := h.keyZones(t)
		return slices.Contains(zones, trimDot(z.Name()))
	}
	ip := addrOf(w.RemoteAddr())
	for _, p := range h.allowTransfer {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// write sizes, rate-limits and sends the reply.
func (h *Handler) write(w dns.ResponseWriter, req, m *dns.Msg, t *dns.TSIG) {
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	if udp && h.rrl != nil {
		switch h.rrl.Check(addrOf(w.RemoteAddr()), kindOf(m), rrlName(m), time.Now()) {
		case rrl.Drop:
			h.metrics.rrl("drop")
			return
		case rrl.Slip:
			h.metrics.rrl("slip")
			m.Truncated = true
			m.Answer, m.Ns, m.Extra = nil, nil, edns(m)
		}
	}
	if t != nil {
		m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
	}
	if udp {
		size := minUDPSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(minUDPSize, min(int(opt.UDPSize()), maxUDPSize))
		}
		truncate(m, size, t != nil)
	}
	h.metrics.query(m.Rcode, udp)
	var err error
	if unsignedTSIGError(m) {
		// Unsigned with a TSIG record: pack it ourselves, or the
		// ResponseWriter would try to sign it with an unknown key.
		var buf []byte
		if buf, err = m.Pack(); err == nil {
			_, err = w.Write(buf)
		}
	} else {
		err = w.WriteMsg(m)
	}
	if err != nil {
		slog.Debug("dns write failed", "remote", w.RemoteAddr().String(), "err", err)
	}
}

// truncate makes m fit size bytes. miekg/dns's Truncate ignores signed
// replies; a signed reply that does not fit loses its sections instead.
func truncate(m *dns.Msg, size int, signed bool) {
	if !signed {
		m.Truncate(size)
		// Truncate turns compression off when the reply fits without
		// it; we always compress (smaller replies, as NSD and Knot).
		m.Compress = true
		return
	}
	// The TSIG record is still unsigned here: its MAC, added when the
	// reply is written, must fit too.
	tsig := m.Extra[len(m.Extra)-1].(*dns.TSIG)
	if m.Len()+macSize(tsig.Algorithm) > size {
		m.Truncated = true
		m.Answer, m.Ns, m.Extra = nil, nil, append(edns(m), tsig)
	}
}

// macSize is the length of a TSIG MAC of algorithm (the largest we
// accept when unknown).
func macSize(algorithm string) int {
	switch strings.ToLower(algorithm) {
	case dns.HmacSHA1:
		return 20
	case dns.HmacSHA256:
		return 32
	case dns.HmacSHA224:
		return 28
	case dns.HmacSHA384:
		return 48
	}
	return 64
}

// edns returns m's OPT record alone, or nothing.
func edns(m *dns.Msg) []dns.RR {
	if opt := m.IsEdns0(); opt != nil {
		return []dns.RR{opt}
	}
	return nil
}

// unsignedTSIGError reports whether m is a TSIG error reply that goes
// unsigned: BADKEY or BADSIG, not BADTIME.
func unsignedTSIGError(m *dns.Msg) bool {
	t := m.IsTsig()
	return t != nil && t.Error != 0 && t.Error != dns.RcodeBadTime
}

// kindOf classifies a reply for rate limiting.
func kindOf(m *dns.Msg) rrl.Kind {
	switch {
	case m.Rcode == dns.RcodeNameError:
		return rrl.KindNXDomain
	case m.Rcode != dns.RcodeSuccess:
		return rrl.KindError
	case len(m.Answer) > 0:
		return rrl.KindAnswer
	case !m.Authoritative && len(m.Ns) > 0:
		return rrl.KindReferral
	}
	return rrl.KindNoData
}

// rrlName is the name a reply's bucket is keyed on: the zone (SOA or NS
// owner in authority) for NXDOMAIN and referrals, the qname otherwise.
func rrlName(m *dns.Msg) string {
	if (m.Rcode == dns.RcodeNameError || !m.Authoritative) && len(m.Ns) > 0 {
		return m.Ns[0].Header().Name
	}
	if len(m.Question) > 0 {
		return m.Question[0].Name
	}
	return ""
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func equalFold(a, b string) bool {
	return len(a) == len(b) && (a == b || dns.CanonicalName(a) == dns.CanonicalName(b))
}

func trimDot(s string) string {
	if len(s) > 1 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}
