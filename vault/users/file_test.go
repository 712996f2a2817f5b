package users_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault/users"
)

var testNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func openFile(t testing.TB, path string) *users.File {
	t.Helper()
	f, err := users.OpenFile(path, users.FileOptions{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func provision(t testing.TB, d users.Directory, site, provider, sub string) (string, bool) {
	t.Helper()
	var created bool
	id, err := d.Provision(users.WithCreated(context.Background(), &created), site, provider, sub,
		users.Profile{GivenName: "G " + sub, FamilyName: "F", Email: sub + "@example.com"})
	if err != nil {
		t.Fatalf("Provision(%s, %s, %q): %v", site, provider, sub, err)
	}
	return id, created
}

// TestFileProvision: same identity same id, new identity new id, per site and provider; the
// ids survive a reopen; the file is private.
func TestFileProvision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	d := openFile(t, path)
	steps := []struct {
		site, provider, sub string
		wantID              string
		wantCreated         bool
	}{
		{"docs", "corp", "alice", "1000000", true},
		{"docs", "corp", "alice", "1000000", false},
		{"docs", "corp", "bob", "1000001", true},
		{"docs", "other", "alice", "1000002", true}, // another provider: another identity
		{"wiki", "corp", "alice", "1000000", true},  // another site: its own ids
		{"docs", "corp", `we "ird": sub/with\stuff`, "1000003", true},
		{"docs", "corp", "bob", "1000001", false},
	}
	for _, s := range steps {
		id, created := provision(t, d, s.site, s.provider, s.sub)
		if id != s.wantID || created != s.wantCreated {
			t.Errorf("%s/%s/%q: id %s created %v, want %s %v", s.site, s.provider, s.sub, id, created, s.wantID, s.wantCreated)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("users file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{"next_id: \"1000004\"", "given_name: G alice", "email: alice@example.com", "created: \"2026-11-21T12:00:00Z\""} {
		if !strings.Contains(string(b), want) {
			t.Errorf("users file lacks %q:\n%s", want, b)
		}
	}
	again := openFile(t, path)
	for _, s := range steps {
		if id, created := provision(t, again, s.site, s.provider, s.sub); id != s.wantID || created {
			t.Errorf("after reopen %s/%s/%q: id %s created %v, want %s", s.site, s.provider, s.sub, id, created, s.wantID)
		}
	}
}

// TestFileSeededAndEdited: next_id written by hand moves the range; an id already in the file
// is never handed out again even when next_id says so; a broken file is an error, not a reset.
func TestFileSeededAndEdited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("sites:\n  docs:\n    next_id: \"5000\"\n")
	d := openFile(t, path)
	if id, _ := provision(t, d, "docs", "corp", "a"); id != "5000" {
		t.Errorf("seeded: %s, want 5000", id)
	}
	write("sites:\n  docs:\n    next_id: \"10\"\n    users:\n      corp:\n        a: {id: \"5000\"}\n        b: {id: \"11\"}\n")
	if id, created := provision(t, d, "docs", "corp", "a"); id != "5000" || created {
		t.Errorf("a after the edit: %s %v", id, created)
	}
	if id, _ := provision(t, d, "docs", "corp", "c"); id != "5001" {
		t.Errorf("c: %s, want 5001 (above every id in use)", id)
	}
	for name, content := range map[string]string{
		"not YAML":      "sites: [",
		"unknown field": "sites:\n  docs:\n    nextid: 3\n",
		"bad id":        "sites:\n  docs:\n    users:\n      corp:\n        a: {id: \"x1\"}\n",
		"no id":         "sites:\n  docs:\n    users:\n      corp:\n        a:\n",
	} {
		write(content)
		if _, err := d.Provision(context.Background(), "docs", "corp", "zed", users.Profile{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := users.OpenFile(filepath.Join(t.TempDir(), "missing", "users.yaml"), users.FileOptions{}); err == nil {
		t.Error("a users file in a missing folder opened")
	}
	for _, args := range [][3]string{{"", "corp", "a"}, {"docs", "", "a"}, {"docs", "corp", ""}, {"docs", "a/b", "a"}, {"docs", "..", "a"}} {
		if _, err := d.Provision(context.Background(), args[0], args[1], args[2], users.Profile{}); err == nil {
			t.Errorf("Provision%q: no error", args)
		}
	}
}

// checkAssignments verifies the directory guarantees over many results: one id per identity,
// one identity per id.
func checkAssignments(t *testing.T, got map[string][]string) map[string]string {
	t.Helper()
	idOf := map[string]string{}
	subOf := map[string]string{}
	for sub, ids := range got {
		for _, id := range ids {
			if prev, ok := idOf[sub]; ok && prev != id {
				t.Errorf("%s got two ids: %s and %s", sub, prev, id)
			}
			idOf[sub] = id
		}
		if other, ok := subOf[idOf[sub]]; ok && other != sub {
			t.Errorf("id %s given to %s and %s", idOf[sub], other, sub)
		}
		subOf[idOf[sub]] = sub
	}
	return idOf
}

// TestFileConcurrentDirectories: two directories on one file (each with its own lock file
// descriptor, as two processes have) and many goroutines provision 50 shared and 50 own
// identities each.
func TestFileConcurrentDirectories(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	dirs := []*users.File{openFile(t, path), openFile(t, path)}
	var mu sync.Mutex
	got := map[string][]string{}
	var wg sync.WaitGroup
	for i, d := range dirs {
		for n := range 50 {
			for _, sub := range []string{fmt.Sprint("shared-", n), fmt.Sprintf("own-%d-%d", i, n)} {
				wg.Go(func() {
					id, err := d.Provision(context.Background(), "docs", "corp", sub, users.Profile{GivenName: "G", FamilyName: "F"})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got[sub] = append(got[sub], id)
					mu.Unlock()
				})
			}
		}
	}
	wg.Wait()
	idOf := checkAssignments(t, got)
	if len(idOf) != 150 {
		t.Fatalf("%d identities, want 150", len(idOf))
	}
	// The file agrees with what was handed out.
	fresh := openFile(t, path)
	for sub, id := range idOf {
		if again, created := provision(t, fresh, "docs", "corp", sub); again != id || created {
			t.Errorf("%s: file says %s (created %v), handed out %s", sub, again, created, id)
		}
	}
}

// helperEnv names the users file a helper process provisions in (see TestFileTwoProcesses).
const helperEnv = "TOKENAGENT_USERS_HELPER_FILE"

// TestFileTwoProcesses: two processes (this test binary, run again as a helper) provision 50
// shared and 50 own identities each, concurrently, in one file.
func TestFileTwoProcesses(t *testing.T) {
	if path := os.Getenv(helperEnv); path != "" {
		helperProcess(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	type result struct {
		lines []string
		err   error
	}
	results := make(chan result, 2)
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileTwoProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+path, "TOKENAGENT_USERS_HELPER_NAME="+fmt.Sprint("p", i))
		go func() {
			out, err := cmd.Output()
			var lines []string
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				if l, ok := strings.CutPrefix(sc.Text(), "PROVISIONED "); ok {
					lines = append(lines, l)
				}
			}
			results <- result{lines, err}
		}()
	}
	got := map[string][]string{}
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("helper process: %v", r.err)
		}
		if len(r.lines) != 100 {
			t.Fatalf("a helper provisioned %d identities, want 100", len(r.lines))
		}
		for _, l := range r.lines {
			sub, id, _ := strings.Cut(l, " ")
			got[sub] = append(got[sub], id)
		}
	}
	idOf := checkAssignments(t, got)
	if len(idOf) != 150 {
		t.Fatalf("%d identities, want 150", len(idOf))
	}
	fresh := openFile(t, path)
	for sub, id := range idOf {
		if again, _ := provision(t, fresh, "docs", "corp", sub); again != id {
			t.Errorf("%s: file says %s, handed out %s", sub, again, id)
		}
	}
}

// helperProcess is the body of one helper process: provision concurrently, print each result.
func helperProcess(t *testing.T, path string) {
	name := os.Getenv("TOKENAGENT_USERS_HELPER_NAME")
	d, err := users.OpenFile(path, users.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for n := range 50 {
		for _, sub := range []string{fmt.Sprint("shared-", n), fmt.Sprintf("own-%s-%d", name, n)} {
			wg.Go(func() {
				id, err := d.Provision(context.Background(), "docs", "corp", sub, users.Profile{GivenName: "G", FamilyName: "F"})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				fmt.Printf("PROVISIONED %s %s\n", sub, id)
			})
		}
	}
	wg.Wait()
}
