// Package auth identifies who calls the panel (API tokens, HTTP basic auth
// with a token, web sessions) and decides what they may touch: an operator
// everything, a registrar its own and its customers' accounts and zones, a
// customer its own. Another tenant's zone is reported exactly like a missing
// one (ErrNotFound), so nobody can probe for zones.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/store"
)

// Principal is an authenticated caller.
type Principal struct {
	Account string
	Role    store.Role
	TokenID string // when authenticated by an API token
	Email   string // when authenticated by a web session
}

// ErrUnauthenticated: no or bad credentials (401).
var ErrUnauthenticated = errors.New("auth: missing or invalid credentials")

// ErrForbidden: authenticated, but the role may not do this (403).
var ErrForbidden = errors.New("auth: not allowed for this role")

// Authenticator checks credentials against the store.
type Authenticator struct {
	st *store.Store
}

// New returns an Authenticator over st.
func New(st *store.Store) *Authenticator { return &Authenticator{st: st} }

// Token authenticates an API token secret.
func (a *Authenticator) Token(ctx context.Context, secret string) (*Principal, error) {
	t, err := a.st.LookupToken(ctx, secret)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	return &Principal{Account: t.Account, Role: t.Role, TokenID: t.ID}, nil
}

// Bearer reads "Authorization: Bearer TOKEN" from a request.
func (a *Authenticator) Bearer(c echo.Context) (*Principal, error) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		return nil, ErrUnauthenticated
	}
	return a.Token(c.Request().Context(), strings.TrimSpace(secret))
}

// Basic reads HTTP basic auth whose password is an API token (dyndns2,
// ACME helpers); the user name is not checked.
func (a *Authenticator) Basic(c echo.Context) (*Principal, error) {
	_, pass, ok := c.Request().BasicAuth()
	if !ok || pass == "" {
		return nil, ErrUnauthenticated
	}
	return a.Token(c.Request().Context(), pass)
}

const principalKey = "mxport.principal"

// Set stores p in the request context; Get reads it back.
func Set(c echo.Context, p *Principal) { c.Set(principalKey, p) }

// Get returns the request's principal, nil when unauthenticated.
func Get(c echo.Context) *Principal {
	p, _ := c.Get(principalKey).(*Principal)
	return p
}

// RequireBearer is middleware that authenticates every request with a
// bearer token; it answers 401 (through the error handler) otherwise.
func (a *Authenticator) RequireBearer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, err := a.Bearer(c)
		if err != nil {
			return err
		}
		Set(c, p)
		return next(c)
	}
}

// CanAccessAccount reports whether p may act on account id: its own, any
// for an operator, its customers' for a registrar. Errors: store errors;
// false without error means "no".
func (a *Authenticator) CanAccessAccount(ctx context.Context, p *Principal, id string) (bool, error) {
	switch {
	case p == nil:
		return false, nil
	case p.Role == store.RoleOperator || p.Account == id:
		return true, nil
	case p.Role == store.RoleRegistrar:
		acct, err := a.st.Account(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return acct.Parent == p.Account, nil
	}
	return false, nil
}

// Zone returns zone (with records) when p may touch it; a zone of another
// tenant gives store.ErrNotFound, exactly like a missing one.
func (a *Authenticator) Zone(ctx context.Context, p *Principal, zone string) (store.ZoneData, error) {
	zd, err := a.st.ZoneData(ctx, zone)
	if err != nil {
		return store.ZoneData{}, err
	}
	ok, err := a.CanAccessAccount(ctx, p, zd.Account)
	if err != nil {
		return store.ZoneData{}, err
	}
	if !ok {
		return store.ZoneData{}, fmt.Errorf("zone %s: %w", zd.Name, store.ErrNotFound)
	}
	return zd, nil
}

// Zones lists the zones p may see: all for an operator, its own and its
// customers' for a registrar, its own for a customer.
func (a *Authenticator) Zones(ctx context.Context, p *Principal) ([]string, error) {
	if p.Role == store.RoleOperator {
		return a.st.Zones(ctx, "")
	}
	names, err := a.st.Zones(ctx, p.Account)
	if err != nil || p.Role != store.RoleRegistrar {
		return names, err
	}
	kids, err := a.st.Accounts(ctx, p.Account)
	if err != nil {
		return nil, err
	}
	for _, k := range kids {
		more, err := a.st.Zones(ctx, k.ID)
		if err != nil {
			return nil, err
		}
		names = append(names, more...)
	}
	return names, nil
}
