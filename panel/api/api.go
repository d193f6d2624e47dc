// Package api is the REST API under /api/v1 (DESIGN.md's contract and its
// extensions): zones, records, the delivery log and queue, zone import and
// export, accounts, users, API tokens, TSIG keys and per-host dyndns update
// keys. Every request carries a bearer token (an API token; an update key is
// none); every handler checks tenancy through package auth, and a zone of
// another tenant answers 404 exactly like a missing one. Handlers return
// errors; package panel's error handler turns them into {"error","field"}
// answers. It knows no Redis and no HTML.
package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// OpenAPI is the OpenAPI 3 description of the API, served at
// /api/v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// handlers holds what the API's handlers share.
type handlers struct {
	st *store.Store
	a  *auth.Authenticator
}

// Register adds the API's routes to g (mounted on "/api/v1"). Every route
// but openapi.json requires a bearer token.
func Register(g *echo.Group, st *store.Store, a *auth.Authenticator) {
	h := &handlers{st: st, a: a}
	g.GET("/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, OpenAPI)
	})
	b := a.RequireBearer
	g.POST("/zones", h.createZone, b)
	g.GET("/zones", h.listZones, b)
	g.GET("/zones/:zone", h.getZone, b)
	g.DELETE("/zones/:zone", h.deleteZone, b)
	g.POST("/zones/:zone/records", h.addRecord, b)
	g.PUT("/zones/:zone/records/:id", h.putRecord, b)
	g.DELETE("/zones/:zone/records/:id", h.deleteRecord, b)
	g.GET("/zones/:zone/deliveries", h.deliveries, b)
	g.GET("/zones/:zone/queue", h.queue, b)
	g.POST("/zones/:zone/queue/flush", h.flush, b)
	g.GET("/zones/:zone/export", h.export, b)
	g.POST("/zones/:zone/import", h.importZone, b)
	g.GET("/zones/:zone/tsig", h.listTSIG, b)
	g.POST("/zones/:zone/tsig", h.createTSIG, b)
	g.DELETE("/zones/:zone/tsig/:name", h.deleteTSIG, b)
	g.GET("/zones/:zone/updatekeys", h.listUpdateKeys, b)
	g.POST("/zones/:zone/updatekeys", h.createUpdateKey, b)
	g.DELETE("/zones/:zone/updatekeys/:id", h.deleteUpdateKey, b)
	g.GET("/accounts", h.listAccounts, b)
	g.POST("/accounts", h.createAccount, b)
	g.GET("/accounts/:id", h.getAccount, b)
	g.GET("/accounts/:id/users", h.listUsers, b)
	g.POST("/accounts/:id/users", h.createUser, b)
	g.GET("/tokens", h.listTokens, b)
	g.POST("/tokens", h.createToken, b)
	g.DELETE("/tokens/:id", h.deleteToken, b)
}

// badRequest is a 400 naming field ("" for the body as a whole).
func badRequest(field, format string, args ...any) error {
	return &record.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// required is the error for a missing field.
func required(field string) error { return badRequest(field, "%s is required", field) }

// decode reads the request body as one JSON object into v, strictly:
// unknown fields, trailing data and wrong types are 400s naming the field.
// An empty body is an error unless allowEmpty. Callers check required
// fields themselves (pointer fields tell missing from zero).
func decode(c echo.Context, v any, allowEmpty bool) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && allowEmpty {
			return nil
		}
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return he
		}
		return badRequest("", "unexpected data after the JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a 400 (or passes the body limit's
// 413 through).
func jsonError(err error) error {
	var (
		he  *echo.HTTPError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, io.EOF):
		return badRequest("", "the request body is empty; a JSON object is expected")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "bad JSON: unexpected end of the body")
	case errors.As(err, &se):
		return badRequest("", "bad JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &ute):
		if ute.Field == "" {
			return badRequest("", "a JSON object is expected, not %s", jsonType(ute.Value))
		}
		return badRequest(ute.Field, "%s: wrong type %s, want %s", ute.Field, jsonType(ute.Value), wantType(ute.Type.String()))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return badRequest(name, "unknown field %q", name)
	}
	return badRequest("", "unreadable request body")
}

// jsonType names the JSON kind of an UnmarshalTypeError's Value ("number
// 1e10" becomes "number").
func jsonType(v string) string {
	t, _, _ := strings.Cut(v, " ")
	return t
}

func wantType(goType string) string {
	switch {
	case goType == "string", goType == "*string":
		return "string"
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number in range"
	case strings.Contains(goType, "bool"):
		return "boolean"
	case strings.HasPrefix(goType, "[]"), strings.HasPrefix(goType, "*[]"):
		return "array"
	}
	return "object"
}

// principal returns the request's caller (set by RequireBearer).
func principal(c echo.Context) *auth.Principal {
	p := auth.Get(c)
	if p == nil {
		panic("api: handler without RequireBearer")
	}
	return p
}

// zone returns the zone named in the path when the caller may touch it.
func (h *handlers) zone(c echo.Context) (store.ZoneData, error) {
	return h.a.Zone(c.Request().Context(), principal(c), c.Param("zone"))
}

// account checks that the caller may act on account id; another tenant's
// account is reported as missing.
func (h *handlers) account(c echo.Context, id string) error {
	ok, err := h.a.CanAccessAccount(c.Request().Context(), principal(c), id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("account %s: %w", id, store.ErrNotFound)
	}
	return nil
}
