package dyndns

import (
	"slices"
	"strings"
	"testing"

	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

// newKey makes an update key for host in zone and returns its secret.
func (e *env) newKey(t *testing.T, zone, host string) string {
	t.Helper()
	secret, _, err := e.st.CreateUpdateKey(e.ctx, zone, host)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func TestUpdateKey(t *testing.T) {
	e := newEnv(t, Config{})
	key := e.newKey(t, "example.com", "home")
	apexKey := e.newKey(t, "example.org", "@")
	revoked, rk, err := e.st.CreateUpdateKey(e.ctx, "example.com", "old")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.RevokeUpdateKey(e.ctx, "alice", "example.com", rk.ID); err != nil {
		t.Fatal(err)
	}
	e.add(t, "example.com", record.Record{Name: "www", Type: "A", TTL: 300, Data: "192.0.2.80"})

	steps := []nicStep{
		{"A", key, "hostname=home.example.com&myip=192.0.2.1", 200, "good 192.0.2.1\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.1"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"nochg", key, "hostname=home.example.com&myip=192.0.2.1", 200, "nochg 192.0.2.1\n", nil},
		{"AAAA", key, "hostname=Home.Example.com.&myipv6=2001:db8::7", 200, "good 2001:db8::7\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "AAAA"); !slices.Equal(got, []string{"60 2001:db8::7"}) {
				t.Errorf("AAAA = %v", got)
			}
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.1"}) {
				t.Errorf("A = %v, want it kept", got)
			}
		}},
		{"both families", key, "hostname=home.example.com&myip=192.0.2.2,2001:db8::8", 200, "good 192.0.2.2,2001:db8::8\n", nil},
		{"apex key", apexKey, "hostname=example.org&myip=192.0.2.3", 200, "good 192.0.2.3\n", func(t *testing.T) {
			if got := e.rrset(t, "example.org", "@", "A"); !slices.Equal(got, []string{"60 192.0.2.3"}) {
				t.Errorf("A = %v", got)
			}
		}},
		{"another host of its zone", key, "hostname=www.example.com&myip=192.0.2.66", 200, "nohost\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "www", "A"); !slices.Equal(got, []string{"300 192.0.2.80"}) {
				t.Errorf("www A = %v, want it untouched", got)
			}
		}},
		{"a name below its host", key, "hostname=sub.home.example.com&myip=192.0.2.66", 200, "nohost\n", nil},
		{"the apex of its zone", key, "hostname=example.com&myip=192.0.2.66", 200, "nohost\n", nil},
		{"another zone of the account", key, "hostname=home.example.org&myip=192.0.2.66", 200, "nohost\n", func(t *testing.T) {
			if got := e.rrset(t, "example.org", "home", "A"); got != nil {
				t.Errorf("home.example.org A = %v", got)
			}
		}},
		{"apex key, a host below", apexKey, "hostname=home.example.org&myip=192.0.2.66", 200, "nohost\n", nil},
		{"another tenant's zone", key, "hostname=home.other.test&myip=192.0.2.66", 200, "nohost\n", nil},
		// ddclient sends the hosts sharing a server and password in one
		// request and reads one line per host, in order.
		{"several hostnames", key, "hostname=www.example.com,home.example.com,home.example.org,bad!name.example.com&myip=192.0.2.4", 200,
			"nohost\ngood 192.0.2.4\nnohost\nnotfqdn\n", func(t *testing.T) {
				if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.4"}) {
					t.Errorf("A = %v", got)
				}
				if got := e.rrset(t, "example.com", "www", "A"); !slices.Equal(got, []string{"300 192.0.2.80"}) {
					t.Errorf("www A = %v", got)
				}
			}},
		{"revoked", revoked, "hostname=old.example.com&myip=192.0.2.66", 401, "badauth\n", nil},
		{"wrong key", key[:len(key)-2] + "xx", "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", nil},
		{"key without its prefix", strings.TrimPrefix(key, "mxu_"), "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", nil},
		{"key as an API token's prefix", "mxp_" + strings.TrimPrefix(key, "mxu_"), "hostname=home.example.com&myip=192.0.2.66", 401, "badauth\n", func(t *testing.T) {
			if got := e.rrset(t, "example.com", "home", "A"); !slices.Equal(got, []string{"60 192.0.2.4"}) {
				t.Errorf("A = %v", got)
			}
		}},
		// The account's API token still updates any of its names.
		{"token beside keys", e.alice, "hostname=www.example.com&myip=192.0.2.81", 200, "good 192.0.2.81\n", nil},
	}
	e.run(t, steps)
	k, err := e.st.UpdateKeys(e.ctx, "alice", "example.com")
	if err != nil || len(k) != 1 || k[0].LastUsed.IsZero() {
		t.Errorf("UpdateKeys after use = %+v, %v; want one key with its last use", k, err)
	}
}

func TestUpdateKeyZoneDeleted(t *testing.T) {
	e := newEnv(t, Config{})
	key := e.newKey(t, "example.org", "home")
	if _, body := e.nic(t, key, "hostname=home.example.org&myip=192.0.2.1"); body != "good 192.0.2.1\n" {
		t.Fatalf("before: %q", body)
	}
	if err := e.st.DeleteZone(e.ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	if status, body := e.nic(t, key, "hostname=home.example.org&myip=192.0.2.2"); status != 401 || body != "badauth\n" {
		t.Fatalf("zone deleted: %d %q, want 401 badauth", status, body)
	}
	// A zone of the same name, even the same account's, is another zone.
	if _, err := e.st.CreateZone(e.ctx, "example.org", "alice"); err != nil {
		t.Fatal(err)
	}
	if status, body := e.nic(t, key, "hostname=home.example.org&myip=192.0.2.2"); status != 401 || body != "badauth\n" {
		t.Fatalf("zone created again: %d %q, want 401 badauth", status, body)
	}
	if got := e.rrset(t, "example.org", "home", "A"); got != nil {
		t.Fatalf("A = %v", got)
	}
}

// A child zone of another tenant inside the key's zone decides for the
// names inside it: the key's zone no longer holds its host.
func TestUpdateKeyChildZone(t *testing.T) {
	e := newEnv(t, Config{})
	key := e.newKey(t, "example.com", "home.lab")
	if _, err := e.st.CreateZone(e.ctx, "lab.example.com", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, body := e.nic(t, key, "hostname=home.lab.example.com&myip=192.0.2.1"); body != "nohost\n" {
		t.Fatalf("host in another tenant's child zone: %q, want nohost", body)
	}
	if got := e.rrset(t, "lab.example.com", "home", "A"); got != nil {
		t.Fatalf("child zone A = %v", got)
	}
}

func TestUpdateKeyAbuse(t *testing.T) {
	e := newEnv(t, Config{RequestsPerMinute: 2})
	key := e.newKey(t, "example.com", "home")
	key2 := e.newKey(t, "example.com", "home")
	for i := 0; i < 2; i++ {
		if _, body := e.nic(t, key, "hostname=home.example.com&myip=192.0.2.1"); !strings.HasPrefix(body, "good") && !strings.HasPrefix(body, "nochg") {
			t.Fatalf("request %d: %q", i+1, body)
		}
	}
	if status, body := e.nic(t, key, "hostname=home.example.com&myip=192.0.2.2"); status != 200 || body != "abuse\n" {
		t.Fatalf("over the limit: %d %q", status, body)
	}
	// Another key of the same host, and the account's token, have their
	// own budgets.
	if _, body := e.nic(t, key2, "hostname=home.example.com&myip=192.0.2.2"); body != "good 192.0.2.2\n" {
		t.Fatalf("second key: %q", body)
	}
	if _, body := e.nic(t, e.alice, "hostname=home.example.com&myip=192.0.2.3"); body != "good 192.0.2.3\n" {
		t.Fatalf("token: %q", body)
	}
}

// The ACME helpers take API tokens only.
func TestUpdateKeyNotForACME(t *testing.T) {
	e := newEnv(t, Config{})
	key := e.newKey(t, "example.com", "_acme-challenge")
	status, _ := e.acme(t, "present", key, challenge("_acme-challenge.example.com.", "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"))
	if status != 401 {
		t.Fatalf("update key on /acme/present: %d, want 401", status)
	}
	if got := e.rrset(t, "example.com", "_acme-challenge", "TXT"); got != nil {
		t.Fatalf("TXT = %v", got)
	}
}

// A store that is down at the key's lookup gives 911 (try later), not
// badauth: the router must not believe its key is gone.
func TestUpdateKey911(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Open(t, storetest.Options)
	e := newEnv(t, Config{Store: st})
	key := e.newKey(t, "example.com", "home")
	if _, body := e.nic(t, key, "hostname=home.example.com&myip=192.0.2.1"); body != "good 192.0.2.1\n" {
		t.Fatalf("before: %q", body)
	}
	srv.Stop()
	if status, body := e.nic(t, key, "hostname=home.example.com,www.example.com&myip=192.0.2.2"); status != 200 || body != "911\n911\n" {
		t.Fatalf("store down: %d %q, want 200 \"911\\n911\\n\"", status, body)
	}
}
