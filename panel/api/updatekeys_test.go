package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

type updateKeyJSON struct {
	ID       string     `json:"id"`
	Account  string     `json:"account"`
	Zone     string     `json:"zone"`
	Host     string     `json:"host"`
	Key      string     `json:"key"`
	Created  time.Time  `json:"created"`
	LastUsed *time.Time `json:"last_used"`
}

func TestUpdateKeys(t *testing.T) {
	e := newEnv(t)
	e.zone("cust", "example.com")
	e.zone("cust2", "other.test")

	var k updateKeyJSON
	res := e.want(e.do("POST", "/api/v1/zones/example.com/updatekeys", "cust", map[string]string{"host": "home"}), 201, "create")
	res.json(t, &k)
	if !strings.HasPrefix(k.Key, "mxu_") || k.ID == "" || k.Host != "home.example.com" || k.Zone != "example.com" || k.Account != "cust" || k.Created.IsZero() || k.LastUsed != nil {
		t.Errorf("created %s", res.body)
	}
	if cc := res.hdr.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	// Host forms; the registrar and the operator act for the zone's account.
	for who, host := range map[string]string{"cust": "@", "reg": "office.example.com.", "ops": "Lab.Example.COM"} {
		var k2 updateKeyJSON
		e.want(e.do("POST", "/api/v1/zones/example.com/updatekeys", who, map[string]string{"host": host}), 201, "create "+host+" as "+who).json(t, &k2)
		if k2.Account != "cust" || !strings.HasSuffix(k2.Host, "example.com") {
			t.Errorf("key for %q as %s: %+v", host, who, k2)
		}
	}
	for _, tc := range []struct {
		body  any
		field string
	}{
		{map[string]string{"host": "home.other.test."}, "host"},
		{map[string]string{"host": "bad name"}, "host"},
		{map[string]string{"host": "*.dyn"}, "host"},
		{map[string]string{"host": "a..b"}, "host"},
		{map[string]any{"host": 7}, "host"},
		{map[string]string{}, "host"},
		{map[string]string{"host": "x", "zone": "other.test"}, "zone"},
		{"", ""},
	} {
		e.wantErr(e.do("POST", "/api/v1/zones/example.com/updatekeys", "cust", tc.body), 400, tc.field, fmt.Sprintf("bad body %v", tc.body))
	}

	// The list holds no secret.
	res = e.want(e.do("GET", "/api/v1/zones/example.com/updatekeys", "cust", nil), 200, "list")
	var list []updateKeyJSON
	res.json(t, &list)
	if len(list) != 4 || strings.Contains(string(res.body), k.Key) || strings.Contains(string(res.body), strings.TrimPrefix(k.Key, "mxu_")) || strings.Contains(string(res.body), `"key"`) {
		t.Errorf("list %s", res.body)
	}
	res = e.want(e.do("GET", "/api/v1/zones/other.test/updatekeys", "cust2", nil), 200, "empty list")
	if strings.TrimSpace(string(res.body)) != "[]" {
		t.Errorf("empty list: %s", res.body)
	}

	// An update key is no API token.
	for _, p := range []string{"/api/v1/zones", "/api/v1/zones/example.com", "/api/v1/zones/example.com/updatekeys", "/api/v1/tokens"} {
		e.wantErr(e.do("GET", p, k.Key, nil), 401, "", "update key as bearer on "+p)
	}
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/records", k.Key, map[string]any{"name": "home", "type": "A", "ttl": 300, "data": "192.0.2.1"}), 401, "", "update key adds a record")
	e.wantErr(e.do("POST", "/api/v1/zones/example.com/updatekeys", k.Key, map[string]string{"host": "home"}), 401, "", "update key makes a key")

	// Revoke: only through its own zone.
	e.zone("cust", "example.net")
	e.wantErr(e.do("DELETE", "/api/v1/zones/example.net/updatekeys/"+k.ID, "cust", nil), 404, "", "revoke through another zone of the account")
	e.wantErr(e.do("DELETE", "/api/v1/zones/other.test/updatekeys/"+k.ID, "cust2", nil), 404, "", "revoke through another tenant's zone")
	e.want(e.do("DELETE", "/api/v1/zones/example.com/updatekeys/"+k.ID, "cust", nil), 204, "revoke")
	e.wantErr(e.do("DELETE", "/api/v1/zones/example.com/updatekeys/"+k.ID, "cust", nil), 404, "", "revoke again")
	if _, err := e.st.LookupUpdateKey(context.Background(), k.Key); err == nil {
		t.Error("revoked key still works")
	}
	e.want(e.do("GET", "/api/v1/zones/example.com/updatekeys", "cust", nil), 200, "list").json(t, &list)
	if len(list) != 3 {
		t.Errorf("%d keys after revoke", len(list))
	}

	// The zone goes, and its keys with it.
	e.want(e.do("DELETE", "/api/v1/zones/example.com", "cust", nil), 204, "delete zone")
	e.wantErr(e.do("GET", "/api/v1/zones/example.com/updatekeys", "cust", nil), 404, "", "keys of a deleted zone")
	e.zone("cust", "example.com")
	e.want(e.do("GET", "/api/v1/zones/example.com/updatekeys", "cust", nil), 200, "list").json(t, &list)
	if len(list) != 0 {
		t.Errorf("a new zone of the same name lists the old one's keys: %+v", list)
	}
}
