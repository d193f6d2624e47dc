package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

func TestUpdateKeys(t *testing.T) {
	t.Parallel()
	c := newClock(day(2026, 5, 1))
	s := newStoreAt(t, c)
	mustZone(t, s, "example.com")
	mustZone(t, s, "example.org")
	if _, err := s.CreateAccount(bg, "bob", store.RoleCustomer, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateZone(bg, "bob.test", "bob"); err != nil {
		t.Fatal(err)
	}

	secret, k, err := s.CreateUpdateKey(bg, "Example.COM.", "Home")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "mxu_") || len(secret) < 36 || k.ID == "" || k.Account != "acme" ||
		k.Zone != "example.com" || k.Host != "home.example.com" || !k.Created.Equal(day(2026, 5, 1)) || !k.LastUsed.IsZero() {
		t.Fatalf("CreateUpdateKey = %q, %+v", secret, k)
	}
	// Host forms: apex, absolute inside the zone.
	for host, want := range map[string]string{"@": "example.com", "": "example.com", "a.b.example.com.": "a.b.example.com", "x.example.com": "x.example.com"} {
		_, k, err := s.CreateUpdateKey(bg, "example.com", host)
		if err != nil || k.Host != want {
			t.Errorf("CreateUpdateKey(%q) = %+v, %v; want host %s", host, k, err, want)
		}
	}
	for _, bad := range []string{"*", "*.dyn", "home.example.org.", "a..b", "bad name", "-x-.ok." + strings.Repeat("a", 64), strings.Repeat("a.", 130)} {
		if _, k, err := s.CreateUpdateKey(bg, "example.com", bad); record.Field(err) != "host" {
			t.Errorf("CreateUpdateKey(%q) = %+v, %v; want a host error", bad, k, err)
		}
	}
	if _, _, err := s.CreateUpdateKey(bg, "missing.test", "home"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateUpdateKey in a missing zone: %v", err)
	}

	c.Set(day(2026, 5, 2))
	got, err := s.LookupUpdateKey(bg, secret)
	if err != nil || got.ID != k.ID || got.Host != "home.example.com" || got.Account != "acme" || !got.LastUsed.Equal(day(2026, 5, 2)) {
		t.Fatalf("LookupUpdateKey = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "mxu_", secret + "x", secret[:len(secret)-1], strings.ToUpper(secret),
		strings.TrimPrefix(secret, "mxu_"), "mxp_" + strings.TrimPrefix(secret, "mxu_"), strings.Repeat("mxu_", 100)} {
		if got, err := s.LookupUpdateKey(bg, bad); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LookupUpdateKey(%q) = %+v, %v; want ErrNotFound", bad, got, err)
		}
	}
	// An update key is no API token, and the other way round.
	if _, err := s.LookupToken(bg, secret); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LookupToken(update key): %v, want ErrNotFound", err)
	}
	tok, _, err := s.CreateToken(bg, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupUpdateKey(bg, tok); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LookupUpdateKey(API token): %v, want ErrNotFound", err)
	}

	// Lists: per account, per zone, no secrets, last use shown.
	secretOrg, kOrg, err := s.CreateUpdateKey(bg, "example.org", "home")
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.UpdateKeys(bg, "acme", "")
	if err != nil || len(all) != 6 {
		t.Fatalf("UpdateKeys(acme) = %+v, %v", all, err)
	}
	com, err := s.UpdateKeys(bg, "acme", "example.com")
	if err != nil || len(com) != 5 {
		t.Fatalf("UpdateKeys(acme, example.com) = %+v, %v", com, err)
	}
	for _, x := range com {
		if x.ID == k.ID && !x.LastUsed.Equal(day(2026, 5, 2)) {
			t.Errorf("listed key %+v: last use not shown", x)
		}
	}
	if bobs, err := s.UpdateKeys(bg, "bob", ""); err != nil || len(bobs) != 0 {
		t.Errorf("UpdateKeys(bob) = %+v, %v", bobs, err)
	}

	// Revoke: only the account's, only through its own zone.
	if err := s.RevokeUpdateKey(bg, "bob", "", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke by another account: %v", err)
	}
	if err := s.RevokeUpdateKey(bg, "acme", "example.org", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke through another zone: %v", err)
	}
	if _, err := s.LookupUpdateKey(bg, secret); err != nil {
		t.Fatalf("key revoked by a refused revoke: %v", err)
	}
	if err := s.RevokeUpdateKey(bg, "acme", "example.com", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupUpdateKey(bg, secret); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoked key still works: %v", err)
	}
	if err := s.RevokeUpdateKey(bg, "acme", "example.com", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second revoke: %v", err)
	}

	// The zone goes: its keys stop working, also once a zone of the same
	// name and account is back; the other zone's key still works.
	if err := s.DeleteZone(bg, "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupUpdateKey(bg, secretOrg); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("key of a deleted zone: %v", err)
	}
	secretOrg2, _, err := s.CreateUpdateKey(bg, "example.org", "home") // no zone: refused
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateUpdateKey in a deleted zone: %q %v", secretOrg2, err)
	}
	mustZone(t, s, "example.org")
	if _, err := s.LookupUpdateKey(bg, secretOrg); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("key of a deleted zone works in its successor: %v", err)
	}
	if l, err := s.UpdateKeys(bg, "acme", "example.org"); err != nil || len(l) != 0 {
		t.Errorf("UpdateKeys of the new example.org = %+v, %v", l, err)
	}
	if err := s.RevokeUpdateKey(bg, "acme", "", kOrg.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the dead key is still listed for revocation: %v", err)
	}
	if l, err := s.UpdateKeys(bg, "acme", ""); err != nil || len(l) != 4 {
		t.Errorf("UpdateKeys(acme) at the end = %+v, %v", l, err)
	}
}
