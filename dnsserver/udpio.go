package dnsserver

import (
	"net"
	"net/netip"
)

// packetIO moves one UDP socket's datagrams in batches: read fills the
// batch, packet returns its datagrams, reply queues the answer to the
// source of one of them, and flush sends what is queued. The slices it
// returns are valid until the next read.
type packetIO interface {
	read() (int, error)
	packet(i int) ([]byte, netip.AddrPort)
	reply(i int, out []byte)
	flush() error
}

// plainIO is packetIO one datagram at a time, for sockets that are not a
// *net.UDPConn and systems without recvmmsg.
type plainIO struct {
	pc   *net.UDPConn
	conn net.PacketConn
	buf  []byte
	n    int
	from netip.AddrPort
	out  []byte
}

func newPlainIO(pc net.PacketConn, _ int) *plainIO {
	uc, _ := pc.(*net.UDPConn)
	return &plainIO{pc: uc, conn: pc, buf: make([]byte, udpBuf)}
}

func (p *plainIO) read() (int, error) {
	p.out = nil
	var err error
	if p.pc != nil {
		p.n, p.from, err = p.pc.ReadFromUDPAddrPort(p.buf)
	} else {
		var a net.Addr
		p.n, a, err = p.conn.ReadFrom(p.buf)
		if ua, ok := a.(*net.UDPAddr); ok {
			p.from = ua.AddrPort()
		}
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (p *plainIO) packet(int) ([]byte, netip.AddrPort) { return p.buf[:p.n], p.from }
func (p *plainIO) reply(_ int, out []byte)             { p.out = out }

func (p *plainIO) flush() error {
	if p.out == nil {
		return nil
	}
	// A datagram that could not be sent is lost, as any.
	if _, err := p.conn.WriteTo(p.out, net.UDPAddrFromAddrPort(p.from)); isClosed(err) {
		return err
	}
	return nil
}
