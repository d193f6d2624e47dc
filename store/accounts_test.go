package store_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/storetest"
)

func TestAccounts(t *testing.T) {
	t.Parallel()
	c := newClock(day(2024, 3, 5))
	o := storetest.Options
	o.Now = c.Now
	s := storetest.NewWith(t, o)

	op, err := s.CreateAccount(bg, "ops", store.RoleOperator, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.Account{ID: "ops", Role: store.RoleOperator, Created: day(2024, 3, 5)}); op != want {
		t.Fatalf("CreateAccount = %+v, want %+v", op, want)
	}
	reg, err := s.CreateAccount(bg, "reg.example", store.RoleRegistrar, "")
	if err != nil {
		t.Fatal(err)
	}
	kid, err := s.CreateAccount(bg, "cust-1", store.RoleCustomer, "reg.example")
	if err != nil {
		t.Fatal(err)
	}
	if kid.Parent != "reg.example" || kid.Role != store.RoleCustomer {
		t.Fatalf("child account %+v", kid)
	}
	if got, err := s.Account(bg, "cust-1"); err != nil || got != kid {
		t.Fatalf("Account(cust-1) = %+v, %v; want %+v", got, err, kid)
	}
	if _, err := s.CreateAccount(bg, "cust_2", store.RoleCustomer, "reg.example"); err != nil {
		t.Fatal(err)
	}
	lone, err := s.CreateAccount(bg, "lone", store.RoleCustomer, "")
	if err != nil {
		t.Fatal(err)
	}

	// Errors.
	for _, tc := range []struct {
		id     string
		role   store.Role
		parent string
		is     error
		field  string
	}{
		{"ops", store.RoleOperator, "", store.ErrExists, "account"},
		{"", store.RoleCustomer, "", nil, "account"},
		{"Upper", store.RoleCustomer, "", nil, "account"},
		{"with space", store.RoleCustomer, "", nil, "account"},
		{"{tag}", store.RoleCustomer, "", nil, "account"},
		{"a:b", store.RoleCustomer, "", nil, "account"},
		{strings.Repeat("a", 65), store.RoleCustomer, "", nil, "account"},
		{"x", "admin", "", nil, "role"},
		{"x", store.RoleCustomer, "missing", store.ErrNotFound, ""},
		{"x", store.RoleCustomer, "lone", nil, "role"},         // a customer owns no accounts
		{"x", store.RoleCustomer, "ops", nil, "role"},          // nor does an operator
		{"x", store.RoleRegistrar, "reg.example", nil, "role"}, // a registrar owns customers only
		{"x", store.RoleOperator, "reg.example", nil, "role"},
	} {
		_, err := s.CreateAccount(bg, tc.id, tc.role, tc.parent)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || record.Field(err) != tc.field {
			t.Errorf("CreateAccount(%q, %q, %q): %v (field %q); want %v on %q", tc.id, tc.role, tc.parent, err, record.Field(err), tc.is, tc.field)
		}
	}
	if _, err := s.Account(bg, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused account exists: %v", err)
	}
	if err := store.CheckAccountID(strings.Repeat("a", 64)); err != nil {
		t.Fatalf("CheckAccountID of 64 characters: %v", err)
	}
	if _, err := store.ParseRole("Registrar"); err != nil {
		t.Fatalf("ParseRole(Registrar): %v", err)
	}

	ids := func(as []store.Account) []string {
		out := []string{}
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	for _, tc := range []struct {
		parent string
		want   []string
	}{
		{"", []string{"cust-1", "cust_2", "lone", "ops", "reg.example"}},
		{"reg.example", []string{"cust-1", "cust_2"}},
		{"lone", []string{}},
		{"missing", []string{}},
	} {
		got, err := s.Accounts(bg, tc.parent)
		if err != nil || !reflect.DeepEqual(ids(got), tc.want) {
			t.Errorf("Accounts(%q) = %q, %v; want %q", tc.parent, ids(got), err, tc.want)
		}
	}

	// EnsureAccount: returns what exists, creates what is missing, refuses
	// another role.
	if a, err := s.EnsureAccount(bg, "reg.example", store.RoleRegistrar); err != nil || a != reg {
		t.Fatalf("EnsureAccount(existing) = %+v, %v; want %+v", a, err, reg)
	}
	a, err := s.EnsureAccount(bg, "new-cust", store.RoleCustomer)
	if err != nil || a.ID != "new-cust" || a.Role != store.RoleCustomer {
		t.Fatalf("EnsureAccount(new) = %+v, %v", a, err)
	}
	if got, err := s.Account(bg, "new-cust"); err != nil || got != a {
		t.Fatalf("Account(new-cust) = %+v, %v", got, err)
	}
	if _, err := s.EnsureAccount(bg, "lone", store.RoleRegistrar); record.Field(err) != "role" {
		t.Fatalf("EnsureAccount with another role: %v, want an error on role", err)
	}
	if _, err := s.EnsureAccount(bg, "Bad Id", store.RoleCustomer); record.Field(err) != "account" {
		t.Fatalf("EnsureAccount(Bad Id): %v, want an error on account", err)
	}
	if a, err := s.EnsureAccount(bg, "lone", store.RoleCustomer); err != nil || a != lone {
		t.Fatalf("EnsureAccount(lone) = %+v, %v", a, err)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if _, err := s.CreateAccount(bg, "reg", store.RoleRegistrar, ""); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := s.CreateToken(bg, "acme", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "mxp_") || len(secret) < 36 || tok.ID == "" || tok.Account != "acme" || tok.Role != store.RoleCustomer || tok.Name != "ci" {
		t.Fatalf("CreateToken = %q, %+v", secret, tok)
	}
	got, err := s.LookupToken(bg, secret)
	if err != nil || got != tok {
		t.Fatalf("LookupToken = %+v, %v; want %+v", got, err, tok)
	}
	secret2, tok2, err := s.CreateToken(bg, "acme", "")
	if err != nil || secret2 == secret || tok2.ID == tok.ID {
		t.Fatalf("second token %q %+v, %v", secret2, tok2, err)
	}
	regSecret, regTok, err := s.CreateToken(bg, "reg", "")
	if err != nil || regTok.Role != store.RoleRegistrar {
		t.Fatalf("registrar token %+v, %v", regTok, err)
	}
	if got, err := s.LookupToken(bg, regSecret); err != nil || got.Role != store.RoleRegistrar || got.Account != "reg" {
		t.Fatalf("LookupToken(registrar) = %+v, %v", got, err)
	}

	for _, bad := range []string{
		"", "mxp_", secret + "x", secret[:len(secret)-1], strings.ToUpper(secret), "Bearer " + secret,
		"mxp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", strings.TrimPrefix(secret, "mxp_"), strings.Repeat("mxp_", 100),
	} {
		if got, err := s.LookupToken(bg, bad); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LookupToken(%q) = %+v, %v; want ErrNotFound", bad, got, err)
		}
	}
	if _, _, err := s.CreateToken(bg, "nobody", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateToken for a missing account: %v", err)
	}
	if _, _, err := s.CreateToken(bg, "acme", strings.Repeat("n", 101)); record.Field(err) != "name" {
		t.Fatalf("CreateToken with a long name: %v", err)
	}

	list, err := s.Tokens(bg, "acme")
	if err != nil || len(list) != 2 {
		t.Fatalf("Tokens = %+v, %v", list, err)
	}

	// Revoke: the token stops working, the other one does not.
	if err := s.RevokeToken(bg, "reg", tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeToken by another account: %v, want ErrNotFound", err)
	}
	if _, err := s.LookupToken(bg, secret); err != nil {
		t.Fatalf("token revoked by another account: %v", err)
	}
	if err := s.RevokeToken(bg, "acme", tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupToken(bg, secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LookupToken of a revoked token: %v, want ErrNotFound", err)
	}
	if _, err := s.LookupToken(bg, secret2); err != nil {
		t.Fatalf("the other token stopped working: %v", err)
	}
	if err := s.RevokeToken(bg, "acme", tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second RevokeToken: %v, want ErrNotFound", err)
	}
	if list, err := s.Tokens(bg, "acme"); err != nil || len(list) != 1 || list[0].ID != tok2.ID {
		t.Fatalf("Tokens after revoke = %+v, %v", list, err)
	}
}

func TestUsers(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	const pw = "correct horse battery"
	u, err := s.CreateUser(bg, " Alice@Example.COM ", "acme", pw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "alice@example.com" || u.Account != "acme" || u.Role != store.RoleCustomer {
		t.Fatalf("CreateUser = %+v", u)
	}
	got, err := s.Authenticate(bg, "ALICE@example.com", pw)
	if err != nil || got != u {
		t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, u)
	}
	for _, tc := range []struct{ email, pw string }{
		{"alice@example.com", pw + "x"},
		{"alice@example.com", ""},
		{"alice@example.com", strings.ToUpper(pw)},
		{"bob@example.com", pw},
		{"", pw},
	} {
		if _, err := s.Authenticate(bg, tc.email, tc.pw); !errors.Is(err, store.ErrBadCredentials) {
			t.Errorf("Authenticate(%q, %q): %v, want ErrBadCredentials", tc.email, tc.pw, err)
		}
	}

	for _, tc := range []struct {
		email, account, pw string
		is                 error
		field              string
	}{
		{"alice@example.com", "acme", pw, store.ErrExists, "email"},
		{"bob@example.com", "acme", "short", nil, "password"},
		{"bob@example.com", "acme", strings.Repeat("p", store.MinPasswordLen-1), nil, "password"},
		{"bob@example.com", "acme", strings.Repeat("p", 1025), nil, "password"},
		{"not an email", "acme", pw, nil, "email"},
		{"Bob <bob@example.com>", "acme", pw, nil, "email"},
		{"bob@example.com", "nobody", pw, store.ErrNotFound, ""},
	} {
		_, err := s.CreateUser(bg, tc.email, tc.account, tc.pw)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || record.Field(err) != tc.field {
			t.Errorf("CreateUser(%q, %q, %q): %v (field %q); want %v on %q", tc.email, tc.account, tc.pw, err, record.Field(err), tc.is, tc.field)
		}
	}
	if _, err := s.Authenticate(bg, "bob@example.com", "short"); !errors.Is(err, store.ErrBadCredentials) {
		t.Fatalf("a refused user can sign in: %v", err)
	}

	const pw2 = "another long passphrase"
	if err := s.SetPassword(bg, "alice@example.com", "short"); record.Field(err) != "password" {
		t.Fatalf("SetPassword(short): %v, want an error on password", err)
	}
	if err := s.SetPassword(bg, "nobody@example.com", pw2); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetPassword of a missing user: %v, want ErrNotFound", err)
	}
	if err := s.SetPassword(bg, "Alice@example.com", pw2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(bg, "alice@example.com", pw); !errors.Is(err, store.ErrBadCredentials) {
		t.Fatalf("old password after SetPassword: %v, want ErrBadCredentials", err)
	}
	if _, err := s.Authenticate(bg, "alice@example.com", pw2); err != nil {
		t.Fatalf("new password: %v", err)
	}
}

// TestNoSecretsAtRest dumps every value of every key and checks that no
// token secret or password is stored in clear.
func TestNoSecretsAtRest(t *testing.T) {
	t.Parallel()
	url := storetest.NewURL(t)
	s, err := store.Open(bg, url, storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	withAccount(t, s)
	mustZone(t, s, "example.com")

	const pw1, pw2 = "first-secret-passphrase", "second-secret-passphrase"
	if _, err := s.CreateUser(bg, "alice@example.com", "acme", pw1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(bg, "alice@example.com", pw2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(bg, "bob@example.com", "acme", pw1); err != nil {
		t.Fatal(err)
	}
	tok1, _, err := s.CreateToken(bg, "acme", "one")
	if err != nil {
		t.Fatal(err)
	}
	tok2, t2, err := s.CreateToken(bg, "acme", "two")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(bg, "acme", t2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupToken(bg, tok1); err != nil {
		t.Fatal(err)
	}
	uk1, _, err := s.CreateUpdateKey(bg, "example.com", "home")
	if err != nil {
		t.Fatal(err)
	}
	uk2, k2, err := s.CreateUpdateKey(bg, "example.com", "office")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeUpdateKey(bg, "acme", "example.com", k2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupUpdateKey(bg, uk1); err != nil {
		t.Fatal(err)
	}

	dump := dumpKeyspace(t, rawClient(t, url))
	if !strings.Contains(dump, "$argon2id$") || !strings.Contains(dump, "alice@example.com") || !strings.Contains(dump, "home.example.com") {
		t.Fatalf("the dump does not hold the users; it is:\n%s", dump)
	}
	for _, secret := range []string{pw1, pw2, tok1, tok2,
		strings.TrimPrefix(tok1, "mxp_"), strings.TrimPrefix(tok2, "mxp_"),
		uk1, uk2, strings.TrimPrefix(uk1, "mxu_"), strings.TrimPrefix(uk2, "mxu_")} {
		if strings.Contains(dump, secret) {
			t.Errorf("secret %q stored in clear", secret)
		}
	}
}

// dumpKeyspace returns every key with its type and its whole value.
func dumpKeyspace(t *testing.T, c *redis.Client) string {
	t.Helper()
	var b strings.Builder
	n := 0
	iter := c.Scan(bg, 0, "*", 100).Iterator()
	for iter.Next(bg) {
		key := iter.Val()
		n++
		typ, err := c.Type(bg, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var val any
		switch typ {
		case "string":
			val, err = c.Get(bg, key).Result()
		case "hash":
			val, err = c.HGetAll(bg, key).Result()
		case "set":
			val, err = c.SMembers(bg, key).Result()
		case "list":
			val, err = c.LRange(bg, key, 0, -1).Result()
		case "zset":
			val, err = c.ZRangeWithScores(bg, key, 0, -1).Result()
		case "stream":
			val, err = c.XRange(bg, key, "-", "+").Result()
		default:
			t.Fatalf("key %s has type %s, which the dump does not read", key, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %v\n", key, typ, val)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("empty keyspace")
	}
	return b.String()
}

// TestSessions runs on a clock years behind Redis's: Redis must still keep
// the session for its ttl, while expiry follows the store's clock.
func TestSessions(t *testing.T) {
	t.Parallel()
	start := day(2024, 3, 5)
	c := newClock(start)
	s := newStoreAt(t, c)
	u, err := s.CreateUser(bg, "ann@example.com", "acme", "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	secret, sess, err := s.CreateSession(bg, u, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupSession(bg, secret)
	if err != nil || got.Email != "ann@example.com" || got.Account != "acme" || got.CSRF != sess.CSRF || got.CSRF == "" {
		t.Fatalf("LookupSession: %+v, %v", got, err)
	}
	if _, err := s.LookupSession(bg, secret+"x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong secret: %v", err)
	}
	c.Set(start.Add(61 * time.Minute))
	if _, err := s.LookupSession(bg, secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	c.Set(start)
	if err := s.DeleteSession(bg, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupSession(bg, secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
}

// TestEndOtherSessions: after a password change the user's other sessions
// end, the one kept goes on, another user's are untouched; "" ends all.
func TestEndOtherSessions(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ann, err := s.CreateUser(bg, "ann@example.com", "acme", "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := s.CreateUser(bg, "bob@example.com", "acme", "another long password")
	if err != nil {
		t.Fatal(err)
	}
	var anns []string
	for range 3 {
		secret, _, err := s.CreateSession(bg, ann, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		anns = append(anns, secret)
	}
	bobs, _, err := s.CreateSession(bg, bob, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	live := func(secret string) bool {
		_, err := s.LookupSession(bg, secret)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	if err := s.EndOtherSessions(bg, "ann@example.com", anns[1]); err != nil {
		t.Fatal(err)
	}
	if live(anns[0]) || !live(anns[1]) || live(anns[2]) || !live(bobs) {
		t.Fatalf("after ending ann's other sessions: live %v %v %v, bob's %v; want false true false, true",
			live(anns[0]), live(anns[1]), live(anns[2]), live(bobs))
	}
	if err := s.EndOtherSessions(bg, "ann@example.com", ""); err != nil {
		t.Fatal(err)
	}
	if live(anns[1]) || !live(bobs) {
		t.Fatalf("after ending all of ann's sessions: ann's kept one live %v, bob's %v", live(anns[1]), live(bobs))
	}
}
