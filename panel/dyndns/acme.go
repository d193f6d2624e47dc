package dyndns

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
)

// acmePrefix is the first label of every name the ACME helpers touch
// (RFC 8555 8.4).
const acmePrefix = "_acme-challenge."

// ACMETTL is the TTL of the challenge TXT records.
const ACMETTL = 60

// maxACMEBody bounds a helper request body.
const maxACMEBody = 4096

// acmeRequest is lego httpreq's body: {"fqdn","value"} by default, or
// {"domain","token","keyAuth"} in its RAW mode.
type acmeRequest struct {
	FQDN    string `json:"fqdn"`
	Value   string `json:"value"`
	Domain  string `json:"domain"`
	Token   string `json:"token"`
	KeyAuth string `json:"keyAuth"`
}

type acmeError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// present adds the challenge TXT record (quietly nothing when the same one
// is there: lego may retry).
func (h *handler) present(c echo.Context) error { return h.acme(c, true) }

// cleanup removes exactly the challenge TXT record with that value (quietly
// nothing when it is gone).
func (h *handler) cleanup(c echo.Context) error { return h.acme(c, false) }

func (h *handler) acme(c echo.Context, present bool) error {
	ctx := c.Request().Context()
	p, err := h.auth.Basic(c)
	if err != nil {
		if errors.Is(err, auth.ErrUnauthenticated) {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="mxport"`)
			return c.JSON(http.StatusUnauthorized, acmeError{Error: "missing or invalid credentials (basic auth, password = API token)"})
		}
		return h.unavailable(c, err)
	}
	if !h.limit.allow(p.TokenID, time.Now()) {
		c.Response().Header().Set(echo.HeaderRetryAfter, "60")
		return c.JSON(http.StatusTooManyRequests, acmeError{Error: "too many requests for this token"})
	}
	req, status, aerr := readACME(c)
	if aerr != nil {
		return c.JSON(status, aerr)
	}
	name, value, aerr := req.challenge()
	if aerr != nil {
		return c.JSON(http.StatusBadRequest, aerr)
	}
	zd, owner, err := h.findZone(ctx, caller{p: p}, name)
	if errors.Is(err, store.ErrNotFound) {
		return c.JSON(http.StatusNotFound, acmeError{Error: "no zone of yours holds " + name, Field: "fqdn"})
	}
	if err != nil {
		return h.unavailable(c, err)
	}
	rec := record.Record{Name: owner, Type: "TXT", TTL: ACMETTL, Data: `"` + value + `"`}
	var ch store.Change
	if present {
		ch.Ops = []store.Op{{Kind: store.OpAdd, Record: rec, Quiet: true}}
	} else {
		canon, err := record.Normalize(zd.Name, rec, h.st.Policy())
		if err != nil {
			return c.JSON(http.StatusBadRequest, acmeError{Error: err.Error(), Field: "value"})
		}
		for _, r := range zd.Records {
			if r.Name == owner && r.Type == "TXT" && r.Data == canon.Data {
				ch.Ops = append(ch.Ops, store.Op{Kind: store.OpDelete, ID: r.ID, Quiet: true})
			}
		}
	}
	if len(ch.Ops) > 0 {
		_, err = h.st.Change(ctx, zd.Name, ch)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return c.JSON(http.StatusNotFound, acmeError{Error: "no zone of yours holds " + name, Field: "fqdn"})
		case record.Field(err) != "":
			// A CNAME at the name, the zone's record limit.
			return c.JSON(http.StatusBadRequest, acmeError{Error: err.Error(), Field: "fqdn"})
		case err != nil:
			return h.unavailable(c, err)
		}
	}
	op := "acme present"
	if !present {
		op = "acme cleanup"
	}
	slog.Info(op, "zone", zd.Name, "name", name)
	return c.JSON(http.StatusOK, map[string]string{"fqdn": name + ".", "value": value})
}

func (h *handler) unavailable(c echo.Context, err error) error {
	slog.Warn("acme helper failed", "remote", c.Request().RemoteAddr, "err", err)
	return c.JSON(http.StatusServiceUnavailable, acmeError{Error: "service temporarily unavailable, try again"})
}

// readACME decodes the JSON body, at most maxACMEBody bytes.
func readACME(c echo.Context) (acmeRequest, int, *acmeError) {
	var req acmeRequest
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxACMEBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return req, http.StatusRequestEntityTooLarge, &acmeError{Error: "request body too large"}
	}
	if err != nil {
		return req, http.StatusBadRequest, &acmeError{Error: "cannot read request body"}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, http.StatusBadRequest, &acmeError{Error: "body must be a JSON object {\"fqdn\",\"value\"}"}
	}
	return req, 0, nil
}

// challenge returns the record's name (canonical, no trailing dot) and the
// TXT value. RAW mode's value is the key authorization's digest (RFC 8555
// 8.4), its name the domain's (a wildcard's base domain).
func (r acmeRequest) challenge() (name, value string, _ *acmeError) {
	fqdn, value := r.FQDN, r.Value
	if fqdn == "" && r.Domain != "" {
		if r.KeyAuth == "" {
			return "", "", &acmeError{Error: "keyAuth is required with domain", Field: "keyAuth"}
		}
		fqdn = acmePrefix + strings.TrimPrefix(strings.TrimSuffix(r.Domain, "."), "*.")
		sum := sha256.Sum256([]byte(r.KeyAuth))
		value = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if fqdn == "" {
		return "", "", &acmeError{Error: "fqdn is required", Field: "fqdn"}
	}
	n, err := record.ZoneName(fqdn)
	if err != nil || !strings.HasPrefix(n, acmePrefix) || !strings.Contains(n[len(acmePrefix):], ".") {
		return "", "", &acmeError{Error: "fqdn must be " + acmePrefix + "<your domain>.", Field: "fqdn"}
	}
	if !validValue(value) {
		return "", "", &acmeError{Error: "value must be 1-255 characters of base64url (RFC 8555 8.4)", Field: "value"}
	}
	return n, value, nil
}

// validValue accepts a base64 (URL-safe or standard) string that fits in
// one TXT character-string; the real values are 43 characters.
func validValue(v string) bool {
	if v == "" || len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '+', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}
