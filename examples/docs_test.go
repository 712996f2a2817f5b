package examples_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The documentation lives beside the code it describes; these tests keep it findable: every
// relative link in every Markdown file resolves (to a file, and to a heading when it names one),
// and the README stays the front door it is meant to be.

// repoRoot is the repository's root, seen from this package.
const repoRoot = ".."

// markdownFiles are the repository's Markdown files, but for what is not its own (test data,
// benchmark results, the Git directory).
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	mdLink  = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	fence   = regexp.MustCompile("(?s)```.*?```")
)

// anchors are the GitHub anchors of a Markdown file's headings (outside code blocks).
func anchors(doc string) map[string]bool {
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(fence.ReplaceAllString(doc, ""), -1) {
		out[slug(m[1])] = true
	}
	return out
}

// slug is GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestMarkdownLinks(t *testing.T) {
	files := markdownFiles(t)
	if len(files) < 10 {
		t.Fatalf("found %d Markdown files; is the walk rooted at the repository?", len(files))
	}
	docs := map[string]string{}
	read := func(p string) string {
		if d, ok := docs[p]; ok {
			return d
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs[p] = string(b)
		return docs[p]
	}
	checked := 0
	for _, f := range files {
		doc := fence.ReplaceAllString(read(f), "")
		for _, m := range mdLink.FindAllStringSubmatch(doc, -1) {
			target := m[1]
			if regexp.MustCompile(`^[a-z][a-z0-9+.-]*:`).MatchString(target) {
				continue // http:, https:, mailto:
			}
			checked++
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: the link %s goes nowhere", f, target)
					continue
				}
			}
			if frag == "" {
				continue
			}
			if fi, err := os.Stat(dest); err != nil || fi.IsDir() || !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: the link %s names a heading in something that is not a Markdown file", f, target)
				continue
			}
			if !anchors(read(dest))[frag] {
				t.Errorf("%s: the link %s names a heading %s does not have", f, target, dest)
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d relative links checked", checked)
	}
}

// The README is the front door: what tokenagent is, the two commands, a feature table, one
// screen of example and links; the reference is in the folders.
func TestReadmeIsShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 400 {
		t.Errorf("README.md has %d lines; keep it under 400 and move reference text into the folder it describes", n)
	}
	for _, want := range []string{"bash examples/dev/demo.sh", "bash .ci/test"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README.md no longer gives the command %q", want)
		}
	}
}

// Every folder that has documentation of its own is linked from the README's documentation map,
// so an engineer walking from the front door finds it.
func TestFolderReadmesLinked(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range markdownFiles(t) {
		rel, _ := filepath.Rel(repoRoot, f)
		if filepath.Base(rel) != "README.md" || rel == "README.md" || strings.Count(rel, string(filepath.Separator)) > 3 {
			continue
		}
		if !strings.Contains(string(b), "("+filepath.ToSlash(rel)+")") {
			t.Errorf("%s is not linked from README.md", rel)
		}
	}
}
