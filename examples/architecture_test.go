package examples_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ARCHITECTURE.md's package table is the rule of who may import what; this test holds the code
// to it, and to the two rules of the two lifetimes: no constructor starts a goroutine, and no
// package keeps mutable state at package level.

const module = "github.com/tokenagent/tokenagent"

// archRow is one row of the package table: the packages it covers and what they may import.
type archRow struct {
	line     int
	patterns []string // module-relative; "a/*" covers what is under a, "a/{b,c}" is a/b and a/c
	allowed  []string // module-relative; each covers itself and what is under it
	anything bool     // "anything": no rule
	nested   bool     // a nested module, not in this module's packages
}

var backticks = regexp.MustCompile("`([^`]+)`")

// readPackageTable parses the table under "## Packages".
func readPackageTable(t *testing.T) []archRow {
	t.Helper()
	b, err := os.ReadFile("../ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []archRow
	in := false
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Packages"
			continue
		case !in || !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| package ") || strings.HasPrefix(line, "|---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			t.Fatalf("ARCHITECTURE.md:%d: %d cells, want 3", i+1, len(cells))
		}
		r := archRow{line: i + 1}
		for _, m := range backticks.FindAllStringSubmatch(cells[0], -1) {
			r.patterns = append(r.patterns, expandBraces(m[1])...)
		}
		rule := cells[2]
		r.anything = strings.Contains(rule, "anything")
		r.nested = strings.Contains(rule, "own `go.mod`")
		if !r.nested && !r.anything {
			for _, m := range backticks.FindAllStringSubmatch(rule, -1) {
				r.allowed = append(r.allowed, m[1])
			}
			if len(r.allowed) == 0 && strings.TrimSpace(rule) != "—" {
				t.Fatalf("ARCHITECTURE.md:%d: the rule %q names no package and is not — or anything", i+1, rule)
			}
		}
		if len(r.patterns) == 0 {
			t.Fatalf("ARCHITECTURE.md:%d: the row names no package", i+1)
		}
		rows = append(rows, r)
	}
	if len(rows) < 10 {
		t.Fatalf("read %d rows of the package table", len(rows))
	}
	return rows
}

// expandBraces turns "a/{b,c}" into a/b and a/c.
func expandBraces(p string) []string {
	i, j := strings.IndexByte(p, '{'), strings.IndexByte(p, '}')
	if i < 0 || j < i {
		return []string{p}
	}
	var out []string
	for _, alt := range strings.Split(p[i+1:j], ",") {
		out = append(out, p[:i]+alt+p[j+1:])
	}
	return out
}

func (r *archRow) covers(pkg string) bool {
	for _, p := range r.patterns {
		if prefix, ok := strings.CutSuffix(p, "/*"); ok {
			if strings.HasPrefix(pkg, prefix+"/") {
				return true
			}
		} else if p == pkg {
			return true
		}
	}
	return false
}

// rowOf is the row of pkg: its own, else its nearest ancestor's (agent/cmd/daemon/internal/certs
// lives by agent/cmd/daemon's rule).
func rowOf(rows []archRow, pkg string) *archRow {
	for p := pkg; ; p = p[:strings.LastIndexByte(p, '/')] {
		for i := range rows {
			if rows[i].covers(p) {
				return &rows[i]
			}
		}
		if !strings.Contains(p, "/") {
			return nil
		}
	}
}

type goPackage struct {
	ImportPath, Dir string
	Imports         []string
	GoFiles         []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestArchitectureImports: every package of the module has a row, and imports of tokenagent
// only what its row allows.
func TestArchitectureImports(t *testing.T) {
	rows := readPackageTable(t)
	for _, p := range listPackages(t) {
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok || rel == "examples" || strings.HasPrefix(rel, "examples/") {
			continue // the examples' packages are tests of the repository, not code of the agent
		}
		row := rowOf(rows, rel)
		if row == nil {
			t.Errorf("%s has no row in ARCHITECTURE.md's package table", rel)
			continue
		}
		if row.anything {
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if !ok || strings.HasPrefix(dep, rel+"/") {
				continue // not tokenagent's, or its own subpackage
			}
			if !slices.ContainsFunc(row.allowed, func(a string) bool { return dep == a || strings.HasPrefix(dep, a+"/") }) {
				t.Errorf("%s imports %s, which its row (ARCHITECTURE.md:%d) does not allow", rel, dep, row.line)
			}
		}
	}
}

// TestArchitectureLifetimes: no constructor (a function New…) starts a goroutine, and no
// package keeps sync or sync/atomic values at package level (test-support packages excepted).
func TestArchitectureLifetimes(t *testing.T) {
	rows := readPackageTable(t)
	fset := token.NewFileSet()
	for _, p := range listPackages(t) {
		rel, _ := strings.CutPrefix(p.ImportPath, module+"/")
		testSupport := false
		if row := rowOf(rows, rel); row != nil && row.anything && strings.HasSuffix(rel, "test") {
			testSupport = true
		}
		for _, name := range p.GoFiles {
			path := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if !testSupport && d.Recv == nil && strings.HasPrefix(d.Name.Name, "New") && d.Body != nil && startsGoroutine(d.Body) {
						t.Errorf("%s: %s starts a goroutine (a constructor must not: start background work with a method)", fset.Position(d.Pos()), d.Name.Name)
					}
				case *ast.GenDecl:
					if d.Tok != token.VAR || testSupport {
						continue
					}
					for _, spec := range d.Specs {
						vs := spec.(*ast.ValueSpec)
						if syncValue(vs.Type) || slices.ContainsFunc(vs.Values, func(v ast.Expr) bool {
							cl, ok := v.(*ast.CompositeLit)
							return ok && syncValue(cl.Type)
						}) {
							t.Errorf("%s: package-level %s is mutable state (sync or sync/atomic)", fset.Position(vs.Pos()), vs.Names[0].Name)
						}
					}
				}
			}
		}
	}
}

// startsGoroutine reports a go statement in body, outside the function literals it defines
// (a closure that starts one when it is called later is not the constructor starting it).
func startsGoroutine(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		switch n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.GoStmt:
			found = true
		}
		return !found
	})
	return found
}

// syncValue reports a type from package sync or sync/atomic.
func syncValue(e ast.Expr) bool {
	if s, ok := e.(*ast.SelectorExpr); ok {
		if id, ok := s.X.(*ast.Ident); ok {
			return id.Name == "sync" || id.Name == "atomic"
		}
	}
	return false
}

// TestCommandsLinkNoTesting: the commands tokenagent ships link no testing package.
func TestCommandsLinkNoTesting(t *testing.T) {
	for _, cmdPkg := range []string{"./agent/cmd/tokenagent", "./bench/cmd/load", "./bench/cmd/scale"} {
		cmd := exec.Command("go", "list", "-deps", cmdPkg)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmdPkg, err)
		}
		if slices.Contains(strings.Fields(string(out)), "testing") {
			t.Errorf("%s links the testing package", cmdPkg)
		}
	}
}
