package dnsserver

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strings"

	"github.com/miekg/dns"
)

// tsigProvider implements dns.TsigProvider over the index's current keys,
// so keys created or deleted at run time take effect at once (RFC 8945).
// An unknown key gives dns.ErrSecret, a wrong MAC dns.ErrSig; miekg/dns
// checks the time (fudge) after the MAC.
type tsigProvider struct{ ix *Index }

func (p tsigProvider) mac(msg []byte, t *dns.TSIG) ([]byte, error) {
	k, ok := p.ix.Key(t.Hdr.Name)
	if !ok {
		return nil, dns.ErrSecret
	}
	if !strings.EqualFold(dns.Fqdn(t.Algorithm), k.Algorithm) {
		return nil, dns.ErrKeyAlg
	}
	secret, err := base64.StdEncoding.DecodeString(k.Secret)
	if err != nil {
		return nil, dns.ErrSecret
	}
	var h func() hash.Hash
	switch k.Algorithm {
	case dns.HmacSHA256:
		h = sha256.New
	case dns.HmacSHA512:
		h = sha512.New
	case dns.HmacSHA1:
		h = sha1.New
	default:
		return nil, dns.ErrKeyAlg
	}
	m := hmac.New(h, secret)
	m.Write(msg)
	return m.Sum(nil), nil
}

// Generate implements dns.TsigProvider.
func (p tsigProvider) Generate(msg []byte, t *dns.TSIG) ([]byte, error) { return p.mac(msg, t) }

// Verify implements dns.TsigProvider.
func (p tsigProvider) Verify(msg []byte, t *dns.TSIG) error {
	want, err := p.mac(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return dns.ErrSig
	}
	return nil
}
