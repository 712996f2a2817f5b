package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReferenceMatchesSchema keeps README.md's configuration reference and the schema one:
// every setting the Config type reads (its yaml names, as dotted paths; a list of objects is
// "name[]") has a row in the table, and every row names a setting the Config type has.
func TestReferenceMatchesSchema(t *testing.T) {
	doc, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := referencePaths(t, string(doc))
	schema := schemaPaths(reflect.TypeFor[Config](), "")
	for _, p := range schema {
		if !documented[p] {
			t.Errorf("the setting %s is not in README.md's reference", p)
		}
	}
	for p := range documented {
		if !slices.Contains(schema, p) {
			t.Errorf("README.md's reference documents %s, which the config does not have", p)
		}
	}
}

// schemaPaths lists the yaml paths of t's settings, leaves only (a struct is descended into).
func schemaPaths(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, schemaPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, schemaPaths(ft.Elem(), path+"[].")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// referencePaths reads the settings named in the first column of the reference table: one or
// more code spans, where a span that starts with "." continues the previous one's parent
// (`sites[].legacy.apikey` / `.impersonation`).
func referencePaths(t *testing.T, doc string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	in := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "| setting |") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(out) > 0 {
				break
			}
			continue
		}
		cell := strings.Split(line, "|")[1]
		var parent string
		for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
			p := m[1]
			if strings.HasPrefix(p, ".") {
				p = parent + p[1:]
			} else if i := strings.LastIndexByte(p, '.'); i >= 0 {
				parent = p[:i+1]
			} else {
				parent = ""
			}
			out[p] = true
		}
	}
	if len(out) == 0 {
		t.Fatal("README.md has no reference table (a header row starting with | setting |)")
	}
	return out
}
