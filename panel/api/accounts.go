package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/miekg/dns"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// listAccounts: an operator sees every account, a registrar its customers,
// a customer its own account.
func (h *handlers) listAccounts(c echo.Context) error {
	p := principal(c)
	ctx := c.Request().Context()
	var (
		out []store.Account
		err error
	)
	switch p.Role {
	case store.RoleOperator:
		out, err = h.st.Accounts(ctx, "")
	case store.RoleRegistrar:
		out, err = h.st.Accounts(ctx, p.Account)
	default:
		var a store.Account
		a, err = h.st.Account(ctx, p.Account)
		out = []store.Account{a}
	}
	if err != nil {
		return err
	}
	if out == nil {
		out = []store.Account{}
	}
	return c.JSON(http.StatusOK, out)
}

type createAccountReq struct {
	ID     *string `json:"id"`
	Role   *string `json:"role"`
	Parent *string `json:"parent"`
}

// createAccount: an operator creates any account (a customer may have a
// registrar parent); a registrar creates customer accounts it owns;
// customers may not (403).
func (h *handlers) createAccount(c echo.Context) error {
	p := principal(c)
	if p.Role == store.RoleCustomer {
		return auth.ErrForbidden
	}
	var req createAccountReq
	if err := decode(c, &req, false); err != nil {
		return err
	}
	if req.ID == nil {
		return required("id")
	}
	role := store.RoleCustomer
	if req.Role != nil {
		r, err := store.ParseRole(*req.Role)
		if err != nil {
			return err
		}
		role = r
	}
	parent := ""
	if req.Parent != nil {
		parent = *req.Parent
	}
	if p.Role == store.RoleRegistrar {
		if role != store.RoleCustomer || (parent != "" && parent != p.Account) {
			return auth.ErrForbidden // a registrar owns customer accounts only
		}
		parent = p.Account
	}
	a, err := h.st.CreateAccount(c.Request().Context(), *req.ID, role, parent)
	if err != nil {
		var fe *record.FieldError
		if errors.As(err, &fe) && fe.Field == "account" {
			fe.Field = "id" // the JSON name
			if errors.Is(err, store.ErrExists) {
				return fmt.Errorf("%w: %w", fe, store.ErrExists)
			}
			return fe
		}
		return badRequestNotFound("parent", err)
	}
	return c.JSON(http.StatusCreated, a)
}

func (h *handlers) getAccount(c echo.Context) error {
	id := c.Param("id")
	if err := h.account(c, id); err != nil {
		return err
	}
	a, err := h.st.Account(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

// listUsers lists the panel users of an account the caller may act for.
func (h *handlers) listUsers(c echo.Context) error {
	id := c.Param("id")
	if err := h.account(c, id); err != nil {
		return err
	}
	us, err := h.st.Users(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, us)
}

type createUserReq struct {
	Email    *string `json:"email"`
	Password *string `json:"password"`
}

// createUser adds a panel user to an account the caller may act for.
func (h *handlers) createUser(c echo.Context) error {
	id := c.Param("id")
	if err := h.account(c, id); err != nil {
		return err
	}
	var req createUserReq
	if err := decode(c, &req, false); err != nil {
		return err
	}
	switch {
	case req.Email == nil:
		return required("email")
	case req.Password == nil:
		return required("password")
	}
	u, err := h.st.CreateUser(c.Request().Context(), *req.Email, id, *req.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

// tokenAccount is the account a token request is about: ?account=ID (an
// account the caller may act for) or the caller's own.
func (h *handlers) tokenAccount(c echo.Context, id *string) (string, error) {
	acct := principal(c).Account
	if id == nil {
		if q := c.QueryParam("account"); q != "" {
			id = &q
		}
	}
	if id != nil && *id != acct {
		if err := h.account(c, *id); err != nil {
			return "", badRequestNotFound("account", err)
		}
		acct = *id
	}
	return acct, nil
}

func (h *handlers) listTokens(c echo.Context) error {
	acct, err := h.tokenAccount(c, nil)
	if err != nil {
		return err
	}
	ts, err := h.st.Tokens(c.Request().Context(), acct)
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []store.Token{}
	}
	return c.JSON(http.StatusOK, ts)
}

type createTokenReq struct {
	Name    *string `json:"name"`
	Account *string `json:"account"`
}

// newToken is a new token: the only answer that holds its secret.
type newToken struct {
	Secret string `json:"token"`
	store.Token
}

func (h *handlers) createToken(c echo.Context) error {
	var req createTokenReq
	if err := decode(c, &req, true); err != nil {
		return err
	}
	acct, err := h.tokenAccount(c, req.Account)
	if err != nil {
		return err
	}
	name := ""
	if req.Name != nil {
		name = *req.Name
	}
	secret, t, err := h.st.CreateToken(c.Request().Context(), acct, name)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, newToken{Secret: secret, Token: t})
}

func (h *handlers) deleteToken(c echo.Context) error {
	acct, err := h.tokenAccount(c, nil)
	if err != nil {
		return err
	}
	if err := h.st.RevokeToken(c.Request().Context(), acct, c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// tsigJSON is a TSIG key without its secret.
type tsigJSON struct {
	Name      string    `json:"name"`
	Algorithm string    `json:"algorithm"`
	Created   time.Time `json:"created"`
}

// zoneKeys returns the TSIG keys that may touch zone.
func (h *handlers) zoneKeys(ctx context.Context, zone string) ([]store.TSIGKey, error) {
	all, err := h.st.TSIGKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []store.TSIGKey
	for _, k := range all {
		if slices.Contains(k.Zones, zone) {
			out = append(out, k)
		}
	}
	return out, nil
}

func (h *handlers) listTSIG(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	keys, err := h.zoneKeys(c.Request().Context(), zd.Name)
	if err != nil {
		return err
	}
	out := make([]tsigJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, tsigJSON{Name: k.Name, Algorithm: k.Algorithm, Created: k.Created})
	}
	return c.JSON(http.StatusOK, out)
}

type createTSIGReq struct {
	Name      *string `json:"name"`
	Algorithm *string `json:"algorithm"`
}

// createTSIG makes a key for this zone only and answers its secret, once.
func (h *handlers) createTSIG(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	var req createTSIGReq
	if err := decode(c, &req, false); err != nil {
		return err
	}
	if req.Name == nil {
		return required("name")
	}
	// Key names are host-name like; the store accepts any DNS name.
	if _, err := record.ZoneName(*req.Name); err != nil {
		return badRequest("name", "key name %q: only letters, digits, '-' and '_' labels are allowed", *req.Name)
	}
	alg := ""
	if req.Algorithm != nil {
		alg = *req.Algorithm
	}
	k, err := h.st.CreateTSIGKey(c.Request().Context(), *req.Name, alg, []string{zd.Name})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, k)
}

// deleteTSIG removes a key of this zone. A key that also covers zones the
// caller may not touch (made with the CLI) is the operator's: 403.
func (h *handlers) deleteTSIG(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	name := dns.Fqdn(strings.ToLower(strings.TrimSpace(c.Param("name"))))
	keys, err := h.zoneKeys(ctx, zd.Name)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(keys, func(k store.TSIGKey) bool { return k.Name == name })
	if i < 0 {
		return fmt.Errorf("TSIG key %s: %w", name, store.ErrNotFound)
	}
	for _, z := range keys[i].Zones {
		if z == zd.Name {
			continue
		}
		if _, err := h.a.Zone(ctx, principal(c), z); errors.Is(err, store.ErrNotFound) {
			return auth.ErrForbidden
		} else if err != nil {
			return err
		}
	}
	if err := h.st.DeleteTSIGKey(ctx, name); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
