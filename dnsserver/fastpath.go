package dnsserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver/rrl"
)

// The answer cache is the UDP fast path. The first time a plain query is
// seen, the Handler answers it (unpack, lookup, pack) and the packed reply
// is kept, keyed on the question's wire bytes; the next identical question
// is answered by copying those bytes and patching the ID and the RD and CD
// bits: no unpacking, no packing, no allocation. A reply is byte for byte
// the one the Handler would give (TestFastPathIdentical).
//
// The key holds the qname exactly as sent, letter case included: the
// Handler's reply depends on it beyond the question (miekg/dns compresses
// names case-sensitively, so the question's case decides which owner names
// become pointers). Only lower-case questions are stored, so resolvers
// that randomise the case (0x20) take the Handler, and do not churn the
// cache.
//
// Each UDP socket's reader has its own cache: no locks. An entry carries
// the index generation it was built under; any change of the index
// (a zone added, changed, removed) makes every older entry a miss.

// Default bounds of one socket's answer cache.
const (
	cacheEntries = 1 << 17
	cacheBytes   = 32 << 20
)

// cachedAnswer is one packed reply and what the fast path must know of it
// without unpacking: its RCODE (metrics) and its RRL kind and name.
type cachedAnswer struct {
	msg     []byte
	gen     uint64
	rcode   uint8
	kind    rrl.Kind
	rrlName string
}

// answerCache is one socket's cache, bounded in entries and in bytes; a
// new entry that does not fit evicts random ones.
type answerCache struct {
	entries    map[string]cachedAnswer
	bytes      int
	maxEntries int
	maxBytes   int
}

func newAnswerCache(maxEntries, maxBytes int) *answerCache {
	return &answerCache{entries: make(map[string]cachedAnswer), maxEntries: maxEntries, maxBytes: maxBytes}
}

// get returns the entry of key if it was built under generation gen.
func (c *answerCache) get(key []byte, gen uint64) (cachedAnswer, bool) {
	a, ok := c.entries[string(key)]
	return a, ok && a.gen == gen
}

// put stores a (its msg is copied) under key.
func (c *answerCache) put(key []byte, a cachedAnswer) {
	cost := len(key) + len(a.msg)
	if cost > c.maxBytes || c.maxEntries <= 0 {
		return
	}
	if old, ok := c.entries[string(key)]; ok {
		c.bytes -= len(key) + len(old.msg)
		delete(c.entries, string(key))
	}
	for len(c.entries) >= c.maxEntries || c.bytes+cost > c.maxBytes {
		for k, v := range c.entries { // map iteration starts at random
			c.bytes -= len(k) + len(v.msg)
			delete(c.entries, k)
			break
		}
	}
	a.msg = append([]byte(nil), a.msg...)
	c.entries[string(key)] = a
	c.bytes += cost
}

// plainQuery reads pkt as a query the cache can answer: opcode QUERY, one
// question of class IN and not a transfer, no answer or authority records,
// at most one additional record, an EDNS version 0 OPT whose options (if
// any) are cookies, and nothing after it. It appends the cache key to buf
// (the qname's wire bytes, the qtype, 1 with EDNS or 0) and returns it,
// the UDP size limit of the reply, and whether the qname is lower case.
// Anything else is not ok, and goes to the Handler.
func plainQuery(pkt, buf []byte) (key []byte, size int, lower, ok bool) {
	if len(pkt) < 12 || pkt[2]&0xF8 != 0 || // QR 0, opcode QUERY
		binary.BigEndian.Uint32(pkt[4:]) != 1<<16 || // QDCOUNT 1, ANCOUNT 0
		binary.BigEndian.Uint16(pkt[8:]) != 0 || binary.BigEndian.Uint16(pkt[10:]) > 1 {
		return nil, 0, false, false
	}
	off, lower := 12, true
	for {
		if off >= len(pkt) || off-12 >= 255 {
			return nil, 0, false, false
		}
		n := int(pkt[off])
		if n == 0 {
			off++
			break
		}
		if n > 63 || off+1+n > len(pkt) { // a pointer, or cut short
			return nil, 0, false, false
		}
		for _, c := range pkt[off+1 : off+1+n] {
			if c >= 'A' && c <= 'Z' {
				lower = false
			}
		}
		off += 1 + n
	}
	if off-12 > 255 || off+4 > len(pkt) {
		return nil, 0, false, false
	}
	qtype := binary.BigEndian.Uint16(pkt[off:])
	if qtype == dns.TypeAXFR || qtype == dns.TypeIXFR || binary.BigEndian.Uint16(pkt[off+2:]) != dns.ClassINET {
		return nil, 0, false, false
	}
	key = append(buf, pkt[12:off+2]...)
	off += 4
	size = minUDPSize
	if pkt[11] == 0 { // no additional record
		if off != len(pkt) {
			return nil, 0, false, false
		}
		return append(key, 0), size, lower, true
	}
	// The OPT record: root owner, type, size, extended RCODE, version,
	// flags, RDLENGTH, options.
	if off+11 > len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != dns.TypeOPT || pkt[off+6] != 0 {
		return nil, 0, false, false
	}
	size = max(minUDPSize, min(int(binary.BigEndian.Uint16(pkt[off+3:])), maxUDPSize))
	rdata := pkt[off+11:]
	if int(binary.BigEndian.Uint16(pkt[off+9:])) != len(rdata) {
		return nil, 0, false, false
	}
	for len(rdata) > 0 {
		if len(rdata) < 4 || binary.BigEndian.Uint16(rdata) != dns.EDNS0COOKIE {
			return nil, 0, false, false
		}
		n := 4 + int(binary.BigEndian.Uint16(rdata[2:]))
		if n > len(rdata) {
			return nil, 0, false, false
		}
		rdata = rdata[n:]
	}
	return append(key, 1), size, lower, true
}

// optRR is the OPT record of every EDNS reply: size maxUDPSize, version 0,
// no flags, no options.
var optRR = [11]byte{0, 0, 41, maxUDPSize >> 8, maxUDPSize & 0xFF}

// fast answers pkt from a: the reply's ID, RD and CD come from the query.
// Like write, it asks RRL first: a dropped reply is not sent, a slipped
// one is the header (TC set), the question and the OPT record alone.
// qend is where pkt's question ends.
func (h *Handler) fast(w *udpWriter, pkt []byte, a *cachedAnswer, qend int) {
	out := w.buf[:0]
	if h.rrl != nil {
		switch h.rrl.Check(udpAddr(w.addr), a.kind, a.rrlName, time.Now()) {
		case rrl.Drop:
			h.metrics.rrl("drop")
			return
		case rrl.Slip:
			h.metrics.rrl("slip")
			out = append(out, a.msg[:qend]...)
			out[2] |= 0x02 // TC
			out[6], out[7], out[8], out[9], out[10], out[11] = 0, 0, 0, 0, 0, 0
			if pkt[11] == 1 { // the query had EDNS
				out[11] = 1
				out = append(out, optRR[:]...)
			}
		}
	}
	if len(out) == 0 {
		out = append(out, a.msg...)
	}
	out[0], out[1] = pkt[0], pkt[1]
	out[2] = out[2]&^0x01 | pkt[2]&0x01 // RD
	out[3] = out[3]&^0x10 | pkt[3]&0x10 // CD
	h.metrics.query(int(a.rcode), true)
	w.out = out
}

// cacheable reports whether the reply the Handler just wrote for a plain
// query may be kept and returns its entry: a full (not truncated) answer,
// NOERROR, NXDOMAIN or REFUSED.
func (h *Handler) cacheable(w *udpWriter, gen uint64) (cachedAnswer, bool) {
	m := w.msg
	if m == nil || w.out == nil || m.Truncated || w.tsigStatus != nil ||
		(m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError && m.Rcode != dns.RcodeRefused) {
		return cachedAnswer{}, false
	}
	a := cachedAnswer{msg: w.out, gen: gen, rcode: uint8(m.Rcode)}
	if h.rrl != nil {
		a.kind, a.rrlName = kindOf(m), rrlName(m)
	}
	return a, true
}

// udpAddr is addrOf for a UDP address, without the interface conversion.
func udpAddr(a *net.UDPAddr) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.IP)
	return ip.Unmap()
}
