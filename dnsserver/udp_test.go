package dnsserver_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxport/mxport/dnsserver"
)

// TestUDPSockets serves on several SO_REUSEPORT sockets, IPv4 and IPv6,
// and asks the same questions from many source ports, each several times:
// the first reply of a question comes from the Handler, the next ones
// from a socket's answer cache, and all must be the same bytes but for
// the ID.
func TestUDPSockets(t *testing.T) {
	st, _ := protoStore(t)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			srv := dnsserver.New(st, dnsserver.Config{Addr: addr, UDPSockets: 3, MXHosts: protoMXHosts})
			protoRun(t, srv, nil, func() error { return srv.Start(context.Background()) })
			first := map[string][]byte{}
			for client := range 8 {
				c, err := net.Dial("udp", srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				for _, q := range []struct {
					name  string
					qtype uint16
				}{
					{"example.com.", dns.TypeMX}, {"x.w.plain.test.", dns.TypeA}, {"nope.plain.test.", dns.TypeA},
					{"www.sub.plain.test.", dns.TypeA}, {"example.org.", dns.TypeA}, {"Mail.Plain.Test.", dns.TypeA},
				} {
					m := query(q.name, q.qtype)
					m.Id = uint16(client*100 + int(q.qtype))
					m.SetEdns0(1232, false)
					pkt, _ := m.Pack()
					c.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err := c.Write(pkt); err != nil {
						t.Fatal(err)
					}
					buf := make([]byte, 2048)
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("%s: %v", q.name, err)
					}
					got := buf[:n]
					var r dns.Msg
					if err := r.Unpack(got); err != nil || r.Id != m.Id || r.Question[0] != m.Question[0] {
						t.Fatalf("%s: reply %v (%v)", q.name, &r, err)
					}
					got[0], got[1] = 0, 0
					if f, ok := first[q.name]; !ok {
						first[q.name] = bytes.Clone(got)
					} else if !bytes.Equal(f, got) {
						t.Errorf("%s from client %d:\n %x\nfirst reply\n %x", q.name, client, got, f)
					}
				}
				c.Close()
			}
		})
	}
}
