package courier_test

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/mxport/mxport/forwarder/courier"
	"github.com/mxport/mxport/forwarder/smtptest"
)

// server is a smtptest server reached through a proxy: Addr, the proxy's
// address, hides the server's own.
type server struct {
	*smtptest.Server
	Addr string
}

// eachMode runs f with a server that offers PIPELINING, as go-smtp's does,
// and with one that does not.
var eachMode = courier.EachMode

// start starts a smtptest server with opts (not TLS) behind a proxy that
// offers PIPELINING or not. At cleanup the proxy checks that the courier
// pipelined MAIL, RCPT and DATA exactly when it was offered.
func start(t *testing.T, pipelining bool, opts ...smtptest.Option) *server {
	t.Helper()
	srv := smtptest.Start(t, opts...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: srv.Addr, hide: !pipelining}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		courier.CheckGroups(t, p.recorded(), pipelining)
	})
	return &server{Server: srv, Addr: ln.Addr().String()}
}

// proxy relays each connection to target on a connection of its own and
// records what each read from the courier returned. With hide it drops
// PIPELINING from the server's EHLO replies (plain text only: no STARTTLS).
// A connection ends on both sides as soon as either side closes it, so
// smtptest's cleanup still finds the connections the courier leaves open.
type proxy struct {
	ln     net.Listener
	target string
	hide   bool

	mu    sync.Mutex
	reads []string
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *proxy) relay(client net.Conn) {
	defer client.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		defer client.Close()
		defer up.Close()
		p.forward(up, client)
	}()
	if !p.hide {
		io.Copy(client, up)
		return
	}
	br := bufio.NewReader(up)
	for {
		line, err := br.ReadString('\n')
		if line != "250-PIPELINING\r\n" {
			if _, err := io.WriteString(client, line); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forward copies what the courier sends to the server, recording each read.
func (p *proxy) forward(up, client net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.reads = append(p.reads, string(buf[:n]))
			p.mu.Unlock()
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) recorded() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reads...)
}
