package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/miekg/dns"

	"github.com/mxport/mxport/store"
	"github.com/mxport/mxport/store/record"
	"github.com/mxport/mxport/store/zonefile"
)

// targetJSON is one hop of a forwarding route.
type targetJSON struct {
	Pref    uint16 `json:"pref"`
	Host    string `json:"host"`
	Port    uint16 `json:"port"`
	Address string `json:"address"` // host:port
}

// zoneSummary is a zone in a list.
type zoneSummary struct {
	store.Zone
	Forwarded bool `json:"forwarded"`
}

// zoneDetail is one zone with its records, its forwarding route (empty
// when not forwarded) and the apex MX data DNS publishes.
type zoneDetail struct {
	zoneSummary
	Route       []targetJSON    `json:"route"`
	PublishedMX []string        `json:"published_mx"`
	Records     []record.Record `json:"records"`
}

func (h *handlers) detail(zd store.ZoneData) zoneDetail {
	route := zd.Route()
	d := zoneDetail{
		zoneSummary: zoneSummary{Zone: zd.Zone, Forwarded: route != nil},
		Route:       make([]targetJSON, 0, len(route)),
		PublishedMX: published(zd, route != nil, h.st.Policy().MXHosts),
		Records:     zd.Records,
	}
	if d.Records == nil {
		d.Records = []record.Record{}
	}
	for _, t := range route {
		d.Route = append(d.Route, targetJSON{Pref: t.Pref, Host: t.Host, Port: t.Port, Address: t.Address()})
	}
	return d
}

// published returns the apex MX data DNS answers with: for a forwarded
// zone the service's MX hosts, priorities 10, 20, ... (DESIGN.md, the MX
// forwarding rule), else the zone's own apex MX records.
func published(zd store.ZoneData, forwarded bool, mxHosts []string) []string {
	out := []string{}
	if forwarded {
		pref := 0
		for _, h := range mxHosts {
			if h = strings.ToLower(strings.TrimSpace(h)); h == "" || h == "." {
				continue
			}
			pref += 10
			out = append(out, strconv.Itoa(min(pref, 65535))+" "+dns.Fqdn(h))
		}
		return out
	}
	var mxs []record.MX
	for _, r := range zd.Records {
		if r.Type == "MX" && r.Name == record.Apex {
			if mx, err := record.ParseMX(r.Data); err == nil {
				mxs = append(mxs, mx)
			}
		}
	}
	sort.SliceStable(mxs, func(i, j int) bool {
		if mxs[i].Pref != mxs[j].Pref {
			return mxs[i].Pref < mxs[j].Pref
		}
		return mxs[i].Host < mxs[j].Host
	})
	for _, mx := range mxs {
		out = append(out, mx.String())
	}
	return out
}

type createZoneReq struct {
	Name    *string `json:"name"`
	Account *string `json:"account"`
}

// createZone creates a zone for the caller's account or, for operators and
// registrars, an account they may act for. A retry by the same account of
// a create that already succeeded answers 200 with the zone: a registrar
// retrying after a timeout never gets two zones, nor an error.
func (h *handlers) createZone(c echo.Context) error {
	var req createZoneReq
	if err := decode(c, &req, false); err != nil {
		return err
	}
	if req.Name == nil {
		return required("name")
	}
	p := principal(c)
	acct := p.Account
	if req.Account != nil && *req.Account != p.Account {
		if err := h.account(c, *req.Account); err != nil {
			return badRequestNotFound("account", err)
		}
		acct = *req.Account
	}
	ctx := c.Request().Context()
	z, err := h.st.CreateZone(ctx, *req.Name, acct)
	status := http.StatusCreated
	if errors.Is(err, store.ErrExists) {
		zd, rerr := h.st.ZoneData(ctx, *req.Name)
		if rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			return rerr
		}
		if rerr != nil || zd.Account != acct {
			return fmt.Errorf("zone %s: %w", *req.Name, err) // 409: another account's
		}
		z, err, status = zd.Zone, nil, http.StatusOK
	}
	if err != nil {
		return badRequestNotFound("account", err)
	}
	zd, err := h.st.ZoneData(ctx, z.Name)
	if err != nil {
		return err
	}
	return c.JSON(status, h.detail(zd))
}

// badRequestNotFound names field in a not-found error about it (the
// account of a new zone), so the 404 says which object is missing.
func badRequestNotFound(field string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound{field: field, err: err}
	}
	return err
}

// notFound is store.ErrNotFound naming a field.
type notFound struct {
	field string
	err   error
}

func (e notFound) Error() string { return e.field + " not found" }
func (e notFound) Unwrap() error { return e.err }

// As lets the error handler read the field, as for any *record.FieldError.
func (e notFound) As(target any) bool {
	if fe, ok := target.(**record.FieldError); ok {
		*fe = &record.FieldError{Field: e.field, Msg: e.Error()}
		return true
	}
	return false
}

func (h *handlers) listZones(c echo.Context) error {
	ctx := c.Request().Context()
	names, err := h.a.Zones(ctx, principal(c))
	if err != nil {
		return err
	}
	zds, err := h.st.ZonesData(ctx, names)
	if err != nil {
		return err
	}
	out := make([]zoneSummary, 0, len(zds))
	for _, zd := range zds {
		out = append(out, zoneSummary{Zone: zd.Zone, Forwarded: zd.Route() != nil})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return c.JSON(http.StatusOK, out)
}

func (h *handlers) getZone(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, h.detail(zd))
}

func (h *handlers) deleteZone(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	if err := h.st.DeleteZone(c.Request().Context(), zd.Name); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// recordReq is a record in a request; every field but id is required. An
// id (as GET returns it) may be sent back: it must match the path's.
type recordReq struct {
	ID   *string `json:"id"`
	Name *string `json:"name"`
	Type *string `json:"type"`
	TTL  *uint32 `json:"ttl"`
	Data *string `json:"data"`
}

func readRecord(c echo.Context) (record.Record, *string, error) {
	var req recordReq
	if err := decode(c, &req, false); err != nil {
		return record.Record{}, nil, err
	}
	switch {
	case req.Name == nil:
		return record.Record{}, nil, required("name")
	case req.Type == nil:
		return record.Record{}, nil, required("type")
	case req.TTL == nil:
		return record.Record{}, nil, required("ttl")
	case req.Data == nil:
		return record.Record{}, nil, required("data")
	}
	return record.Record{Name: *req.Name, Type: *req.Type, TTL: *req.TTL, Data: *req.Data}, req.ID, nil
}

func (h *handlers) addRecord(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	r, _, err := readRecord(c)
	if err != nil {
		return err
	}
	r, err = h.st.AddRecord(c.Request().Context(), zd.Name, r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, r)
}

func (h *handlers) putRecord(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	r, id, err := readRecord(c)
	if err != nil {
		return err
	}
	if id != nil && *id != c.Param("id") {
		return badRequest("id", "id %q does not match the record in the path", *id)
	}
	r, err = h.st.UpdateRecord(c.Request().Context(), zd.Name, c.Param("id"), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

func (h *handlers) deleteRecord(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	if err := h.st.RemoveRecord(c.Request().Context(), zd.Name, c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// defaultDeliveries is how many delivery events GET returns without ?limit.
const defaultDeliveries = 100

func (h *handlers) deliveries(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	n := defaultDeliveries
	if v := c.QueryParam("limit"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxDeliveries {
			return badRequest("limit", "limit must be a number 1-%d", store.MaxDeliveries)
		}
	}
	ds, err := h.st.Deliveries(c.Request().Context(), zd.Name, n)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ds)
}

func (h *handlers) queue(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	q, err := h.st.Queued(c.Request().Context(), zd.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, q)
}

// flush asks every node's forwarder to retry the zone's waiting mail now.
func (h *handlers) flush(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	if err := h.st.PublishControl(c.Request().Context(), store.Control{Kind: "flush", Zone: zd.Name}); err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]string{"zone": zd.Name, "status": "flush requested"})
}

// export answers the zone as a BIND zone file.
func (h *handlers) export(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := zonefile.Write(&b, zd); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderContentDisposition, `attachment; filename="`+zd.Name+`.zone"`)
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", b.Bytes())
}

// importZone replaces the zone's SOA fields and records with a BIND zone
// file (the request body), in one change.
func (h *handlers) importZone(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	buf, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return jsonError(err)
	}
	f, err := zonefile.Parse(bytes.NewReader(buf), zd.Name, "", h.st.Policy())
	if err != nil {
		field := record.Field(err)
		if field == "" {
			field = "zonefile"
		}
		return badRequest(field, "%s", strings.TrimPrefix(err.Error(), "zonefile: "))
	}
	ctx := c.Request().Context()
	if _, err := h.st.ImportZone(ctx, zd.Name, zd.Account, f.SOA, f.Serial, f.Records, true); err != nil {
		return err
	}
	zd, err = h.st.ZoneData(ctx, zd.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, h.detail(zd))
}
