package main

import (
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Keycloak 26's login form (login.ftl, trimmed): the action carries HTML entities, the hidden
// credentialId has no value attribute.
const keycloakPage = `<!DOCTYPE html><html><head><title>Sign in to corp</title></head><body>
<form id="kc-form-login" onsubmit="login.disabled = true; return true;"
      action="https://sso.example.com/realms/corp/login-actions/authenticate?session_code=a1&amp;execution=e-2&amp;client_id=authproxy&amp;tab_id=t3"
      method="post" novalidate="novalidate">
  <input tabindex="2" id="username" class="pf-v5-c-form-control" name="username" value="" type="text" autofocus autocomplete="username" />
  <input tabindex="3" id="password" name="password" type="password" autocomplete="current-password" />
  <input type="hidden" id="id-hidden-input" name="credentialId" />
  <button tabindex="4" name="login" id="kc-login" type="submit">Sign In</button>
</form>
<form id="kc-select-language" action="/other" method="get"><input type="hidden" name="kc_locale" value="de"/></form>
</body></html>`

func TestLoginFormIsKeycloaksForm(t *testing.T) {
	base, _ := url.Parse("https://sso.example.com/realms/corp/protocol/openid-connect/auth?x=1")
	action, fields, ok := loginForm([]byte(keycloakPage), base)
	if !ok {
		t.Fatal("no form found")
	}
	want := "https://sso.example.com/realms/corp/login-actions/authenticate?session_code=a1&execution=e-2&client_id=authproxy&tab_id=t3"
	if action != want {
		t.Fatalf("action %q, want %q", action, want)
	}
	if v, ok := fields["credentialId"]; !ok || v[0] != "" {
		t.Fatalf("hidden credentialId missing: %v", fields)
	}
	if _, ok := fields["kc_locale"]; ok {
		t.Fatal("a field of another form was taken")
	}
	if _, _, ok := loginForm([]byte("<html><form id=other action=x></form></html>"), base); ok {
		t.Fatal("a page without kc-form-login gave a form")
	}
}

func TestErrorKindNamesRefusedConnections(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err := http.Get("http://" + addr + "/")
	if k := errorKind(err); k != "refused" {
		t.Fatalf("kind %q for %v", k, err)
	}
}

// drive against an app that answers like the echo app, clears the session cookie on the 3rd
// request of a session (as oauth2-proxy does when it cannot load a session) and fails with 503
// once: the records say so, and the session stops after losing its cookie.
func TestDriveRecordsWhatEachSessionSaw(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("_s")
		switch k := n.Add(1); {
		case err != nil:
			w.WriteHeader(302)
		case k == 2:
			w.Header().Set("Server", "istio-envoy")
			w.WriteHeader(503)
			_, _ = w.Write([]byte("no healthy upstream"))
		case k == 3:
			http.SetCookie(w, &http.Cookie{Name: "_s", Value: "", Path: "/", Domain: "example.com", MaxAge: -1})
			w.WriteHeader(302)
		default:
			_ = c
			_, _ = w.Write([]byte(`{"app": "echo", "headers": {}}`))
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, srv.Certificate())
	cfg := Config{
		Gateway: srv.Listener.Addr().String(), CAFile: ca, CookieName: "_s", CookieDomain: "example.com",
		Sessions: []Session{{ID: "u1", URL: "https://example.com/", Cookies: []Cookie{{"_s", "v1"}}}},
		Rate:     200, DurationMS: 400,
		RequestsOut: filepath.Join(dir, "req.csv"), SummaryOut: filepath.Join(dir, "sum.json"),
		FailuresOut: filepath.Join(dir, "failures.jsonl"),
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	drive(&cfg, pool)
	f, _ := os.Open(cfg.RequestsOut)
	rows, _ := csv.NewReader(f).ReadAll()
	var statuses, flags []string
	for _, r := range rows {
		statuses = append(statuses, r[2])
		flags = append(flags, r[4])
	}
	if strings.Join(statuses, " ") != "200 503 302" || strings.Join(flags, " ") != "1 1 3" {
		t.Fatalf("statuses %v flags %v", statuses, flags)
	}
	var out struct {
		Start int64            `json:"start_unix_ns"`
		Sums  []SessionSummary `json:"sessions"`
	}
	raw, _ := os.ReadFile(cfg.SummaryOut)
	_ = json.Unmarshal(raw, &out)
	sums := out.Sums
	if out.Start == 0 || len(sums) != 1 || sums[0].Requests != 3 || sums[0].Failed != 2 || sums[0].ClearedUS == nil || sums[0].HasCookie {
		t.Fatalf("summary %+v", sums)
	}
	// each failed request, with who answered it
	raw, _ = os.ReadFile(cfg.FailuresOut)
	var fails []Failure
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var f Failure
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("failures line %q: %v", line, err)
		}
		fails = append(fails, f)
	}
	if len(fails) != 2 || fails[0].Status != 503 || fails[0].Server != "istio-envoy" ||
		fails[0].Body != "no healthy upstream" || fails[1].Status != 302 {
		t.Fatalf("failures %+v", fails)
	}
}

func writePEM(t *testing.T, path string, cert *x509.Certificate) {
	t.Helper()
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
