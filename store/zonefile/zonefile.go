// Package zonefile reads and writes BIND zone files (RFC 1035 5): import
// with Parse, export with Write. It owns the file format, including the
// "; mxport:port=N" comment that carries a forwarded MX record's port
// through an export and a re-import while the file stays a plain,
// named-checkzone clean zone file. It knows no Redis: records are validated
// one by one with package record, and the zone-wide rules (CNAME
// exclusivity, the last apex NS) are left to package store.
package zonefile

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// Limits on what Parse accepts, so that a hostile import cannot exhaust
// memory.
const (
	MaxSize    = 10 << 20 // bytes of zone file
	MaxRecords = 100000   // resource records, the SOA included
	// MaxData bounds the records' total wire size: $GENERATE can make
	// 65535 large records out of one short line.
	MaxData = 64 << 20
)

// The limits Parse applies; tests lower them.
var maxRecords, maxData = MaxRecords, MaxData

// File is a parsed zone file.
type File struct {
	Name    string          // canonical zone name (record.ZoneName form: lower case, no trailing dot)
	SOA     store.SOA       // MName/RName absolute with trailing dot
	Serial  uint32          // the SOA serial
	Records []record.Record // every RR except the SOA, normalised with record.Normalize (ID empty)
}

// portComment is the comment Write puts after a forwarded MX record, and
// Parse reads back: "; mxport:port=2525". Parse also accepts spaces around
// its parts.
var portComment = regexp.MustCompile(`(?i)mxport\s*:\s*port\s*=\s*([0-9]+)`)

// entry is one RR as the parser returned it.
type entry struct {
	rr      dns.RR
	comment string
	line    int // first line of the RR in the file
}

// Parse reads a zone file with miekg/dns's ZoneParser. origin is the zone
// name; "" means: take it from the SOA record's owner (the file must then
// set $ORIGIN or use absolute names). filename is used in error messages.
// policy is passed to record.Normalize.
//
// The file must hold exactly one SOA record, at the apex, and only class IN
// records inside the zone; $INCLUDE is refused. Records are normalised with
// record.Normalize and identical ones are kept once (RFC 2181 5). An MX
// record followed by the comment "; mxport:port=N" gets ":N" after its
// target. Errors give the file and line: a syntax error keeps miekg/dns's
// "at line: L:C"; a record refused by validation reads "line L: OWNER TYPE:
// ..." and wraps the *record.FieldError. Files over MaxSize bytes, with
// more than MaxRecords records or more than MaxData bytes of records are
// refused.
func Parse(r io.Reader, origin, filename string, policy record.Policy) (*File, error) {
	where := "zonefile: "
	if filename != "" {
		where += filename + ": "
	}
	zone := ""
	if origin != "" {
		z, err := record.ZoneName(origin)
		if err != nil {
			return nil, fmt.Errorf("%sorigin: %w", where, err)
		}
		zone = z
	}
	buf, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%sread: %w", where, err)
	}
	if len(buf) > MaxSize {
		return nil, fmt.Errorf("%sfile is larger than %d MiB", where, MaxSize>>20)
	}

	lr := &lineReader{buf: buf, line: 1}
	zpOrigin := ""
	if zone != "" {
		zpOrigin = zone + "."
	}
	zp := dns.NewZoneParser(lr, zpOrigin, filename)
	var entries []entry
	size := 0
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if len(entries) == maxRecords {
			return nil, fmt.Errorf("%smore than %d records", where, maxRecords)
		}
		if size += dns.Len(rr); size > maxData {
			return nil, fmt.Errorf("%sline %d: the records take more than %d MiB", where, lr.rrLine(), maxData>>20)
		}
		entries = append(entries, entry{rr: rr, comment: zp.Comment(), line: lr.rrLine()})
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("zonefile: %w", err)
	}

	if zone == "" {
		for _, e := range entries {
			if e.rr.Header().Rrtype == dns.TypeSOA {
				z, err := record.ZoneName(e.rr.Header().Name)
				if err != nil {
					return nil, fmt.Errorf("%sline %d: SOA owner: %w", where, e.line, err)
				}
				zone = z
				break
			}
		}
		if zone == "" {
			return nil, fmt.Errorf("%sno SOA record (and no origin given to name the zone)", where)
		}
	}

	f := &File{Name: zone}
	soaLine, haveSOA := 0, false
	seen := make(map[record.Record]bool, len(entries))
	for _, e := range entries {
		h := e.rr.Header()
		typ := typeName(h.Rrtype)
		at := fmt.Sprintf("%sline %d: %s %s", where, e.line, h.Name, typ)
		if h.Class != dns.ClassINET {
			return nil, fmt.Errorf("%s: class %s is not IN", at, dns.Class(h.Class))
		}
		owner, ok := record.RelativeOwner(zone, h.Name)
		if !ok {
			return nil, fmt.Errorf("%s: owner %s is outside zone %s", at, h.Name, zone)
		}
		if soa, isSOA := e.rr.(*dns.SOA); isSOA {
			if haveSOA {
				return nil, fmt.Errorf("%s: a second SOA record (the first is at line %d)", at, soaLine)
			}
			if owner != record.Apex {
				return nil, fmt.Errorf("%s: the SOA record must be at the zone apex %s.", at, zone)
			}
			if soa.Ns == "" || soa.Mbox == "" {
				// miekg/dns takes an empty RDATA, legal only in UPDATE.
				return nil, fmt.Errorf("%s: the SOA record has no data", at)
			}
			if h.Ttl < record.MinTTL || h.Ttl > record.MaxTTL {
				return nil, fmt.Errorf("%s: %w", at, &record.FieldError{Field: "soa.ttl",
					Msg: fmt.Sprintf("TTL %d is outside %d-%d seconds", h.Ttl, record.MinTTL, record.MaxTTL)})
			}
			mname, err := soaName("soa.mname", soa.Ns)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			rname, err := soaName("soa.rname", soa.Mbox)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			soaLine, haveSOA = e.line, true
			f.Serial = soa.Serial
			f.SOA = store.SOA{
				MName: mname, RName: rname,
				Refresh: soa.Refresh, Retry: soa.Retry, Expire: soa.Expire, Minimum: soa.Minttl,
				TTL: h.Ttl,
			}
			continue
		}
		data := rdata(e.rr)
		if m := portComment.FindAllStringSubmatch(e.comment, -1); m != nil && h.Rrtype == dns.TypeMX {
			if len(m) > 1 {
				return nil, fmt.Errorf("%s: more than one mxport:port comment", at)
			}
			port, err := strconv.ParseUint(m[0][1], 10, 16)
			if err != nil || port == 0 {
				return nil, fmt.Errorf("%s: %w", at, &record.FieldError{Field: "data",
					Msg: fmt.Sprintf("mxport:port=%s is not a port number 1-65535", m[0][1])})
			}
			data += ":" + strconv.FormatUint(port, 10)
		}
		rec, err := record.Normalize(zone, record.Record{Name: owner, Type: typ, TTL: h.Ttl, Data: data}, policy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		key := rec
		key.TTL = 0
		if seen[key] {
			continue // RFC 2181 5: an RRset holds no duplicate records
		}
		seen[key] = true
		f.Records = append(f.Records, rec)
	}
	if !haveSOA {
		return nil, fmt.Errorf("%sno SOA record for zone %s", where, zone)
	}
	return f, nil
}

// soaName checks an SOA MNAME or RNAME (absolute, as the parser gives it)
// and returns it in lower case. Only letters, digits, '-' and '_' are
// allowed in its labels: a name that needs escapes in a zone file would
// not read back the same after an export.
func soaName(field, name string) (string, error) {
	n := strings.ToLower(name)
	bad := n == "." || !strings.HasSuffix(n, ".")
	for _, l := range strings.Split(strings.TrimSuffix(n, "."), ".") {
		bad = bad || l == "" || len(l) > 63 || strings.TrimLeft(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != ""
	}
	if _, ok := dns.IsDomainName(n); bad || !ok {
		return "", &record.FieldError{Field: field, Msg: fmt.Sprintf("%q is not a host name", name)}
	}
	return n, nil
}

// rdata returns the presentation RDATA of rr.
func rdata(rr dns.RR) string {
	if u, ok := rr.(*dns.RFC3597); ok {
		// RFC3597.String prints its own header ("CLASS1 TYPEnnn"), not
		// the one Header().String() gives.
		return strings.TrimSpace(`\# ` + strconv.Itoa(len(u.Rdata)/2) + " " + u.Rdata)
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// typeName returns the mnemonic of a type, "TYPEnnn" (RFC 3597 5) for one
// miekg/dns does not know.
func typeName(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// lineReader feeds a zone file to the ZoneParser byte by byte and follows
// its logical lines (a parenthesised group spans lines; quotes and comments
// hide parentheses), so Parse can tell the line an RR starts on: the parser
// itself does not say.
type lineReader struct {
	buf  []byte
	pos  int
	line int // line of the next byte

	quote, esc, comment bool
	paren               int

	start     int  // first line with a token in the current logical line; 0: none yet
	lastStart int  // start of the last logical line completed
	ended     bool // the last byte read ended a logical line
}

// Read implements io.Reader (the parser uses ReadByte).
func (l *lineReader) Read(p []byte) (int, error) {
	for i := range p {
		c, err := l.ReadByte()
		if err != nil {
			if i > 0 {
				return i, nil
			}
			return 0, err
		}
		p[i] = c
	}
	return len(p), nil
}

// ReadByte implements io.ByteReader.
func (l *lineReader) ReadByte() (byte, error) {
	if l.pos >= len(l.buf) {
		return 0, io.EOF
	}
	c := l.buf[l.pos]
	l.pos++
	l.ended = false
	switch {
	case l.comment:
		if c == '\n' {
			l.comment = false
			l.newline()
		}
	case l.esc:
		l.esc = false
		l.token()
	case l.quote:
		switch c {
		case '\\':
			l.esc = true
		case '"':
			l.quote = false
		}
	default:
		switch c {
		case ';':
			l.comment = true
		case '"':
			l.quote = true
			l.token()
		case '\\':
			l.esc = true
			l.token()
		case '(':
			l.paren++
		case ')':
			if l.paren > 0 {
				l.paren--
			}
		case ' ', '\t', '\r':
		case '\n':
			l.newline()
		default:
			l.token()
		}
	}
	if c == '\n' {
		l.line++
	}
	return c, nil
}

func (l *lineReader) token() {
	if l.start == 0 {
		l.start = l.line
	}
}

func (l *lineReader) newline() {
	if l.paren > 0 || l.quote {
		return
	}
	if l.start != 0 {
		l.lastStart, l.start = l.start, 0
	}
	l.ended = true
}

// rrLine returns the first line of the RR the parser has just returned: it
// has read up to the newline that ends it, or to the end of the file.
func (l *lineReader) rrLine() int {
	if !l.ended && l.start != 0 {
		return l.start
	}
	return l.lastStart
}

// Write writes zd as a zone file that named-checkzone accepts: a header
// comment, $ORIGIN and $TTL, the SOA (serial zd.Serial), the apex records
// (NS first), then the other records in canonical name order (RFC 4034
// 6.1), by type and data within a name. Owner names are absolute. A
// forwarded MX record is written as a plain MX followed by the comment
// "; mxport:port=N", which Parse reads back. Errors are the writer's, or a
// record of zd that does not make a valid RR.
func Write(w io.Writer, zd store.ZoneData) error {
	zone, err := record.ZoneName(zd.Name)
	if err != nil {
		return fmt.Errorf("zonefile: write: %w", err)
	}
	if zd.SOA.MName == "" || zd.SOA.RName == "" {
		return fmt.Errorf("zonefile: write %s: the SOA has no MNAME or RNAME", zone)
	}
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: zone + ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: zd.SOA.TTL},
		Ns:  dns.Fqdn(zd.SOA.MName), Mbox: dns.Fqdn(zd.SOA.RName), Serial: zd.Serial,
		Refresh: zd.SOA.Refresh, Retry: zd.SOA.Retry, Expire: zd.SOA.Expire, Minttl: zd.SOA.Minimum,
	}

	recs := append([]record.Record(nil), zd.Records...)
	sort.SliceStable(recs, func(i, j int) bool { return less(recs[i], recs[j]) })

	var b bytes.Buffer
	fmt.Fprintf(&b, "; zone %s, serial %d\n; exported by mxport\n", zone, zd.Serial)
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL %d\n", zone, zd.SOA.TTL)
	b.WriteString(soa.String()) // every field of dns.SOA prints on one line
	b.WriteByte('\n')
	for _, r := range recs {
		rr, err := r.RR(zone)
		if err != nil {
			return fmt.Errorf("zonefile: write %s: %w", zone, err)
		}
		b.WriteString(rr.Header().String() + rdata(rr))
		if r.Type == "MX" {
			if mx, err := record.ParseMX(r.Data); err == nil && mx.Port != record.DefaultPort {
				fmt.Fprintf(&b, " ; mxport:port=%d", mx.Port)
			}
		}
		b.WriteByte('\n')
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("zonefile: write %s: %w", zone, err)
	}
	return nil
}

// less orders records for Write: the apex first with its NS records first,
// then owners in canonical order (RFC 4034 6.1: labels compared from the
// right), then type, then data.
func less(a, b record.Record) bool {
	if a.Name != b.Name {
		return nameLess(a.Name, b.Name)
	}
	if a.Name == record.Apex && (a.Type == "NS") != (b.Type == "NS") {
		return a.Type == "NS"
	}
	if a.Type != b.Type {
		return a.Type < b.Type
	}
	if a.Data != b.Data {
		return a.Data < b.Data
	}
	return a.TTL < b.TTL
}

// nameLess compares canonical relative owners in canonical DNS order; the
// apex ("@") has no labels and comes first.
func nameLess(a, b string) bool {
	la, lb := labels(a), labels(b)
	for i := 0; i < len(la) && i < len(lb); i++ {
		if la[i] != lb[i] {
			return la[i] < lb[i]
		}
	}
	return len(la) < len(lb)
}

// labels returns the labels of a relative owner, rightmost first.
func labels(owner string) []string {
	if owner == record.Apex {
		return nil
	}
	l := strings.Split(owner, ".")
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	return l
}
