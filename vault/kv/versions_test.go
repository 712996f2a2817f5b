package kv

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault"
)

func genKey(i int) string {
	k := make([]byte, 32)
	for j := range k {
		k[j] = byte(i + j)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// versionsOf returns the version numbers of raws, and checks each one's key is that version's.
func versionsOf(t *testing.T, raws []vault.Raw) []int {
	t.Helper()
	var out []int
	for _, r := range raws {
		if got, want := r.Data["key"], genKey(r.Version); got != want {
			t.Errorf("version %d holds key %v, want %v", r.Version, got, want)
		}
		if r.Created.IsZero() {
			t.Errorf("version %d has no creation time", r.Version)
		}
		out = append(out, r.Version)
	}
	return out
}

// TestAuthTokenGenerations checks that Auth Token key generations are KV versions with their
// created_time, cut off by since (a version is kept while its successor was created at or after
// since), and that deleted or destroyed older versions are skipped.
func TestAuthTokenGenerations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	p := vault.SitePath("docs", "authtoken")
	created := map[int]time.Time{}
	for i := 1; i <= 4; i++ {
		s, err := f.kv().Put(ctx, f.full(p), map[string]any{"key": genKey(i)})
		if err != nil {
			t.Fatal(err)
		}
		created[s.VersionMetadata.Version] = s.VersionMetadata.CreatedTime
	}

	cases := []struct {
		name  string
		since time.Time
		want  []int
	}{
		{"everything", time.Time{}, []int{4, 3, 2, 1}},
		{"since the second version", created[2], []int{4, 3, 2, 1}},
		{"just after the second version", created[2].Add(time.Nanosecond), []int{4, 3, 2}},
		{"since the fourth version", created[4], []int{4, 3}},
		{"after the newest", created[4].Add(time.Nanosecond), []int{4}},
		{"far future", time.Now().Add(time.Hour), []int{4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raws, err := f.src.Versions(ctx, p, c.since)
			if err != nil {
				t.Fatal(err)
			}
			if got := versionsOf(t, raws); !reflect.DeepEqual(got, c.want) {
				t.Errorf("versions = %v, want %v", got, c.want)
			}
			for _, r := range raws {
				if !r.Created.Equal(created[r.Version]) {
					t.Errorf("version %d created %v, want %v", r.Version, r.Created, created[r.Version])
				}
			}
		})
	}

	// Older versions that were deleted or destroyed are skipped; the cut-off still counts from
	// the version that replaced each one.
	if err := f.kv().DeleteVersions(ctx, f.full(p), []int{2}); err != nil {
		t.Fatal(err)
	}
	if err := f.kv().Destroy(ctx, f.full(p), []int{3}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		since time.Time
		want  []int
	}{
		{"deleted and destroyed skipped", time.Time{}, []int{4, 1}},
		{"cut-off past a skipped version", created[2].Add(time.Nanosecond), []int{4}},
	}
	for _, c := range steps {
		t.Run(c.name, func(t *testing.T) {
			raws, err := f.src.Versions(ctx, p, c.since)
			if err != nil {
				t.Fatal(err)
			}
			if got := versionsOf(t, raws); !reflect.DeepEqual(got, c.want) {
				t.Errorf("versions = %v, want %v", got, c.want)
			}
		})
	}
	// Version 1 was replaced by version 2 (deleted since): its grace counts from version 2's
	// creation, not from version 4's, so deleting a version never lengthens an older key's life.
	raws, err := f.src.Versions(ctx, p, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !raws[0].Replaced.IsZero() || !raws[1].Replaced.Equal(created[2]) {
		t.Errorf("replaced times = %v, %v; want zero and version 2's creation %v", raws[0].Replaced, raws[1].Replaced, created[2])
	}

	// Through the Store: the generations a verifier gets.
	st := f.store(f.src, vault.StoreOptions{})
	keys, err := st.AuthTokenKeys(ctx, "docs", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, g := range keys.Generations {
		got = append(got, g.Version)
	}
	if want := []int{4, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("store generations = %v, want %v", got, want)
	}
}

// TestDeletedLatestVersionIsNotFound: a soft-deleted or destroyed latest version, or deleted
// metadata, leaves no readable data: the record is absent (SPEC §6), even with older versions.
func TestDeletedLatestVersionIsNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	cases := []struct {
		name   string
		delete func(path string) error
	}{
		{"soft delete of the latest version", func(p string) error { return f.kv().Delete(ctx, p) }},
		{"destroy of the latest version", func(p string) error { return f.kv().Destroy(ctx, p, []int{2}) }},
		{"metadata deleted", func(p string) error { return f.kv().DeleteMetadata(ctx, p) }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			site := fmt.Sprintf("site%d", i)
			at := vault.SitePath(site, "authtoken")
			sk := vault.SitePath(site, "server-tokens", "k1")
			f.put(at, map[string]any{"key": genKey(1)})
			f.put(at, map[string]any{"key": genKey(2)})
			f.put(sk, map[string]any{"secret": "one"})
			f.put(sk, map[string]any{"secret": "two"})
			if _, err := f.src.Read(ctx, sk); err != nil {
				t.Fatalf("before delete: %v", err)
			}
			for _, p := range []string{at, sk} {
				if err := c.delete(f.full(p)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.src.Read(ctx, sk); !isNotFound(err) {
				t.Errorf("Read = %v, want ErrNotFound", err)
			}
			if _, err := f.src.Read(ctx, at); !isNotFound(err) {
				t.Errorf("Read authtoken = %v, want ErrNotFound", err)
			}
			if raws, err := f.src.Versions(ctx, at, time.Time{}); !isNotFound(err) {
				t.Errorf("Versions = %d versions, %v; want ErrNotFound", len(raws), err)
			}
			st := f.store(f.src, vault.StoreOptions{})
			if _, err := st.ServerKey(ctx, site, "k1"); !isNotFound(err) {
				t.Errorf("store ServerKey = %v, want ErrNotFound", err)
			}
			if _, err := st.AuthTokenKeys(ctx, site, time.Hour); !isNotFound(err) {
				t.Errorf("store AuthTokenKeys = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestRevocationWithinRefresh: disabling a server key, and then deleting it, takes effect for
// the next lookup once the refresh interval has passed since the change.
func TestRevocationWithinRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	const refresh = 200 * time.Millisecond
	cases := []struct {
		name   string
		delete func(path string) error
	}{
		{"soft delete", func(p string) error { return f.kv().Delete(ctx, p) }},
		{"destroy", func(p string) error {
			m, err := f.kv().GetMetadata(ctx, p)
			if err != nil {
				return err
			}
			return f.kv().Destroy(ctx, p, []int{m.CurrentVersion})
		}},
		{"metadata delete", func(p string) error { return f.kv().DeleteMetadata(ctx, p) }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			site := fmt.Sprintf("rev%d", i)
			p := vault.SitePath(site, "server-tokens", "k1")
			f.put(p, map[string]any{"secret": "s", "disabled": false})
			// A clock the test moves ahead, and no stale serving on a slow read: the lookup
			// after one refresh interval reads Vault and waits for the answer.
			clk := &testClock{}
			st := f.store(f.src, vault.StoreOptions{Refresh: refresh, Now: clk.now, StaleWait: time.Minute})
			k, err := st.ServerKey(ctx, site, "k1")
			if err != nil || k.Disabled {
				t.Fatalf("before: %+v, %v", k, err)
			}

			f.put(p, map[string]any{"secret": "s", "disabled": true})
			clk.skip(refresh)
			k, err = st.ServerKey(ctx, site, "k1")
			if err != nil || !k.Disabled {
				t.Fatalf("a refresh interval after disabling: disabled=%v, %v; want disabled", k != nil && k.Disabled, err)
			}

			if err := c.delete(f.full(p)); err != nil {
				t.Fatal(err)
			}
			clk.skip(refresh)
			if k, err := st.ServerKey(ctx, site, "k1"); !isNotFound(err) {
				t.Fatalf("a refresh interval after deleting: %+v, %v; want ErrNotFound", k, err)
			}
		})
	}
}
