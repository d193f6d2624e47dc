package web

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestUpdateKeyForms(t *testing.T) {
	ev := newEnv(t, false)
	ctx := context.Background()
	c := ev.client()
	c.mustLogin("alice@example.test", alicePW)
	tok := c.csrf("/zones/alice.test")

	r := c.post("/zones/alice.test/updatekeys", url.Values{"csrf": {tok}, "host": {"home"}})
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "New update key for home.alice.test")
	m := regexp.MustCompile(`id="new-key" readonly value="(mxu_[^"]+)"`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no key shown:\n%s", r.body)
	}
	k, err := ev.st.LookupUpdateKey(ctx, m[1])
	if err != nil || k.Account != "alice" || k.Host != "home.alice.test" {
		t.Fatalf("key %+v, %v", k, err)
	}
	r = c.get("/zones/alice.test")
	wantBody(t, r, "home.alice.test", k.ID, "/zones/alice.test/updatekeys/"+k.ID+"/revoke")
	if strings.Contains(r.body, m[1]) {
		t.Error("key shown again")
	}

	// A bad host names the field, and keeps what was typed.
	r = c.post("/zones/alice.test/updatekeys", url.Values{"csrf": {tok}, "host": {"home.bob.test."}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `id="key-host-error"`, "not inside", `value="home.bob.test."`)

	// No CSRF token, no key.
	wantStatus(t, c.post("/zones/alice.test/updatekeys", url.Values{"host": {"csrf"}}), http.StatusForbidden)
	wantStatus(t, c.post("/zones/alice.test/updatekeys/"+k.ID+"/revoke", url.Values{}), http.StatusForbidden)

	// Bob can neither make keys in alice's zone nor revoke hers, and is
	// answered as for a missing zone.
	b := ev.client()
	b.mustLogin("bob@example.test", bobPW)
	btok := b.csrf("/zones")
	missing := b.post("/zones/nosuch.test/updatekeys", url.Values{"csrf": {btok}, "host": {"x"}})
	wantStatus(t, missing, http.StatusNotFound)
	for _, r := range []response{
		b.post("/zones/alice.test/updatekeys", url.Values{"csrf": {btok}, "host": {"x"}}),
		b.post("/zones/alice.test/updatekeys/"+k.ID+"/revoke", url.Values{"csrf": {btok}}),
	} {
		wantStatus(t, r, http.StatusNotFound)
		if r.body != missing.body {
			t.Errorf("%s: another tenant's zone answers unlike a missing one", r.Request.URL.Path)
		}
	}
	// Nor through his own zone.
	wantStatus(t, b.post("/zones/bob.test/updatekeys/"+k.ID+"/revoke", url.Values{"csrf": {btok}}), http.StatusNotFound)
	if _, err := ev.st.LookupUpdateKey(ctx, m[1]); err != nil {
		t.Fatalf("key lost to a refused revoke: %v", err)
	}
	if ks, _ := ev.st.UpdateKeys(ctx, "alice", ""); len(ks) != 1 {
		t.Errorf("alice has %d keys, want 1", len(ks))
	}

	r = c.post("/zones/alice.test/updatekeys/"+k.ID+"/revoke", url.Values{"csrf": {tok}})
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/zones/alice.test?done=keyrevoked#updatekeys" {
		t.Errorf("redirect to %q", loc)
	}
	if _, err := ev.st.LookupUpdateKey(ctx, m[1]); err == nil {
		t.Error("revoked key still works")
	}
	wantBody(t, c.get("/zones/alice.test?done=keyrevoked"), "Update key revoked.", "No update keys.")
}
