package dnsserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// udpBatch is how many datagrams one read or write moves; udpBuf the
// largest request read (a bigger one is cut and answered FORMERR).
const (
	udpBatch = 64
	udpBuf   = 4096
)

// udpServer answers one UDP socket from one goroutine, reading and writing
// datagrams in batches (recvmmsg/sendmmsg on Linux): no goroutine and few
// system calls per query, as Knot and NSD do. Plain queries are answered
// from the socket's answer cache when it can (fastpath.go). UPDATEs,
// which wait for Redis, run on their own goroutine so they never hold up
// queries.
type udpServer struct {
	pc    net.PacketConn
	io    packetIO
	h     *Handler
	tp    tsigProvider
	cache *answerCache
	key   []byte // scratch for the cache key
	done  chan struct{}
}

func newUDPServer(pc net.PacketConn, h *Handler, tp tsigProvider) (*udpServer, error) {
	io, err := newPacketIO(pc, udpBatch)
	if err != nil {
		return nil, err
	}
	return &udpServer{pc: pc, io: io, h: h, tp: tp, cache: newAnswerCache(cacheEntries, cacheBytes),
		key: make([]byte, 0, 260), done: make(chan struct{})}, nil
}

// serve runs until the socket is closed.
func (u *udpServer) serve() {
	defer close(u.done)
	outBufs := make([][]byte, udpBatch)
	for i := range outBufs {
		outBufs[i] = make([]byte, 0, maxUDPSize+512)
	}
	w := &udpWriter{tp: u.tp}
	for {
		n, err := u.io.read()
		if err != nil {
			if isClosed(err) {
				return
			}
			slog.Warn("dns udp read", "err", err)
			continue
		}
		for i := range n {
			pkt, from := u.io.packet(i)
			if len(pkt) < 12 {
				continue
			}
			if opcode(pkt) == dns.OpcodeUpdate {
				go u.single(bytes.Clone(pkt), from)
				continue
			}
			w.reset(from, outBufs[i][:0])
			u.handle(w, pkt)
			if w.out != nil {
				outBufs[i] = w.out
				u.io.reply(i, w.out)
			}
		}
		if err := u.io.flush(); err != nil {
			if isClosed(err) {
				return
			}
			slog.Debug("dns udp write", "err", err)
		}
	}
}

// single answers one request on its own goroutine.
func (u *udpServer) single(pkt []byte, from netip.AddrPort) {
	w := &udpWriter{tp: u.tp}
	w.reset(from, nil)
	u.slow(w, pkt)
	if w.out != nil {
		u.pc.WriteTo(w.out, w.RemoteAddr())
	}
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

func opcode(pkt []byte) int { return int(pkt[2]>>3) & 0xF }

// handle answers one datagram: a plain query from the answer cache when it
// holds the reply, else through the Handler, keeping the reply when it may.
func (u *udpServer) handle(w *udpWriter, pkt []byte) {
	key, size, lower, ok := plainQuery(pkt, u.key[:0])
	if !ok {
		u.slow(w, pkt)
		return
	}
	// The generation is read before the index is: an entry built from
	// a zone that changed meanwhile is already stale when stored.
	gen := u.h.ix.generation()
	if a, hit := u.cache.get(key, gen); hit && len(a.msg) <= size {
		u.h.fast(w, pkt, a, len(key)+13) // header, qname, qtype, qclass
		return
	}
	u.slow(w, pkt)
	if lower {
		if a, ok := u.h.cacheable(w, gen); ok {
			u.cache.put(key, a)
		}
	}
}

// slow runs one datagram through the same steps as miekg/dns's server:
// the accept filter, unpacking, TSIG verification, then the Handler.
func (u *udpServer) slow(w *udpWriter, pkt []byte) {
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(pkt), Bits: binary.BigEndian.Uint16(pkt[2:]),
		Qdcount: binary.BigEndian.Uint16(pkt[4:]), Ancount: binary.BigEndian.Uint16(pkt[6:]),
		Nscount: binary.BigEndian.Uint16(pkt[8:]), Arcount: binary.BigEndian.Uint16(pkt[10:]),
	}
	action := accept(dh)
	if action == dns.MsgIgnore {
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil || action != dns.MsgAccept {
		rcode := dns.RcodeFormatError
		if action == dns.MsgRejectNotImplemented {
			rcode = dns.RcodeNotImplemented
		}
		u.h.reject(w, req, dh, rcode)
		return
	}
	if t := req.IsTsig(); t != nil {
		w.tsigStatus = dns.TsigVerifyWithProvider(pkt, u.tp, "", false)
		w.requestMAC = t.MAC
	}
	u.h.ServeDNS(w, req)
}

// udpWriter is the dns.ResponseWriter of one UDP request; the reply is
// packed into out, sent by the batch.
type udpWriter struct {
	tp         tsigProvider
	addr       netip.AddrPort
	remote     *net.UDPAddr // addr, made when the Handler asks
	out        []byte
	buf        []byte
	msg        *dns.Msg // the reply WriteMsg packed, for the answer cache
	tsigStatus error
	requestMAC string
}

func (w *udpWriter) reset(addr netip.AddrPort, buf []byte) {
	w.addr, w.remote, w.buf, w.out, w.msg, w.tsigStatus, w.requestMAC = addr, nil, buf, nil, nil, nil, ""
}

func (w *udpWriter) LocalAddr() net.Addr { return nil }
func (w *udpWriter) RemoteAddr() net.Addr {
	if w.remote == nil {
		w.remote = net.UDPAddrFromAddrPort(w.addr)
	}
	return w.remote
}
func (w *udpWriter) TsigStatus() error   { return w.tsigStatus }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}
func (w *udpWriter) Close() error        { return nil }

// WriteMsg packs m, signing it when it carries a TSIG record (the request
// was signed and verified).
func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	// Signed: every reply to a verified request, and BADTIME (the MAC was
	// good), which tsigError makes.
	if t := m.IsTsig(); t != nil && (w.tsigStatus == nil || errors.Is(w.tsigStatus, dns.ErrTime)) {
		out, _, err := dns.TsigGenerateWithProvider(m, w.tp, w.requestMAC, false)
		if err != nil {
			return err
		}
		w.out = out
		return nil
	}
	out, err := m.PackBuffer(w.buf)
	if err != nil {
		return err
	}
	w.out, w.msg = out, m
	return nil
}

// Write takes an already packed reply.
func (w *udpWriter) Write(b []byte) (int, error) {
	w.out = append(w.buf[:0], b...)
	return len(b), nil
}

// stop closes the socket and waits for the reader to end.
func (u *udpServer) stop(deadline time.Time) error {
	err := u.pc.Close()
	select {
	case <-u.done:
	case <-time.After(time.Until(deadline)):
	}
	return err
}
