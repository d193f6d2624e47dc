package dnsserver

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
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
//
// The cache is a map from a 64-bit hash of the key to a slot in a fixed
// array of entries: small and free of pointers, so a lookup touches few
// cache lines and the garbage collector does not scan it. An entry's
// reply holds its key (the question), which a hit compares. A full cache
// evicts with a CLOCK hand: entries hit since it last passed stay.

// Default bounds of one socket's answer cache.
const (
	cacheEntries = 1 << 17
	cacheBytes   = 32 << 20
)

// cachedAnswer is one packed reply and what the fast path must know of it
// without unpacking: its RCODE (metrics) and its RRL kind and name.
type cachedAnswer struct {
	msg     []byte
	hash    uint64
	gen     uint64
	edns    bool // the key's EDNS flag (the rest of the key is in msg)
	used    bool // hit since the CLOCK hand passed
	rcode   uint8
	kind    rrl.Kind
	rrlName string
}

// answerCache is one socket's cache, bounded in entries and in bytes.
type answerCache struct {
	seed     maphash.Seed
	index    map[uint64]int32 // key hash -> entries[i]
	entries  []cachedAnswer   // len grows to maxEntries; msg nil: free
	hand     int
	bytes    int
	maxBytes int
}

func newAnswerCache(maxEntries, maxBytes int) *answerCache {
	return &answerCache{seed: maphash.MakeSeed(), index: make(map[uint64]int32),
		entries: make([]cachedAnswer, 0, maxEntries), maxBytes: maxBytes}
}

// size returns the number of entries held.
func (c *answerCache) size() int { return len(c.index) }

// get returns the entry of key if it was built under generation gen. The
// entry is the cache's: read it before the next put.
func (c *answerCache) get(key []byte, gen uint64) (*cachedAnswer, bool) {
	i, ok := c.index[maphash.Bytes(c.seed, key)]
	if !ok {
		return nil, false
	}
	a := &c.entries[i]
	q := len(key) - 1 // qname and qtype
	if a.gen != gen || a.edns != (key[q] == 1) || len(a.msg) < 12+q || !bytes.Equal(a.msg[12:12+q], key[:q]) {
		return nil, false
	}
	a.used = true
	return a, true
}

// put stores a (its msg is copied) under key.
func (c *answerCache) put(key []byte, a cachedAnswer) {
	if len(a.msg) > c.maxBytes || cap(c.entries) == 0 {
		return
	}
	a.hash, a.edns, a.used = maphash.Bytes(c.seed, key), key[len(key)-1] == 1, false
	a.msg = append([]byte(nil), a.msg...)
	i, ok := c.index[a.hash]
	if ok {
		c.bytes -= len(c.entries[i].msg)
		c.entries[i] = cachedAnswer{}
	} else {
		i = c.free()
	}
	for c.bytes+len(a.msg) > c.maxBytes {
		c.evict()
	}
	c.entries[i] = a
	c.index[a.hash] = i
	c.bytes += len(a.msg)
}

// free returns an unused entry, evicting one when all are taken.
func (c *answerCache) free() int32 {
	if len(c.entries) < cap(c.entries) {
		c.entries = c.entries[:len(c.entries)+1]
		return int32(len(c.entries) - 1)
	}
	return c.evict()
}

// evict empties the first entry under the CLOCK hand not used since the
// hand last passed (a free one included) and returns it.
func (c *answerCache) evict() int32 {
	for {
		i := c.hand
		c.hand = (c.hand + 1) % len(c.entries)
		a := &c.entries[i]
		if a.used {
			a.used = false
			continue
		}
		if a.msg != nil {
			delete(c.index, a.hash)
			c.bytes -= len(a.msg)
			*a = cachedAnswer{}
		}
		return int32(i)
	}
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
		switch h.rrl.Check(w.addr.Addr(), a.kind, a.rrlName, time.Now()) {
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
