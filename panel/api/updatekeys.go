package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/store"
)

// Per-host dyndns update keys of a zone (store.UpdateKey): the password of
// /nic/update for one host name. The secret is answered once, at creation.

type createUpdateKeyReq struct {
	Host *string `json:"host"`
}

// newUpdateKey is a new update key: the only answer that holds its secret.
type newUpdateKey struct {
	Key string `json:"key"`
	store.UpdateKey
}

func (h *handlers) listUpdateKeys(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	keys, err := h.st.UpdateKeys(c.Request().Context(), zd.Account, zd.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, keys)
}

func (h *handlers) createUpdateKey(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	var req createUpdateKeyReq
	if err := decode(c, &req, false); err != nil {
		return err
	}
	if req.Host == nil {
		return required("host")
	}
	secret, k, err := h.st.CreateUpdateKey(c.Request().Context(), zd.Name, *req.Host)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, newUpdateKey{Key: secret, UpdateKey: k})
}

func (h *handlers) deleteUpdateKey(c echo.Context) error {
	zd, err := h.zone(c)
	if err != nil {
		return err
	}
	if err := h.st.RevokeUpdateKey(c.Request().Context(), zd.Account, zd.Name, c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
