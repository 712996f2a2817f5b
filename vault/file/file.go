// Package file is the embedded key source: one YAML file that mirrors the Vault layout of
// SPEC §6, one map per site. It needs no server, so a development agent runs with nothing but
// its config; it is re-read when it changes on disk.
//
//	sites:
//	  docs:
//	    authtoken:                       # generations, newest first
//	      - {key: "<base64>", created: "2026-11-01T00:00:00Z"}
//	    server-tokens:
//	      k1: {secret: "s3cret", restricted_user: "", disabled: false}
//	    browser-tokens:
//	      pub1: {origins: ["*.example.com"]}
//	    oauth: {issuer: "...", audience: "...", jwks: {keys: [...]}}
//	    issuers: {cxone: {issuer: "...", audience: "...", jwks_uri: "https://..."}}
//	    idps: {corp: {issuer: "...", client_id: "...", jwks: {keys: [...]}}}
//	    legacy: {apikey: "..."}
//
// # Notes
//
//   - Safe for concurrent use.
//   - A file that cannot be parsed keeps the last good contents serving; the error is
//     returned by Ready and logged.
package file

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/filestamp"
)

// sections of a site: those holding one record, and those holding a map of named records.
var (
	singleSections = map[string]bool{"oauth": true, "legacy": true}
	namedSections  = map[string]bool{"server-tokens": true, "browser-tokens": true, "issuers": true, "idps": true}
)

// Source is the file key source. Create it with Open.
type Source struct {
	path string

	mu       sync.RWMutex
	records  map[string][]vault.Raw // path -> versions, newest first
	dirs     map[string][]string    // dir -> sorted names
	stamp    filestamp.Stamp        // the file as last read
	checked  time.Time
	loadErr  error
	checkGap time.Duration
}

var _ vault.Source = (*Source)(nil)

// Open reads the key file at path. The error names the file and the field at fault.
func Open(path string) (*Source, error) {
	s := &Source{path: path, checkGap: time.Second}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Name implements vault.Source.
func (s *Source) Name() string { return "file" }

// Ready implements vault.Source: nil once the file has been read, the last reload's error
// otherwise.
func (s *Source) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.loadErr
}

// Read implements vault.Source.
func (s *Source) Read(_ context.Context, path string) (vault.Raw, error) {
	s.maybeReload()
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.records[path]
	if len(v) == 0 {
		return vault.Raw{}, vault.ErrNotFound
	}
	return v[0], nil
}

// Versions implements vault.Source.
func (s *Source) Versions(_ context.Context, path string, since time.Time) ([]vault.Raw, error) {
	s.maybeReload()
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.records[path]
	if len(v) == 0 {
		return nil, vault.ErrNotFound
	}
	out := []vault.Raw{v[0]}
	for i := 1; i < len(v); i++ {
		if v[i-1].Created.Before(since) {
			break
		}
		r := v[i]
		r.Replaced = v[i-1].Created
		out = append(out, r)
	}
	return out, nil
}

// List implements vault.Source.
func (s *Source) List(_ context.Context, dir string) ([]string, error) {
	s.maybeReload()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.dirs[strings.TrimSuffix(dir, "/")]...), nil
}

// Reload reads the file again now, whether or not it changed. (Reads look at the file by
// themselves, at most once a second, and read it again when its size, time or identity
// changed; Reload is for callers that know it changed, such as tests.) On failure the records
// read before keep serving and Ready reports the error.
func (s *Source) Reload() error { return s.reload() }

// maybeReload re-reads the file when it changed (size, time or identity), checking at most
// once per checkGap.
func (s *Source) maybeReload() {
	now := time.Now()
	s.mu.RLock()
	due := now.Sub(s.checked) >= s.checkGap
	s.mu.RUnlock()
	if !due {
		return
	}
	st, err := os.Stat(s.path)
	s.mu.Lock()
	s.checked = now
	changed := err == nil && filestamp.FromInfo(st) != s.stamp
	s.mu.Unlock()
	if changed {
		_ = s.reload()
	}
}

func (s *Source) reload() error {
	st, statErr := os.Stat(s.path)
	records, dirs, err := parseFile(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Now()
	if statErr == nil {
		s.stamp = filestamp.FromInfo(st)
	}
	if err != nil {
		s.loadErr = err
		return err
	}
	s.records, s.dirs, s.loadErr = records, dirs, nil
	return nil
}

func parseFile(path string) (map[string][]vault.Raw, map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("keys file: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes the contents of a keys file into its records (keyed by path, newest version
// first) and directory listings. name is used in error messages.
func Parse(name string, b []byte) (map[string][]vault.Raw, map[string][]string, error) {
	var doc struct {
		Sites map[string]map[string]any `yaml:"sites"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("keys file %s: %v", name, err)
	}
	records := map[string][]vault.Raw{}
	dirs := map[string][]string{}
	for site, sections := range doc.Sites {
		for section, val := range sections {
			where := fmt.Sprintf("keys file %s: sites.%s.%s", name, site, section)
			switch {
			case section == "authtoken":
				gens, ok := val.([]any)
				if !ok {
					return nil, nil, fmt.Errorf("%s: want a list of {key, created} generations, newest first", where)
				}
				raws := make([]vault.Raw, 0, len(gens))
				for i, g := range gens {
					m, ok := g.(map[string]any)
					if !ok {
						return nil, nil, fmt.Errorf("%s[%d]: want a map with key and created", where, i)
					}
					raw := vault.Raw{Data: m, Version: len(gens) - i}
					if c, ok := m["created"]; ok && c != nil {
						t, err := asTime(c)
						if err != nil {
							return nil, nil, fmt.Errorf("%s[%d].created: %v", where, i, err)
						}
						raw.Created = t
					}
					raws = append(raws, raw)
				}
				records[vault.SitePath(site, section)] = raws
			case singleSections[section]:
				m, ok := val.(map[string]any)
				if !ok {
					return nil, nil, fmt.Errorf("%s: want a map of fields", where)
				}
				records[vault.SitePath(site, section)] = []vault.Raw{{Data: m, Version: 1}}
			case namedSections[section] || section == "users":
				m, ok := val.(map[string]any)
				if !ok {
					return nil, nil, fmt.Errorf("%s: want a map of name to record", where)
				}
				dir := vault.SitePath(site, section)
				names := make([]string, 0, len(m))
				for n, rec := range m {
					fields, ok := rec.(map[string]any)
					if !ok {
						return nil, nil, fmt.Errorf("%s.%s: want a map of fields", where, n)
					}
					records[dir+"/"+n] = []vault.Raw{{Data: fields, Version: 1}}
					names = append(names, n)
				}
				sort.Strings(names)
				dirs[dir] = names
			default:
				return nil, nil, fmt.Errorf("%s: unknown section (want authtoken, server-tokens, browser-tokens, oauth, issuers, idps, legacy or users)", where)
			}
		}
	}
	return records, dirs, nil
}

func asTime(v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t, nil
	case string:
		return time.Parse(time.RFC3339, t)
	}
	return time.Time{}, fmt.Errorf("want an RFC 3339 time, got %v", v)
}
