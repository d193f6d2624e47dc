// Package record validates and normalises the resource records mxport stores.
//
// It owns the record model (owner name relative to the zone, type, TTL and
// presentation-format RDATA, where an MX record may carry a ":PORT" suffix),
// the checks that need only one record, and the MX forwarding rule of
// DESIGN.md. It knows nothing of Redis; checks that need the rest of the zone
// (CNAME exclusivity, duplicates, the last apex NS) live in package store.
// All RDATA parsing is done by github.com/miekg/dns.
package record

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// TTL limits, in seconds. The lower bound keeps caches useful, the upper one
// (four weeks) keeps a mistyped TTL from pinning bad data in resolvers.
const (
	MinTTL = 30
	MaxTTL = 2419200
)

// DefaultPort is the SMTP port assumed for an MX target without ":PORT".
const DefaultPort = 25

// Apex is the owner name of a zone's apex.
const Apex = "@"

// Record is one resource record of a zone.
//
// Name is relative to the zone ("@" for the apex, "www", "*.dev"); Type is the
// upper-case mnemonic ("MX", "TYPE65280"); Data is the RDATA in presentation
// format with absolute names, and for MX an optional ":PORT" after the target.
type Record struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
	Type string `json:"type"`
	TTL  uint32 `json:"ttl"`
	Data string `json:"data"`
}

// FieldError is a validation failure that names the offending field ("name",
// "type", "ttl", "data", "zone"), so the API can answer {"error","field"}.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Field returns the field named by err when it is (or wraps) a *FieldError,
// and "" otherwise.
func Field(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// Policy holds the service settings that record validation depends on.
type Policy struct {
	// MXHosts are the service's own mail exchangers (--mx-hosts). A
	// forwarding target may not be one of them: mail would loop.
	MXHosts []string
}

// refused lists types that cannot be stored as records: SOA belongs to the
// zone, the DNSSEC types would be bogus without signing, and the rest are
// meta types that only exist in messages.
var refused = map[uint16]string{
	dns.TypeSOA:        "SOA is managed by the zone itself",
	dns.TypeOPT:        "OPT is a meta type",
	dns.TypeTSIG:       "TSIG is a meta type",
	dns.TypeTKEY:       "TKEY is a meta type",
	dns.TypeANY:        "ANY is a query type",
	dns.TypeAXFR:       "AXFR is a query type",
	dns.TypeIXFR:       "IXFR is a query type",
	dns.TypeMAILA:      "MAILA is a query type",
	dns.TypeMAILB:      "MAILB is a query type",
	dns.TypeNone:       "not a record type",
	dns.TypeRRSIG:      "mxport does not sign zones",
	dns.TypeNSEC:       "mxport does not sign zones",
	dns.TypeNSEC3:      "mxport does not sign zones",
	dns.TypeNSEC3PARAM: "mxport does not sign zones",
}

// ZoneName validates a zone name and returns it in canonical form: lower
// case, without the trailing dot ("example.com").
func ZoneName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if n == "" {
		return "", fieldErr("name", "zone name is empty")
	}
	if _, ok := dns.IsDomainName(n); !ok || strings.Contains(n, "..") {
		return "", fieldErr("name", "%q is not a valid domain name", name)
	}
	for _, l := range dns.SplitDomainName(n) {
		if !hostLabel(l, true) {
			return "", fieldErr("name", "label %q of %q: only letters, digits, '-' and '_' are allowed", l, name)
		}
	}
	return n, nil
}

// Owner returns the canonical relative owner name of name inside zone: "@"
// for the apex, lower case otherwise. name may be "@" or "", relative
// ("www"), or absolute inside the zone, with or without the trailing dot
// ("www.example.com", "www.example.com."). zone must be canonical.
func Owner(zone, name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" || n == Apex || n == zone || n == zone+"." {
		return Apex, nil
	}
	absolute := strings.HasSuffix(n, ".")
	n = strings.TrimSuffix(n, ".")
	switch {
	case strings.HasSuffix(n, "."+zone):
		n = strings.TrimSuffix(n, "."+zone)
	case absolute:
		return "", fieldErr("name", "%q is not inside zone %s", name, zone)
	}
	if n == "" || strings.Contains(n, "..") || strings.HasPrefix(n, ".") {
		return "", fieldErr("name", "%q is not a valid name", name)
	}
	if _, ok := dns.IsDomainName(n + "." + zone + "."); !ok {
		return "", fieldErr("name", "%q is too long or has an empty or over-long label", name)
	}
	for i, l := range strings.Split(n, ".") {
		if l == "*" && i == 0 {
			continue
		}
		if !hostLabel(l, true) {
			return "", fieldErr("name", "label %q of %q: only letters, digits, '-', '_' and a leading '*' are allowed", l, name)
		}
	}
	return n, nil
}

// FQDN returns the absolute owner name (with trailing dot) of a canonical
// relative owner inside a canonical zone.
func FQDN(zone, owner string) string {
	if owner == Apex {
		return zone + "."
	}
	return owner + "." + zone + "."
}

// RelativeOwner turns an absolute name inside zone into a canonical owner;
// ok is false when the name is outside the zone.
func RelativeOwner(zone, fqdn string) (owner string, ok bool) {
	n := strings.ToLower(strings.TrimSuffix(fqdn, "."))
	if n == zone {
		return Apex, true
	}
	if strings.HasSuffix(n, "."+zone) {
		return strings.TrimSuffix(n, "."+zone), true
	}
	return "", false
}

// hostLabel reports whether l is a letters-digits-hyphen label (underscore
// allowed when underscore is set, as in _dmarc or _sip._tcp).
func hostLabel(l string, underscore bool) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-':
		case c == '_' && underscore:
		default:
			return false
		}
	}
	return true
}

// hostName reports why h (absolute, trailing dot) is not a host name usable
// as an MX, NS or SRV target, or "" when it is one (RFC 1123 2.1, RFC 2181 10.3).
func hostName(h string) string {
	n := strings.TrimSuffix(h, ".")
	if n == "" {
		return "the root is not a host name"
	}
	if net.ParseIP(n) != nil {
		return fmt.Sprintf("%s is an address, not a host name", n)
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if !hostLabel(l, false) || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return fmt.Sprintf("%s is not a host name (label %q)", n, l)
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return fmt.Sprintf("%s is not a host name (numeric top-level label)", n)
	}
	return ""
}

// ParseType returns the type code of a mnemonic ("mx", "TYPE65280").
func ParseType(s string) (uint16, string, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "" {
		return 0, "", fieldErr("type", "type is empty")
	}
	code, ok := dns.StringToType[t]
	if !ok && strings.HasPrefix(t, "TYPE") {
		n, err := strconv.ParseUint(t[4:], 10, 16)
		if err == nil {
			code, ok = uint16(n), true
			if name, known := dns.TypeToString[code]; known {
				t = name
			}
		}
	}
	if !ok {
		return 0, "", fieldErr("type", "unknown record type %q", s)
	}
	if why, bad := refused[code]; bad {
		return 0, "", fieldErr("type", "%s cannot be stored: %s", t, why)
	}
	return code, t, nil
}

// MX is the parsed data of an MX record.
type MX struct {
	Pref uint16
	Host string // absolute, lower case, trailing dot
	Port uint16 // DefaultPort when the data had no ":PORT"
}

// ParseMX parses MX data "PREF HOST[:PORT]".
func ParseMX(data string) (MX, error) {
	f := strings.Fields(data)
	if len(f) != 2 {
		return MX{}, fieldErr("data", "MX data must be \"PREFERENCE HOST[:PORT]\", got %q", data)
	}
	pref, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return MX{}, fieldErr("data", "MX preference %q is not a number 0-65535", f[0])
	}
	host, port := f[1], uint64(DefaultPort)
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		p := host[i+1:]
		host = host[:i]
		port, err = strconv.ParseUint(p, 10, 32)
		if err != nil || port < 1 || port > 65535 {
			return MX{}, fieldErr("data", "MX port %q is not a port number 1-65535", p)
		}
	}
	if _, ok := dns.IsDomainName(host); !ok {
		return MX{}, fieldErr("data", "MX target %q is not a valid name", host)
	}
	return MX{Pref: uint16(pref), Host: dns.Fqdn(strings.ToLower(host)), Port: uint16(port)}, nil
}

// String formats m as record data, leaving out the default port.
func (m MX) String() string {
	s := strconv.Itoa(int(m.Pref)) + " " + m.Host
	if m.Port != DefaultPort {
		s += ":" + strconv.Itoa(int(m.Port))
	}
	return s
}

// Normalize validates r as a record of zone (canonical, see ZoneName) and
// returns it in canonical form: canonical owner, upper-case type, and the
// data as miekg/dns prints it (absolute names), an MX port kept. ID is kept
// as given. Errors are *FieldError.
func Normalize(zone string, r Record, p Policy) (Record, error) {
	owner, err := Owner(zone, r.Name)
	if err != nil {
		return Record{}, err
	}
	code, typ, err := ParseType(r.Type)
	if err != nil {
		return Record{}, err
	}
	if r.TTL < MinTTL || r.TTL > MaxTTL {
		return Record{}, fieldErr("ttl", "TTL %d is outside %d-%d seconds", r.TTL, MinTTL, MaxTTL)
	}
	data := strings.TrimSpace(r.Data)
	if data == "" {
		return Record{}, fieldErr("data", "data is empty")
	}
	if strings.ContainsAny(data, "\n\r\x00") {
		return Record{}, fieldErr("data", "data must be one line")
	}
	if code == dns.TypeCNAME && owner == Apex {
		return Record{}, fieldErr("type", "a CNAME cannot be at the zone apex")
	}
	var mx MX
	if code == dns.TypeMX {
		if mx, err = ParseMX(data); err != nil {
			return Record{}, err
		}
		if mx.Port != DefaultPort && mx.Host == "." {
			return Record{}, fieldErr("data", "a null MX (RFC 7505) has no port")
		}
		if mx.Port != DefaultPort && owner != Apex {
			return Record{}, fieldErr("data", "an MX port is only allowed on apex MX records (forwarding is per zone)")
		}
		if mx.Port != DefaultPort {
			for _, h := range p.MXHosts {
				if dns.Fqdn(strings.ToLower(h)) == mx.Host {
					return Record{}, fieldErr("data", "forwarding target %s is one of this service's own MX hosts: mail would loop", strings.TrimSuffix(mx.Host, "."))
				}
			}
		}
		data = strconv.Itoa(int(mx.Pref)) + " " + mx.Host
	}
	rr, err := dns.NewRR(FQDN(zone, owner) + " " + strconv.Itoa(int(r.TTL)) + " IN " + typ + " " + data)
	if err != nil {
		return Record{}, fieldErr("data", "%s data %q does not parse: %s", typ, r.Data, parseMsg(err))
	}
	if rr == nil || rr.Header().Rrtype != code {
		return Record{}, fieldErr("data", "%s data %q does not parse", typ, r.Data)
	}
	if err := packable(rr, data); err != nil {
		return Record{}, err
	}
	if err := checkTargets(rr); err != nil {
		return Record{}, err
	}
	lowerNames(rr)
	canon := rdata(rr)
	if code == dns.TypeMX {
		canon = mx.String()
	} else if again, err := dns.NewRR(FQDN(zone, owner) + " " + strconv.Itoa(int(r.TTL)) + " IN " + typ + " " + canon); err != nil || again == nil || rdata(again) != canon {
		// miekg/dns accepts a few inputs that it prints in a form it
		// cannot read back (a CAA with an empty tag): the stored form
		// must parse, to itself.
		return Record{}, fieldErr("data", "%s data %q is not valid", typ, r.Data)
	}
	return Record{ID: r.ID, Name: owner, Type: typ, TTL: r.TTL, Data: canon}, nil
}

// rdata returns the presentation form of rr's RDATA.
func rdata(rr dns.RR) string {
	if u, ok := rr.(*dns.RFC3597); ok {
		// RFC3597.String prints its own header ("CLASS1 TYPEnnn"), which
		// Header().String() does not match (RFC 3597 5).
		return strings.TrimSpace(`\# ` + strconv.Itoa(len(u.Rdata)/2) + " " + u.Rdata)
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// parseMsg strips miekg/dns's positional suffix, meaningless for one record.
func parseMsg(err error) string {
	s := strings.TrimPrefix(err.Error(), "dns: ")
	if i := strings.Index(s, " at line: "); i >= 0 {
		s = s[:i]
	}
	return s
}

// packable checks that rr has wire-format RDATA: miekg/dns accepts an empty
// RDATA (it is legal in UPDATE) that is no record at all in a zone.
func packable(rr dns.RR, data string) error {
	buf := make([]byte, dns.Len(rr)+64)
	if _, err := dns.PackRR(rr, buf, 0, nil, false); err != nil {
		return fieldErr("data", "%s data does not encode: %s", dns.TypeToString[rr.Header().Rrtype], parseMsg(err))
	}
	// Only an unknown type may be empty (RFC 3597 "\# 0"); "\# 0" for a
	// known type gives an A or HTTPS with zero fields, not a record.
	if _, unknown := rr.(*dns.RFC3597); !unknown {
		if f := strings.Fields(data); rr.Header().Rdlength == 0 || len(f) >= 2 && f[0] == `\#` && f[1] == "0" {
			return fieldErr("data", "data is empty")
		}
	}
	return nil
}

// checkTargets enforces host-name targets for MX, NS and SRV (RFC 2181 10.3).
// The root is allowed where it means "no service": null MX (RFC 7505) and
// SRV (RFC 2782).
func checkTargets(rr dns.RR) error {
	var target string
	switch v := rr.(type) {
	case *dns.MX:
		if v.Mx == "." && v.Preference == 0 {
			return nil
		}
		target = v.Mx
	case *dns.NS:
		target = v.Ns
	case *dns.SRV:
		if v.Target == "." {
			return nil
		}
		target = v.Target
	default:
		return nil
	}
	if why := hostName(target); why != "" {
		return fieldErr("data", "%s target: %s", dns.TypeToString[rr.Header().Rrtype], why)
	}
	return nil
}

// lowerNames lowers the case of the domain names in rr's RDATA, so that
// records equal under DNS's case-insensitive comparison (RFC 4343) are
// stored alike and duplicates are caught (RFC 2181 5).
func lowerNames(rr dns.RR) {
	switch v := rr.(type) {
	case *dns.NS:
		v.Ns = strings.ToLower(v.Ns)
	case *dns.CNAME:
		v.Target = strings.ToLower(v.Target)
	case *dns.DNAME:
		v.Target = strings.ToLower(v.Target)
	case *dns.PTR:
		v.Ptr = strings.ToLower(v.Ptr)
	case *dns.SRV:
		v.Target = strings.ToLower(v.Target)
	case *dns.NAPTR:
		v.Replacement = strings.ToLower(v.Replacement)
	case *dns.SVCB:
		v.Target = strings.ToLower(v.Target)
	case *dns.HTTPS:
		v.Target = strings.ToLower(v.Target)
	}
}

// RR returns r as a miekg/dns record of zone, the MX port dropped: what DNS
// would publish if the zone were not forwarded. r must be normalised.
func (r Record) RR(zone string) (dns.RR, error) {
	data := r.Data
	if r.Type == "MX" {
		mx, err := ParseMX(data)
		if err != nil {
			return nil, err
		}
		data = strconv.Itoa(int(mx.Pref)) + " " + mx.Host
	}
	rr, err := dns.NewRR(FQDN(zone, r.Name) + " " + strconv.Itoa(int(r.TTL)) + " IN " + r.Type + " " + data)
	if err != nil {
		return nil, fmt.Errorf("record %s %s %s: %w", r.Name, r.Type, r.Data, err)
	}
	if rr == nil {
		return nil, fmt.Errorf("record %s %s: empty data", r.Name, r.Type)
	}
	return rr, nil
}

// Target is one hop of a zone's forwarding route.
type Target struct {
	Pref uint16
	Host string // lower case, no trailing dot, ready to resolve and dial
	Port uint16
}

// Address returns "host:port".
func (t Target) Address() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// Route applies the MX forwarding rule of DESIGN.md to a zone's records: a
// zone is forwarded when at least one apex MX record has a port other than
// 25, and then its route is every apex MX target in priority order (ties by
// host name), each at its port. Route returns nil for a zone that is not
// forwarded. Null MX records and unparsable data are skipped.
func Route(recs []Record) []Target {
	var ts []Target
	forwarded := false
	for _, r := range recs {
		if r.Type != "MX" || r.Name != Apex {
			continue
		}
		mx, err := ParseMX(r.Data)
		if err != nil || mx.Host == "." {
			continue
		}
		if mx.Port != DefaultPort {
			forwarded = true
		}
		ts = append(ts, Target{Pref: mx.Pref, Host: strings.TrimSuffix(mx.Host, "."), Port: mx.Port})
	}
	if !forwarded {
		return nil
	}
	sort.SliceStable(ts, func(i, j int) bool {
		if ts[i].Pref != ts[j].Pref {
			return ts[i].Pref < ts[j].Pref
		}
		return ts[i].Host < ts[j].Host
	})
	return ts
}
