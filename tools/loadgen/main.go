// loadgen: many signed-in browsers against the authproxy gateway, recording what each one sees.
//
//	loadgen signin CONFIG.json   sign users in through the real login form (concurrently)
//	loadgen drive  CONFIG.json   signed-in sessions request their app until the duration ends,
//	                             SIGTERM/SIGINT, or the stop file appears; a session whose cookie
//	                             a response deleted stops (its user would sign in again)
//	loadgen probe  CONFIG.json   one request per session with its original cookie: which
//	                             sessions still work
//	loadgen mint   CONFIG.json   many sessions through oauth2-proxy: each user signs in once
//	                             with the form, then again and again on its Keycloak SSO session
//	                             (a browser that lost oauth2-proxy's cookie), `repeat` times
//
// Every https host is dialled at the gateway address (like Chromium's --host-resolver-rules),
// TLS is verified against the run's CA. Each user is one browser: its own cookie jar (so a
// response that clears the session cookie takes it away, as a browser would) and its own
// connections (HTTP/2 where the gateway offers it). Redirects are never followed implicitly.
//
// Output (paths in the config; the caller keeps them private, they hold session cookies):
//   - signin: one JSON line per attempt (stages and their durations, outcome), and the signed-in
//     sessions (cookies) as JSON for drive;
//   - drive: one CSV line per request "t_us,lat_us,status,session,flags" (no response: status -1
//     timeout, -2 refused, -3 reset, -4 other; 299: a 200 that is not the app's answer; flags:
//     1 the session cookie was sent, 2 this response cleared it, 4 replaced it; t_us counts from
//     start_unix_ns) and a JSON summary: {"start_unix_ns", "sessions": [one per session]};
//     with failures_out, one JSON line per failed request saying who answered it (see Failure).
//
// Secrets (passwords, cookies) come only from the config file, never the command line.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type Cookie struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type User struct {
	Username string `json:"username"`
	Password string `json:"password"`
	URL      string `json:"url"`
}

type Session struct {
	ID      string   `json:"id"`
	URL     string   `json:"url"`
	Cookies []Cookie `json:"cookies"`
}

type Config struct {
	Gateway      string `json:"gateway"`
	CAFile       string `json:"ca_file"`
	CookieName   string `json:"cookie_name"`
	CookieDomain string `json:"cookie_domain"`
	TimeoutMS    int    `json:"timeout_ms"`
	// signin
	Users        []User `json:"users"`
	Concurrency  int    `json:"concurrency"`
	Attempts     int    `json:"attempts"`
	RetryDelayMS int    `json:"retry_delay_ms"`
	AttemptsOut  string `json:"attempts_out"`
	SessionsOut  string `json:"sessions_out"`
	Repeat       int    `json:"repeat"`
	MintOut      string `json:"mint_out"`
	// drive
	Sessions    []Session `json:"sessions"`
	Rate        float64   `json:"rate"`
	DurationMS  int       `json:"duration_ms"`
	StopFile    string    `json:"stop_file"`
	RequestsOut string    `json:"requests_out"`
	FailuresOut string    `json:"failures_out"`
	SummaryOut  string    `json:"summary_out"`
}

var browserHeaders = map[string]string{
	"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) authproxy-soak",
	"Accept":     "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 3 || !strings.Contains(" signin drive probe mint ", " "+os.Args[1]+" ") {
		fail("usage: loadgen signin|drive|probe|mint CONFIG.json")
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("%v", err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fail("config: %v", err)
	}
	if cfg.TimeoutMS <= 0 {
		cfg.TimeoutMS = 10000
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		fail("CA file %q: %v", cfg.CAFile, err)
	}
	switch os.Args[1] {
	case "signin":
		signin(&cfg, pool)
	case "drive":
		drive(&cfg, pool)
	case "mint":
		mint(&cfg, pool)
	default:
		probe(&cfg, pool)
	}
}

// newBrowser: a client with its own jar and connections, every host dialled at the gateway.
func newBrowser(cfg *Config, pool *x509.CertPool) (*http.Client, http.CookieJar) {
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, cfg.Gateway)
		},
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Jar:       jar,
		Timeout:   time.Duration(cfg.TimeoutMS) * time.Millisecond,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, jar
}

func get(c *http.Client, method, target string, form url.Values) (*http.Response, []byte, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range browserHeaders {
		req.Header.Set(k, v)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, err
}

// errorKind names a transport failure (a request that got no HTTP response).
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	default:
		return "error"
	}
}

// transportStatus: the status recorded for a request that got no HTTP response.
var transportStatus = map[string]int{"timeout": -1, "refused": -2, "reset": -3, "error": -4}

// ---------------------------------------------------------------------------- sign-in

var (
	formRe  = regexp.MustCompile(`(?is)<form\b([^>]*)>(.*?)</form>`)
	attrRe  = regexp.MustCompile(`(?is)([a-z_:-]+)\s*=\s*("([^"]*)"|'([^']*)')`)
	inputRe = regexp.MustCompile(`(?is)<input\b([^>]*)>`)
	titleRe = regexp.MustCompile(`(?is)<title>(.*?)</title>`)
)

func attrs(s string) map[string]string {
	out := map[string]string{}
	for _, m := range attrRe.FindAllStringSubmatch(s, -1) {
		v := m[3]
		if m[4] != "" {
			v = m[4]
		}
		out[strings.ToLower(m[1])] = html.UnescapeString(v)
	}
	return out
}

// loginForm: Keycloak's login form (id kc-form-login): its action and hidden fields.
func loginForm(page []byte, base *url.URL) (string, url.Values, bool) {
	for _, m := range formRe.FindAllStringSubmatch(string(page), -1) {
		a := attrs(m[1])
		if a["id"] != "kc-form-login" {
			continue
		}
		action, err := base.Parse(a["action"])
		if err != nil {
			return "", nil, false
		}
		fields := url.Values{}
		for _, in := range inputRe.FindAllStringSubmatch(m[2], -1) {
			ia := attrs(in[1])
			if ia["name"] != "" && (ia["type"] == "hidden") {
				fields.Set(ia["name"], ia["value"])
			}
		}
		return action.String(), fields, true
	}
	return "", nil, false
}

type Attempt struct {
	User    string             `json:"user"`
	Attempt int                `json:"attempt"`
	StartUS int64              `json:"t_us"`
	OK      bool               `json:"ok"`
	Stage   string             `json:"stage"` // where it ended: start, login, callback, app, done
	Status  int                `json:"status"`
	Error   string             `json:"error,omitempty"`
	Detail  string             `json:"detail,omitempty"`
	Stages  map[string]float64 `json:"stages_ms"`
}

func isRedirect(code int) bool { return code >= 301 && code <= 308 && code != 304 }

// signInOnce: app URL -> Keycloak's login page -> credentials -> oauth2-proxy's callback -> app.
func signInOnce(c *http.Client, u User, a *Attempt) bool {
	stage := func(name string, t0 time.Time) { a.Stages[name] = float64(time.Since(t0).Microseconds()) / 1000 }
	bad := func(st string, resp *http.Response, body []byte, err error) bool {
		a.Stage = st
		if err != nil {
			a.Error = errorKind(err)
			return false
		}
		a.Status = resp.StatusCode
		if m := titleRe.FindSubmatch(body); m != nil {
			a.Detail = strings.TrimSpace(html.UnescapeString(string(m[1])))
		} else if len(body) > 0 {
			a.Detail = strings.TrimSpace(string(body[:min(len(body), 80)]))
		}
		return false
	}
	// 1. the app sends the browser to Keycloak (through oauth2-proxy's redirect)
	t0 := time.Now()
	target := u.URL
	var resp *http.Response
	var body []byte
	var err error
	for hop := 0; ; hop++ {
		resp, body, err = get(c, "GET", target, nil)
		if err != nil || hop > 10 {
			return bad("start", resp, body, err)
		}
		if !isRedirect(resp.StatusCode) {
			break
		}
		next, perr := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if perr != nil {
			return bad("start", resp, body, perr)
		}
		target = next.String()
	}
	stage("start", t0)
	if resp.StatusCode == 200 && strings.Contains(string(body), "\"headers\"") {
		// the app itself: this browser is signed in already (an earlier attempt got as far as
		// the session cookie and failed after it)
		a.Stage, a.Status, a.OK = "done", 200, true
		return true
	}
	action, fields, ok := loginForm(body, resp.Request.URL)
	if resp.StatusCode != 200 || !ok {
		return bad("start", resp, body, nil)
	}
	// 2. the credentials (Keycloak checks the password hash): a redirect to the callback
	t0 = time.Now()
	fields.Set("username", u.Username)
	fields.Set("password", u.Password)
	resp, body, err = get(c, "POST", action, fields)
	if err != nil || !isRedirect(resp.StatusCode) || !strings.Contains(resp.Header.Get("Location"), "/oauth2/callback") {
		return bad("login", resp, body, err)
	}
	stage("login", t0)
	// 3. oauth2-proxy redeems the code, stores the session, sets the cookie
	t0 = time.Now()
	cb, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
	resp, body, err = get(c, "GET", cb.String(), nil)
	if err != nil || !isRedirect(resp.StatusCode) {
		return bad("callback", resp, body, err)
	}
	stage("callback", t0)
	// 4. back at the app, signed in
	t0 = time.Now()
	back, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
	resp, body, err = get(c, "GET", back.String(), nil)
	if err != nil || resp.StatusCode != 200 {
		return bad("app", resp, body, err)
	}
	stage("app", t0)
	a.Stage, a.Status, a.OK = "done", 200, true
	return true
}

// parallel runs work for every item on `workers` goroutines and returns when all are done.
func parallel[T any](workers int, items []T, work func(T)) {
	jobs := make(chan T)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range jobs {
				work(it)
			}
		}()
	}
	for _, it := range items {
		jobs <- it
	}
	close(jobs)
	wg.Wait()
}

func signin(cfg *Config, pool *x509.CertPool) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 1
	}
	out, err := os.OpenFile(cfg.AttemptsOut, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fail("%v", err)
	}
	defer out.Close()
	var mu sync.Mutex
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	sessions := []Session{}
	start := time.Now()
	var okCount, failCount atomic.Int64
	parallel(cfg.Concurrency, cfg.Users, func(u User) {
		c, jar := newBrowser(cfg, pool)
		for n := 1; n <= cfg.Attempts; n++ {
			a := &Attempt{User: u.Username, Attempt: n, StartUS: time.Since(start).Microseconds(),
				Stages: map[string]float64{}}
			t0 := time.Now()
			ok := signInOnce(c, u, a)
			a.Stages["total"] = float64(time.Since(t0).Microseconds()) / 1000
			mu.Lock()
			_ = enc.Encode(a)
			if ok {
				app, _ := url.Parse(u.URL)
				s := Session{ID: u.Username, URL: u.URL}
				for _, ck := range jar.Cookies(app) {
					if ck.Name == cfg.CookieName {
						s.Cookies = append(s.Cookies, Cookie{ck.Name, ck.Value})
					}
				}
				sessions = append(sessions, s)
			}
			mu.Unlock()
			if ok {
				okCount.Add(1)
				break
			}
			failCount.Add(1)
			time.Sleep(time.Duration(cfg.RetryDelayMS) * time.Millisecond)
		}
		c.CloseIdleConnections()
	})
	w.Flush()
	writeJSON(cfg.SessionsOut, sessions)
	fmt.Printf("{\"signed_in\": %d, \"failed_attempts\": %d, \"seconds\": %.3f, \"start_unix_ns\": %d}\n",
		okCount.Load(), failCount.Load(), time.Since(start).Seconds(), start.UnixNano())
}

func writeJSON(path string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		fail("%v", err)
	}
}

// ---------------------------------------------------------------------------- drive

type Record struct {
	TUS, LatUS int64
	Status     int
	Session    int
	Flags      int
}

// Failure: what a failed request got, enough to tell who answered it: the gateway's own reply
// (server istio-envoy, no upstream service time: a refused check, no healthy upstream, a reset
// upstream), the app's or oauth2-proxy's, or no response at all (the transport error).
type Failure struct {
	TUS          int64  `json:"t_us"`
	LatUS        int64  `json:"lat_us"`
	Status       int    `json:"status"`
	Session      int    `json:"session"`
	Server       string `json:"server,omitempty"`
	UpstreamTime string `json:"upstream_ms,omitempty"`
	Body         string `json:"body,omitempty"`
	Error        string `json:"error,omitempty"`
}

func failureOf(r Record, resp *http.Response, body []byte, err error) Failure {
	f := Failure{TUS: r.TUS, LatUS: r.LatUS, Status: r.Status, Session: r.Session}
	if err != nil {
		f.Error = err.Error()
		return f
	}
	f.Server = resp.Header.Get("Server")
	f.UpstreamTime = resp.Header.Get("X-Envoy-Upstream-Service-Time")
	f.Body = strings.ToValidUTF8(string(body[:min(len(body), 200)]), "?")
	return f
}

type SessionSummary struct {
	ID        string `json:"id"`
	Requests  int    `json:"requests"`
	Failed    int    `json:"failed"`
	ClearedUS *int64 `json:"cleared_us"`
	Replaced  int    `json:"replaced"`
	HasCookie bool   `json:"has_cookie"`
}

const (
	flagSent     = 1
	flagCleared  = 2
	flagReplaced = 4
)

func cookieValue(jar http.CookieJar, u *url.URL, name string) string {
	for _, c := range jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func drive(cfg *Config, pool *x509.CertPool) {
	if len(cfg.Sessions) == 0 || cfg.Rate <= 0 {
		fail("drive needs sessions and a rate")
	}
	out, err := os.OpenFile(cfg.RequestsOut, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fail("%v", err)
	}
	defer out.Close()
	records := make(chan Record, 4096)
	failures := make(chan Failure, 1024)
	done := make(chan struct{})
	go func() {
		w := bufio.NewWriter(out)
		for r := range records {
			fmt.Fprintf(w, "%d,%d,%d,%d,%d\n", r.TUS, r.LatUS, r.Status, r.Session, r.Flags)
		}
		w.Flush()
		close(done)
	}()
	failDone := make(chan struct{})
	go func() {
		var enc *json.Encoder
		if cfg.FailuresOut != "" {
			f, err := os.OpenFile(cfg.FailuresOut, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				fail("%v", err)
			}
			defer f.Close()
			enc = json.NewEncoder(f)
		}
		for f := range failures {
			if enc != nil {
				enc.Encode(f)
			}
		}
		close(failDone)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; cancel() }()
	if cfg.DurationMS > 0 {
		time.AfterFunc(time.Duration(cfg.DurationMS)*time.Millisecond, cancel)
	}
	if cfg.StopFile != "" {
		go func() {
			for ctx.Err() == nil {
				if _, err := os.Stat(cfg.StopFile); err == nil {
					cancel()
				}
				// the run's directory is gone (the soak that started this ended without stopping
				// it): stop rather than load the machine for nobody
				if _, err := os.Stat(filepath.Dir(cfg.StopFile)); err != nil {
					cancel()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	// Each session requests every n/rate seconds (first at a random offset), the next request
	// right away when the previous one took longer: the sessions together send `rate` per second.
	interval := time.Duration(float64(len(cfg.Sessions)) / cfg.Rate * float64(time.Second))
	summaries := make([]SessionSummary, len(cfg.Sessions))
	var wg sync.WaitGroup
	for i, s := range cfg.Sessions {
		wg.Add(1)
		go func(i int, s Session) {
			defer wg.Done()
			c, jar := newBrowser(cfg, pool)
			defer c.CloseIdleConnections()
			app, err := url.Parse(s.URL)
			if err != nil {
				fail("session %s: %v", s.ID, err)
			}
			var seed []*http.Cookie
			for _, ck := range s.Cookies {
				seed = append(seed, &http.Cookie{Name: ck.Name, Value: ck.Value, Domain: cfg.CookieDomain,
					Path: "/", Secure: true, HttpOnly: true})
			}
			jar.SetCookies(app, seed)
			sum := &summaries[i]
			sum.ID = s.ID
			next := start.Add(time.Duration(rand.Float64() * float64(interval)))
			for {
				if d := time.Until(next); d > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
				}
				if ctx.Err() != nil {
					break
				}
				before := cookieValue(jar, app, cfg.CookieName)
				t0 := time.Now()
				resp, body, err := get(c, "GET", s.URL, nil)
				r := Record{TUS: t0.Sub(start).Microseconds(), LatUS: time.Since(t0).Microseconds(), Session: i}
				if before != "" {
					r.Flags |= flagSent
				}
				if err != nil {
					r.Status = transportStatus[errorKind(err)]
				} else {
					r.Status = resp.StatusCode
					if r.Status == 200 && !strings.Contains(string(body[:min(len(body), 4096)]), "\"headers\"") {
						r.Status = 299 // a 200 that is not the app's answer (never expected)
					}
				}
				after := cookieValue(jar, app, cfg.CookieName)
				switch {
				case before != "" && after == "":
					r.Flags |= flagCleared
					if sum.ClearedUS == nil {
						t := r.TUS
						sum.ClearedUS = &t
					}
				case before != "" && after != before:
					r.Flags |= flagReplaced
					sum.Replaced++
				}
				sum.Requests++
				if r.Status != 200 {
					failures <- failureOf(r, resp, body, err)
					sum.Failed++
				}
				records <- r
				if r.Flags&flagCleared != 0 {
					// signed out: a real user signs in again now; this browser stops here
					break
				}
				next = next.Add(interval)
				if now := time.Now(); next.Before(now) {
					next = now
				}
			}
			sum.HasCookie = cookieValue(jar, app, cfg.CookieName) != ""
		}(i, s)
	}
	wg.Wait()
	close(records)
	close(failures)
	<-done
	<-failDone
	writeJSON(cfg.SummaryOut, map[string]any{"start_unix_ns": start.UnixNano(), "sessions": summaries})
	total, failed := 0, 0
	for _, s := range summaries {
		total += s.Requests
		failed += s.Failed
	}
	fmt.Printf("{\"requests\": %d, \"failed\": %d, \"seconds\": %.3f}\n", total, failed, time.Since(start).Seconds())
}

// probe: one request per session with its original cookie (concurrency 16); summary_out gets
// {"id": status} for every session.
func probe(cfg *Config, pool *x509.CertPool) {
	statuses := make(map[string]int, len(cfg.Sessions))
	var mu sync.Mutex
	parallel(16, cfg.Sessions, func(s Session) {
		c, jar := newBrowser(cfg, pool)
		app, err := url.Parse(s.URL)
		if err != nil {
			fail("session %s: %v", s.ID, err)
		}
		var seed []*http.Cookie
		for _, ck := range s.Cookies {
			seed = append(seed, &http.Cookie{Name: ck.Name, Value: ck.Value, Domain: cfg.CookieDomain, Path: "/"})
		}
		jar.SetCookies(app, seed)
		status := 0
		resp, body, err := get(c, "GET", s.URL, nil)
		if err != nil {
			status = transportStatus[errorKind(err)]
		} else if status = resp.StatusCode; status == 200 && !strings.Contains(string(body), "\"headers\"") {
			status = 299
		}
		c.CloseIdleConnections()
		mu.Lock()
		statuses[s.ID] = status
		mu.Unlock()
	})
	writeJSON(cfg.SummaryOut, statuses)
	ok := 0
	for _, st := range statuses {
		if st == 200 {
			ok++
		}
	}
	fmt.Printf("{\"sessions\": %d, \"working\": %d}\n", len(statuses), ok)
}

// ssoOnce: the app sends the browser to Keycloak, which answers at once from its SSO session (no
// form), oauth2-proxy's callback stores a new session, the app answers.
func ssoOnce(c *http.Client, target string) (string, int) {
	for hop := 0; hop < 12; hop++ {
		resp, body, err := get(c, "GET", target, nil)
		if err != nil {
			return errorKind(err), 0
		}
		if isRedirect(resp.StatusCode) {
			next, perr := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if perr != nil {
				return "location", resp.StatusCode
			}
			target = next.String()
			continue
		}
		if resp.StatusCode == 200 && strings.Contains(string(body), "\"headers\"") {
			return "", 200
		}
		if strings.Contains(string(body), "kc-form-login") {
			return "login-form", resp.StatusCode
		}
		return "status", resp.StatusCode
	}
	return "redirects", 0
}

// mint: `repeat` sessions per user, written by oauth2-proxy's callback like any sign-in.
func mint(cfg *Config, pool *x509.CertPool) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Repeat <= 0 {
		cfg.Repeat = 1
	}
	start := time.Now()
	var made, failed atomic.Int64
	var mu sync.Mutex
	failures := map[string]int{}
	parallel(cfg.Concurrency, cfg.Users, func(u User) {
		c, jar := newBrowser(cfg, pool)
		app, _ := url.Parse(u.URL)
		a := &Attempt{Stages: map[string]float64{}}
		if !signInOnce(c, u, a) {
			failed.Add(1)
			mu.Lock()
			failures["signin-"+a.Stage]++
			mu.Unlock()
			return
		}
		made.Add(1)
		for n := 1; n < cfg.Repeat; n++ {
			// a browser without oauth2-proxy's cookies, still signed in at Keycloak
			var gone []*http.Cookie
			for _, ck := range jar.Cookies(app) {
				if strings.HasPrefix(ck.Name, cfg.CookieName) {
					gone = append(gone, &http.Cookie{Name: ck.Name, Value: "", Domain: cfg.CookieDomain,
						Path: "/", MaxAge: -1})
				}
			}
			jar.SetCookies(app, gone)
			why, _ := ssoOnce(c, u.URL)
			if why == "" {
				made.Add(1)
			} else {
				failed.Add(1)
				mu.Lock()
				failures[why]++
				mu.Unlock()
			}
		}
		c.CloseIdleConnections()
	})
	secs := time.Since(start).Seconds()
	writeJSON(cfg.MintOut, map[string]any{"sessions": made.Load(), "failed": failed.Load(),
		"failures": failures, "seconds": secs})
	fmt.Printf("{\"sessions\": %d, \"failed\": %d, \"seconds\": %.3f}\n", made.Load(), failed.Load(), secs)
}
