package api_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/mxport/mxport/panel"
	"github.com/mxport/mxport/panel/api"
	"github.com/mxport/mxport/panel/auth"
	"github.com/mxport/mxport/store/storetest"
)

// TestOpenAPIMatchesRoutes fails when a route under /api/v1 is missing
// from openapi.json, or the document describes a route that does not exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}
	var documented []string
	for p, ops := range doc.Paths {
		for m := range ops {
			if slices.Contains(methods, m) {
				documented = append(documented, strings.ToUpper(m)+" "+p)
			}
		}
	}
	st := storetest.New(t)
	e := panel.New(panel.Config{Store: st, Auth: auth.New(st)})
	param := regexp.MustCompile(`:([a-z]+)`)
	var routed []string
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") || r.Method == echo.RouteNotFound {
			continue
		}
		routed = append(routed, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(documented)
	slices.Sort(routed)
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			t.Errorf("openapi.json describes %s, which is not routed", d)
		}
	}
	if len(routed) < 20 {
		t.Errorf("only %d API routes found", len(routed))
	}
	// Every path parameter in a path is declared.
	for p, ops := range doc.Paths {
		raw, _ := json.Marshal(ops)
		for _, m := range regexp.MustCompile(`\{([a-z]+)\}`).FindAllStringSubmatch(p, -1) {
			if !strings.Contains(string(raw), `"name":"`+m[1]+`"`) {
				t.Errorf("%s: parameter %s not declared", p, m[1])
			}
		}
	}
}
