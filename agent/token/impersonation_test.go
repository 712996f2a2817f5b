package token

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // the legacy format prescribes MD5
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

const blAPIKey = "legacy-api-key-0123456789abcdef"

var blImpSite = &SiteSettings{ID: "docs", Hosts: []string{"docs.example.com"}, LegacyImpersonation: true, LegacyAPIKey: true}

type legacyFixture struct {
	src   *blSource
	clock *blClock
	store *vault.Store
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	audit *LegacyAudit
}

func newLegacyFixture(t testing.TB) *legacyFixture {
	t.Helper()
	f := &legacyFixture{src: newBLSource(), reg: prometheus.NewRegistry(), logs: &bytes.Buffer{},
		clock: newBLClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))}
	f.src.set("sites/docs/legacy", map[string]any{"apikey": blAPIKey})
	f.store = newBLStore(t, f.src, f.clock.Now)
	audit, err := NewLegacyAudit(f.reg, slog.New(slog.NewTextHandler(f.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f.audit = audit
	return f
}

func (f *legacyFixture) imp() *ImpersonationVerifier {
	return &ImpersonationVerifier{Keys: f.store, Audit: f.audit, Now: f.clock.Now}
}

// count reads tokenagent_legacy_credentials_total{site,kind} from the fixture's registry.
func (f *legacyFixture) count(site string, kind Kind) float64 {
	mfs, err := f.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != LegacyMetricName {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["site"] == site && labels["kind"] == string(kind) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// impToken builds a token by hand from the SPEC's formula, independently of the mint helper.
func impToken(key, user string, epoch int64) string {
	e := strconv.FormatInt(epoch, 10)
	sum := md5.Sum([]byte(strings.TrimPrefix(user, "=") + ":" + e + ":" + key))
	return "imp_" + e + "_" + hex.EncodeToString(sum[:]) + "_" + user
}

func TestImpersonationVerify(t *testing.T) {
	f := newLegacyFixture(t)
	v := f.imp()
	now := f.clock.Now().Unix()
	upper := func(tok string) string {
		p, _ := parseImpersonationToken(tok)
		return strings.Replace(tok, p.digest, strings.ToUpper(p.digest), 1)
	}
	tests := []struct {
		name, tok string
		site      *SiteSettings
		want      reason.Reason
		user      string
	}{
		{name: "user id", tok: impToken(blAPIKey, "42", now), user: "42"},
		{name: "username", tok: impToken(blAPIKey, "=jdoe", now), user: "=jdoe"},
		{name: "username with underscore", tok: impToken(blAPIKey, "=j_doe_x", now), user: "=j_doe_x"},
		{name: "encoded username", tok: impToken(blAPIKey, "=j%40doe", now), user: "=j%40doe"},
		{name: "upper-case digest", tok: upper(impToken(blAPIKey, "42", now)), user: "42"},
		{name: "mixed-case digest", tok: func() string {
			tok := impToken(blAPIKey, "42", now)
			p, _ := parseImpersonationToken(tok)
			d := []byte(p.digest)
			for i := range d {
				if i%2 == 0 {
					d[i] = strings.ToUpper(string(d[i]))[0]
				}
			}
			return strings.Replace(tok, p.digest, string(d), 1)
		}(), user: "42"},
		{name: "exactly 60 s old", tok: impToken(blAPIKey, "42", now-60), user: "42"},
		{name: "61 s old", tok: impToken(blAPIKey, "42", now-61), want: reason.TokenExpired},
		{name: "exactly 60 s ahead", tok: impToken(blAPIKey, "42", now+60), user: "42"},
		{name: "61 s ahead", tok: impToken(blAPIKey, "42", now+61), want: reason.TokenNotYetValid},
		{name: "wrong key", tok: impToken("other-key", "42", now), want: reason.BadSignature},
		{name: "old token wrong key checked before time", tok: impToken("other-key", "42", now-3600), want: reason.BadSignature},
		{name: "digest over other user", tok: strings.Replace(impToken(blAPIKey, "42", now), "_42", "_43", 1), want: reason.BadSignature},
		{name: "digest with = included", tok: func() string {
			e := strconv.FormatInt(now, 10)
			sum := md5.Sum([]byte("=jdoe:" + e + ":" + blAPIKey))
			return "imp_" + e + "_" + hex.EncodeToString(sum[:]) + "_=jdoe"
		}(), want: reason.BadSignature},
		{name: "decoded username digest", tok: func() string {
			e := strconv.FormatInt(now, 10)
			sum := md5.Sum([]byte("j@doe:" + e + ":" + blAPIKey))
			return "imp_" + e + "_" + hex.EncodeToString(sum[:]) + "_=j%40doe"
		}(), want: reason.BadSignature},
		{name: "switch off", tok: impToken(blAPIKey, "42", now), site: &SiteSettings{ID: "docs"}, want: reason.LegacyTokenDisabled},
		{name: "switch off malformed", tok: "imp_x", site: &SiteSettings{ID: "docs"}, want: reason.LegacyTokenDisabled},
		{name: "no legacy record", tok: impToken(blAPIKey, "42", now), site: &SiteSettings{ID: "nolegacy", LegacyImpersonation: true}, want: reason.UnknownKey},
		{name: "no prefix", tok: strings.TrimPrefix(impToken(blAPIKey, "42", now), "imp_"), want: reason.MalformedToken},
		{name: "empty", tok: "", want: reason.MalformedToken},
		{name: "prefix only", tok: "imp_", want: reason.MalformedToken},
		{name: "no user", tok: strings.TrimSuffix(impToken(blAPIKey, "42", now), "42"), want: reason.MalformedToken},
		{name: "empty username", tok: impToken(blAPIKey, "=", now), want: reason.MalformedToken},
		{name: "username with space", tok: impToken(blAPIKey, "=j doe", now), want: reason.MalformedToken},
		{name: "username bad escape", tok: impToken(blAPIKey, "=j%zzdoe", now), want: reason.MalformedToken},
		{name: "user not a number", tok: impToken(blAPIKey, "4x2", now), want: reason.MalformedToken},
		{name: "user id too long", tok: impToken(blAPIKey, strings.Repeat("1", 20), now), want: reason.MalformedToken},
		{name: "epoch not a number", tok: "imp_12a_" + strings.Repeat("0", 32) + "_42", want: reason.MalformedToken},
		{name: "epoch empty", tok: "imp__" + strings.Repeat("0", 32) + "_42", want: reason.MalformedToken},
		{name: "epoch too big", tok: "imp_99999999999999999999_" + strings.Repeat("0", 32) + "_42", want: reason.MalformedToken},
		{name: "digest short", tok: "imp_1_" + strings.Repeat("0", 31) + "_42", want: reason.MalformedToken},
		{name: "digest long", tok: "imp_1_" + strings.Repeat("0", 33) + "_42", want: reason.MalformedToken},
		{name: "digest not hex", tok: "imp_1_" + strings.Repeat("g", 32) + "_42", want: reason.MalformedToken},
		{name: "too long", tok: impToken(blAPIKey, "="+strings.Repeat("a", 220), now), want: reason.MalformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := tt.site
			if site == nil {
				site = blImpSite
			}
			id, err := v.Verify(context.Background(), site, tt.tok)
			if got := blReason(err); got != tt.want || (tt.want == "" && err != nil) {
				t.Fatalf("Verify(%q) = %v, want %q", tt.tok, err, tt.want)
			}
			if err != nil {
				if e := reason.From(err); e.HTTPStatus() != 401 || strings.Contains(e.Error(), blAPIKey) {
					t.Fatalf("denial %v: status %d, want 401 and no secret", e, e.HTTPStatus())
				}
				return
			}
			if id.Kind != KindImpersonation || id.User != tt.user || id.Elevated {
				t.Fatalf("identity %+v, want kind impersonation user %q", id, tt.user)
			}
		})
	}
}

func TestImpersonationMint(t *testing.T) {
	f := newLegacyFixture(t)
	v := f.imp()
	key := vault.NewSecret([]byte(blAPIKey))
	for _, user := range []string{"7", "=jdoe", "=j doe@example.com", "=ü_ber"} {
		tok := MintImpersonationToken(key, user, f.clock.Now())
		id, err := v.Verify(context.Background(), blImpSite, tok)
		if err != nil {
			t.Fatalf("%q: minted %q: %v", user, tok, err)
		}
		if !strings.HasSuffix(tok, "_"+id.User) {
			t.Fatalf("%q: user %q not as in token %q", user, id.User, tok)
		}
		if id.Expires != time.Unix(f.clock.Now().Unix()+60, 0) {
			t.Fatalf("expires %v", id.Expires)
		}
	}
	if got, want := MintImpersonationToken(key, "42", f.clock.Now()), impToken(blAPIKey, "42", f.clock.Now().Unix()); got != want {
		t.Fatalf("mint %q, by the formula %q", got, want)
	}
}

func TestImpersonationAudit(t *testing.T) {
	f := newLegacyFixture(t)
	v := f.imp()
	tok := impToken(blAPIKey, "42", f.clock.Now().Unix())
	for range 3 {
		if _, err := v.Verify(context.Background(), blImpSite, tok); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = v.Verify(context.Background(), blImpSite, impToken("wrong", "42", f.clock.Now().Unix()))
	if got := f.count("docs", KindImpersonation); got != 3 {
		t.Fatalf("counter %v, want 3 (accepted uses only)", got)
	}
	logs := f.logs.String()
	if strings.Count(logs, "level=WARN") != 3 || !strings.Contains(logs, "kind=impersonation") ||
		!strings.Contains(logs, "credential_sha256="+CredentialFingerprint(tok)) {
		t.Fatalf("logs:\n%s", logs)
	}
	p, _ := parseImpersonationToken(tok)
	if strings.Contains(logs, tok) || strings.Contains(logs, p.digest) || strings.Contains(logs, blAPIKey) {
		t.Fatalf("the log holds a secret:\n%s", logs)
	}
}

func TestParseImpersonationAllocs(t *testing.T) {
	tok := impToken(blAPIKey, "=j_doe", 1700000000)
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := parseImpersonationToken(tok); !ok {
			t.Fatal("not parsed")
		}
	})
	if allocs != 0 {
		t.Errorf("parse allocates %v times", allocs)
	}
}

// FuzzParseImpersonation checks the Impersonation Auth Token parser on arbitrary input: no
// panics, fields are substrings in order, and a parsed token is rebuilt exactly from them.
func FuzzParseImpersonation(f *testing.F) {
	for _, s := range []string{
		impToken(blAPIKey, "42", 1700000000), impToken(blAPIKey, "=j_doe", 1700000000),
		impToken(blAPIKey, "=j%40doe", 1), "imp_", "imp__", "imp_1_" + strings.Repeat("A", 32) + "_=x",
		"imp_1_" + strings.Repeat("0", 32) + "__", "tkn_a_1_2_" + strings.Repeat("0", 64),
	} {
		f.Add(s)
	}
	key := vault.NewSecret([]byte(blAPIKey))
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := parseImpersonationToken(s)
		if !ok {
			return
		}
		if got := ImpersonationPrefix + p.epochStr + "_" + p.digest + "_" + p.user; got != s {
			t.Fatalf("%q rebuilt as %q", s, got)
		}
		if len(p.digest) != 32 || !validUser(p.user) || !allDigits(p.epochStr) {
			t.Fatalf("%q: bad parts %+v", s, p)
		}
		_ = impersonationDigestOK(key, p)
	})
}
