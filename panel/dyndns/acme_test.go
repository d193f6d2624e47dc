package dyndns

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mxport/mxport/store/record"
)

// acme posts body to /acme/{op} as lego's httpreq provider does, with
// basic auth ("x", token; none when token is "").
func (e *env) acme(t *testing.T, op, token, body string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequest("POST", e.url+"/acme/"+op, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.SetBasicAuth("x", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]string
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: status %d, body %q is not a JSON object", op, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func challenge(fqdn, value string) string {
	b, _ := json.Marshal(map[string]string{"fqdn": fqdn, "value": value})
	return string(b)
}

func TestACME(t *testing.T) {
	e := newEnv(t, Config{})
	e.add(t, "example.com", record.Record{Name: "_acme-challenge.cname", Type: "CNAME", TTL: 300, Data: "elsewhere.example.net."})
	v1 := "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"
	v2 := "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"
	txt := func(t *testing.T, zone, owner string) []string {
		t.Helper()
		return e.rrset(t, zone, owner, "TXT")
	}
	steps := []struct {
		name   string
		op     string
		token  string
		body   string
		status int
		field  string
		check  func(t *testing.T)
	}{
		{"present", "present", e.alice, challenge("_acme-challenge.example.com.", v1), 200, "", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); !slices.Equal(got, []string{`60 "` + v1 + `"`}) {
				t.Errorf("TXT = %v", got)
			}
		}},
		{"present again (lego retries)", "present", e.alice, challenge("_acme-challenge.example.com.", v1), 200, "", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); len(got) != 1 {
				t.Errorf("TXT = %v, want one", got)
			}
		}},
		{"second value (a wildcard and its base)", "present", e.alice, challenge("_ACME-challenge.example.com", v2), 200, "", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); len(got) != 2 {
				t.Errorf("TXT = %v, want two", got)
			}
		}},
		{"cleanup one", "cleanup", e.alice, challenge("_acme-challenge.example.com.", v1), 200, "", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); !slices.Equal(got, []string{`60 "` + v2 + `"`}) {
				t.Errorf("TXT = %v", got)
			}
		}},
		{"cleanup again", "cleanup", e.alice, challenge("_acme-challenge.example.com.", v1), 200, "", nil},
		{"subdomain", "present", e.alice, challenge("_acme-challenge.www.example.org.", v1), 200, "", func(t *testing.T) {
			if got := txt(t, "example.org", "_acme-challenge.www"); !slices.Equal(got, []string{`60 "` + v1 + `"`}) {
				t.Errorf("TXT = %v", got)
			}
		}},
		{"registrar for its customer", "present", e.reg, challenge("_acme-challenge.carol.test.", v1), 200, "", nil},
		{"operator", "present", e.operator, challenge("_acme-challenge.other.test.", v1), 200, "", nil},
		{"another tenant's zone", "present", e.bob, challenge("_acme-challenge.example.com.", v1), 404, "fqdn", nil},
		{"another tenant's cleanup", "cleanup", e.bob, challenge("_acme-challenge.example.com.", v2), 404, "fqdn", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); len(got) != 1 {
				t.Errorf("TXT = %v, want bob's cleanup to leave it", got)
			}
		}},
		{"customer for its registrar", "present", e.carol, challenge("_acme-challenge.example.com.", v1), 404, "fqdn", nil},
		{"zone not hosted", "present", e.alice, challenge("_acme-challenge.nowhere.invalid.", v1), 404, "fqdn", nil},
		{"not a challenge name", "present", e.alice, challenge("www.example.com.", v1), 400, "fqdn", nil},
		{"challenge name of a TLD", "present", e.alice, challenge("_acme-challenge.com.", v1), 400, "fqdn", nil},
		{"bad name", "present", e.alice, challenge("_acme-challenge.exa mple.com.", v1), 400, "fqdn", nil},
		{"no fqdn", "present", e.alice, `{"value":"` + v1 + `"}`, 400, "fqdn", nil},
		{"bad value", "present", e.alice, challenge("_acme-challenge.example.com.", `a" "b`), 400, "value", nil},
		{"empty value", "present", e.alice, challenge("_acme-challenge.example.com.", ""), 400, "value", nil},
		{"CNAME at the name", "present", e.alice, challenge("_acme-challenge.cname.example.com.", v1), 400, "fqdn", nil},
		{"not JSON", "present", e.alice, `fqdn=x`, 400, "", nil},
		{"wrong JSON type", "present", e.alice, `{"fqdn":1}`, 400, "", nil},
		{"too large", "present", e.alice, `{"fqdn":"` + strings.Repeat("a", 10000) + `"}`, 413, "", nil},
		{"bad token", "present", "mxp_wrong", challenge("_acme-challenge.example.com.", v1), 401, "", nil},
		{"no auth", "cleanup", "", challenge("_acme-challenge.example.com.", v2), 401, "", func(t *testing.T) {
			if got := txt(t, "example.com", "_acme-challenge"); len(got) != 1 {
				t.Errorf("TXT = %v", got)
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, body := e.acme(t, s.op, s.token, s.body)
			if status != s.status {
				t.Fatalf("status %d (%v), want %d", status, body, s.status)
			}
			if status != 200 && (body["error"] == "" || body["field"] != s.field) {
				t.Errorf("error body %v, want an error naming field %q", body, s.field)
			}
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

// TestACMERaw: lego httpreq's RAW mode sends the domain and the key
// authorization; the record holds the digest (RFC 8555 8.4).
func TestACMERaw(t *testing.T) {
	e := newEnv(t, Config{})
	keyAuth := "token123.thumbprint456"
	sum := sha256.Sum256([]byte(keyAuth))
	want := `60 "` + base64.RawURLEncoding.EncodeToString(sum[:]) + `"`
	body := `{"domain":"*.example.com","token":"token123","keyAuth":"` + keyAuth + `"}`
	if status, out := e.acme(t, "present", e.alice, body); status != 200 {
		t.Fatalf("present: %d %v", status, out)
	}
	if got := e.rrset(t, "example.com", "_acme-challenge", "TXT"); !slices.Equal(got, []string{want}) {
		t.Fatalf("TXT = %v, want %s", got, want)
	}
	if status, out := e.acme(t, "cleanup", e.alice, body); status != 200 {
		t.Fatalf("cleanup: %d %v", status, out)
	}
	if got := e.rrset(t, "example.com", "_acme-challenge", "TXT"); got != nil {
		t.Fatalf("TXT = %v after cleanup", got)
	}
}
