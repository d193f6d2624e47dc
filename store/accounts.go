package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/argon2"

	"github.com/mxport/mxport/store/record"
)

// Role is what an account may do.
type Role string

// The roles. A registrar owns the customer accounts it creates.
const (
	RoleOperator  Role = "operator"  // everything
	RoleRegistrar Role = "registrar" // its own customers and their zones
	RoleCustomer  Role = "customer"  // its own zones
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(s)); r {
	case RoleOperator, RoleRegistrar, RoleCustomer:
		return r, nil
	}
	return "", &record.FieldError{Field: "role", Msg: fmt.Sprintf("role %q is not operator, registrar or customer", s)}
}

// Account is a tenant: it owns zones, users and tokens.
type Account struct {
	ID      string    `json:"id"`
	Role    Role      `json:"role"`
	Parent  string    `json:"parent,omitempty"` // the registrar that created it
	Created time.Time `json:"created"`
}

// CheckAccountID validates an account id: 1-64 of a-z, 0-9, '-', '_', '.'.
func CheckAccountID(id string) error {
	if id == "" || len(id) > 64 {
		return &record.FieldError{Field: "account", Msg: "account id must be 1-64 characters"}
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return &record.FieldError{Field: "account", Msg: fmt.Sprintf("account id %q: only a-z, 0-9, '-', '_' and '.' are allowed", id)}
		}
	}
	return nil
}

// CreateAccount creates account id with role, owned by parent ("" for
// none; a parent must be a registrar and the role customer).
func (s *Store) CreateAccount(ctx context.Context, id string, role Role, parent string) (Account, error) {
	if err := CheckAccountID(id); err != nil {
		return Account{}, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return Account{}, err
	}
	if parent != "" {
		p, err := s.Account(ctx, parent)
		if err != nil {
			return Account{}, fmt.Errorf("create account %s: parent: %w", id, err)
		}
		if p.Role != RoleRegistrar || role != RoleCustomer {
			return Account{}, &record.FieldError{Field: "role", Msg: "only a registrar owns accounts, and only customer ones"}
		}
	}
	a := Account{ID: id, Role: role, Parent: parent, Created: s.opts.Now().UTC().Truncate(time.Second)}
	ok, err := s.rdb.HSetNX(ctx, keyAccount(id), "role", string(role)).Result()
	if err != nil {
		return Account{}, fmt.Errorf("create account %s: %w", id, unavailable(err))
	}
	if !ok {
		return Account{}, &existsError{field: "account", msg: fmt.Sprintf("account %s already exists", id)}
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyAccount(id), "parent", parent, "created", unixString(a.Created))
		p.SAdd(ctx, keyAccounts, id)
		if parent != "" {
			p.SAdd(ctx, keyAcctKids(parent), id)
		}
		return nil
	})
	if err != nil {
		return Account{}, fmt.Errorf("create account %s: %w", id, unavailable(err))
	}
	return a, nil
}

// EnsureAccount returns account id, creating it with role when missing. An
// existing account with another role is an error.
func (s *Store) EnsureAccount(ctx context.Context, id string, role Role) (Account, error) {
	a, err := s.Account(ctx, id)
	if errors.Is(err, ErrNotFound) {
		a, err = s.CreateAccount(ctx, id, role, "")
		if errors.Is(err, ErrExists) { // created meanwhile
			a, err = s.Account(ctx, id)
		}
	}
	if err != nil {
		return Account{}, err
	}
	if a.Role != role {
		return Account{}, &record.FieldError{Field: "role", Msg: fmt.Sprintf("account %s has role %s, not %s", id, a.Role, role)}
	}
	return a, nil
}

// Account reads one account.
func (s *Store) Account(ctx context.Context, id string) (Account, error) {
	h, err := s.rdb.HGetAll(ctx, keyAccount(id)).Result()
	if err != nil {
		return Account{}, fmt.Errorf("read account %s: %w", id, unavailable(err))
	}
	if len(h) == 0 {
		return Account{}, fmt.Errorf("account %s: %w", id, ErrNotFound)
	}
	return Account{ID: id, Role: Role(h["role"]), Parent: h["parent"], Created: unixTime(h["created"])}, nil
}

// Accounts lists all accounts, or those owned by parent when it is not "".
func (s *Store) Accounts(ctx context.Context, parent string) ([]Account, error) {
	key := keyAccounts
	if parent != "" {
		key = keyAcctKids(parent)
	}
	ids, err := s.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", unavailable(err))
	}
	sort.Strings(ids)
	out := make([]Account, 0, len(ids))
	for _, id := range ids {
		a, err := s.Account(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// User is a person who signs in to the panel; it acts for its account.
type User struct {
	Email   string    `json:"email"`
	Account string    `json:"account"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
}

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 10

// Argon2id parameters (RFC 9106 second recommendation, OWASP's minimum).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashPassword(pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

func checkPassword(encoded, pw string) bool {
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(f[4])
	want, err2 := b64.DecodeString(f[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is checked for unknown users, so a miss costs as much as a hit.
var dummyHash = hashPassword("mxport-dummy-password")

// CheckEmail validates and canonicalises (lower case) an email address.
func CheckEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", &record.FieldError{Field: "email", Msg: fmt.Sprintf("%q is not an email address", email)}
	}
	return e, nil
}

func checkNewPassword(pw string) error {
	if len(pw) < MinPasswordLen {
		return &record.FieldError{Field: "password", Msg: fmt.Sprintf("password must be at least %d characters", MinPasswordLen)}
	}
	if len(pw) > 1024 {
		return &record.FieldError{Field: "password", Msg: "password is longer than 1024 characters"}
	}
	return nil
}

// CreateUser creates a user of account (which must exist) with password,
// stored as an argon2id hash.
func (s *Store) CreateUser(ctx context.Context, email, account, password string) (User, error) {
	e, err := CheckEmail(email)
	if err != nil {
		return User{}, err
	}
	if err := checkNewPassword(password); err != nil {
		return User{}, err
	}
	a, err := s.Account(ctx, account)
	if err != nil {
		return User{}, fmt.Errorf("create user %s: %w", e, err)
	}
	u := User{Email: e, Account: a.ID, Role: a.Role, Created: s.opts.Now().UTC().Truncate(time.Second)}
	ok, err := s.rdb.HSetNX(ctx, keyUser(e), "account", a.ID).Result()
	if err != nil {
		return User{}, fmt.Errorf("create user %s: %w", e, unavailable(err))
	}
	if !ok {
		return User{}, &existsError{field: "email", msg: fmt.Sprintf("user %s already exists", e)}
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyUser(e), "hash", hashPassword(password), "created", unixString(u.Created))
		p.SAdd(ctx, keyAcctUsers(a.ID), e)
		return nil
	})
	if err != nil {
		return User{}, fmt.Errorf("create user %s: %w", e, unavailable(err))
	}
	return u, nil
}

// Authenticate checks a user's password. Unknown users and wrong passwords
// both give ErrBadCredentials, after the same amount of work.
func (s *Store) Authenticate(ctx context.Context, email, password string) (User, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	h, err := s.rdb.HGetAll(ctx, keyUser(e)).Result()
	if err != nil {
		return User{}, fmt.Errorf("authenticate %s: %w", e, unavailable(err))
	}
	if h["hash"] == "" {
		checkPassword(dummyHash, password)
		return User{}, ErrBadCredentials
	}
	if !checkPassword(h["hash"], password) {
		return User{}, ErrBadCredentials
	}
	a, err := s.Account(ctx, h["account"])
	if err != nil {
		return User{}, fmt.Errorf("authenticate %s: %w", e, err)
	}
	return User{Email: e, Account: a.ID, Role: a.Role, Created: unixTime(h["created"])}, nil
}

// Users lists the panel users of account, by email; never their password
// hashes. An account without users gives an empty list.
func (s *Store) Users(ctx context.Context, account string) ([]User, error) {
	a, err := s.Account(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("users of %s: %w", account, err)
	}
	emails, err := s.rdb.SMembers(ctx, keyAcctUsers(a.ID)).Result()
	if err != nil {
		return nil, fmt.Errorf("users of %s: %w", a.ID, unavailable(err))
	}
	sort.Strings(emails)
	created := make([]*redis.StringCmd, len(emails))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range emails {
			created[i] = p.HGet(ctx, keyUser(e), "created")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("users of %s: %w", a.ID, unavailable(err))
	}
	users := make([]User, 0, len(emails))
	for i, e := range emails {
		if created[i].Err() != nil { // gone meanwhile
			continue
		}
		users = append(users, User{Email: e, Account: a.ID, Role: a.Role, Created: unixTime(created[i].Val())})
	}
	return users, nil
}

// SetPassword replaces a user's password.
func (s *Store) SetPassword(ctx context.Context, email, password string) error {
	e := strings.ToLower(strings.TrimSpace(email))
	if err := checkNewPassword(password); err != nil {
		return err
	}
	n, err := s.rdb.Exists(ctx, keyUser(e)).Result()
	if err != nil {
		return fmt.Errorf("set password %s: %w", e, unavailable(err))
	}
	if n == 0 {
		return fmt.Errorf("user %s: %w", e, ErrNotFound)
	}
	if err := s.rdb.HSet(ctx, keyUser(e), "hash", hashPassword(password)).Err(); err != nil {
		return fmt.Errorf("set password %s: %w", e, unavailable(err))
	}
	return nil
}

// Token is an API token's public part; the secret is shown once, at
// creation, and only its SHA-256 is stored.
type Token struct {
	ID      string    `json:"id"`
	Account string    `json:"account"`
	Role    Role      `json:"role"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
}

// tokenPrefix marks mxport tokens, so secret scanners can spot leaks.
const tokenPrefix = "mxp_"

// hashToken is the stored form of a token. Tokens carry 192 random bits, so
// a fast hash is enough: there is nothing to brute-force.
func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateToken makes a new API token for account and returns its secret
// (the only time it exists in clear) and its public part.
func (s *Store) CreateToken(ctx context.Context, account, name string) (string, Token, error) {
	a, err := s.Account(ctx, account)
	if err != nil {
		return "", Token{}, fmt.Errorf("create token: %w", err)
	}
	if len(name) > 100 {
		return "", Token{}, &record.FieldError{Field: "name", Msg: "token name is longer than 100 characters"}
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	t := Token{ID: randomHex(8), Account: a.ID, Role: a.Role, Name: name, Created: s.opts.Now().UTC().Truncate(time.Second)}
	h := hashToken(secret)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyToken(h), "id", t.ID, "account", t.Account, "name", t.Name, "created", unixString(t.Created))
		p.Set(ctx, keyTokenID(t.ID), h, 0)
		p.SAdd(ctx, keyAcctTokens(a.ID), t.ID)
		return nil
	})
	if err != nil {
		return "", Token{}, fmt.Errorf("create token: %w", unavailable(err))
	}
	return secret, t, nil
}

// LookupToken returns the token whose secret this is; ErrNotFound when
// none is (revoked, never issued). The role is the account's current one.
func (s *Store) LookupToken(ctx context.Context, secret string) (Token, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 200 {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	h, err := s.rdb.HGetAll(ctx, keyToken(hashToken(secret))).Result()
	if err != nil {
		return Token{}, fmt.Errorf("look up token: %w", unavailable(err))
	}
	if len(h) == 0 {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	a, err := s.Account(ctx, h["account"])
	if err != nil {
		return Token{}, fmt.Errorf("token %s: %w", h["id"], err)
	}
	return Token{ID: h["id"], Account: a.ID, Role: a.Role, Name: h["name"], Created: unixTime(h["created"])}, nil
}

// Tokens lists the tokens of account.
func (s *Store) Tokens(ctx context.Context, account string) ([]Token, error) {
	ids, err := s.rdb.SMembers(ctx, keyAcctTokens(account)).Result()
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", unavailable(err))
	}
	sort.Strings(ids)
	a, err := s.Account(ctx, account)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	var out []Token
	for _, id := range ids {
		h, err := s.rdb.Get(ctx, keyTokenID(id)).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", unavailable(err))
		}
		f, err := s.rdb.HGetAll(ctx, keyToken(h)).Result()
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", unavailable(err))
		}
		if len(f) > 0 {
			out = append(out, Token{ID: id, Account: f["account"], Role: a.Role, Name: f["name"], Created: unixTime(f["created"])})
		}
	}
	return out, nil
}

// RevokeToken deletes token id of account; ErrNotFound if account has no
// such token.
func (s *Store) RevokeToken(ctx context.Context, account, id string) error {
	ok, err := s.rdb.SIsMember(ctx, keyAcctTokens(account), id).Result()
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, unavailable(err))
	}
	if !ok {
		return fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	h, err := s.rdb.Get(ctx, keyTokenID(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke token %s: %w", id, unavailable(err))
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if h != "" {
			p.Del(ctx, keyToken(h))
		}
		p.Del(ctx, keyTokenID(id))
		p.SRem(ctx, keyAcctTokens(account), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, unavailable(err))
	}
	return nil
}
