package users

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tokenagent/tokenagent/vault/filestamp"
	"go.yaml.in/yaml/v3"
)

// FileOptions tune a File directory. The zero value of each field takes its default.
type FileOptions struct {
	// FirstID is the first id handed out in a site whose next_id was never written (default
	// DefaultFirstID).
	FirstID int64
	// LockPoll is how often a writer waiting for another process's lock tries again (default
	// 5 ms).
	LockPoll time.Duration
	// Now is the clock for the records' created times (default time.Now).
	Now func() time.Time
}

// File is the embedded user directory: one YAML file for a development agent, safe for
// several agents (processes) on one machine.
//
//	# tokenagent user directory: written by the agent.
//	sites:
//	  docs:
//	    next_id: "1000002"
//	    users:
//	      corp:                                   # the provider (idps/<name>)
//	        alice@example.com:                    # the provider's sub
//	          {id: "1000000", given_name: Alice, family_name: Liddell, email: alice@example.com, created: "2026-11-21T12:00:00Z"}
//
// # Notes
//
//   - A lookup of a known identity reads the file only when it changed (size, time or inode)
//     since the last read.
//   - A new user is written under an exclusive flock on `<file>.lock`: the file is re-read
//     under the lock, the user added with the site's next_id, and the new contents written to
//     a temporary file that replaces the old one by rename (after fsync), so a reader never
//     sees half a file and two writers never hand out one id.
//   - next_id may be raised by hand to move a site's ids into another range (while no agent
//     writes); ids already in the file are never handed out again whatever next_id says.
//   - Safe for concurrent use. Close releases the lock file.
type File struct {
	path, lockPath string
	opts           FileOptions

	mu     sync.Mutex // serialises this directory's goroutines; flock serialises processes
	lock   *os.File
	doc    fileDoc
	loaded filestamp.Stamp
}

// fileDoc is the file's contents.
type fileDoc struct {
	Sites map[string]*fileSite `yaml:"sites"`
}

type fileSite struct {
	NextID string                           `yaml:"next_id,omitempty"`
	Users  map[string]map[string]*fileEntry `yaml:"users,omitempty"`
}

type fileEntry struct {
	ID         string `yaml:"id"`
	GivenName  string `yaml:"given_name,omitempty"`
	FamilyName string `yaml:"family_name,omitempty"`
	Email      string `yaml:"email,omitempty"`
	Created    string `yaml:"created,omitempty"`
}

var _ Directory = (*File)(nil)

// OpenFile returns the directory kept in the file at path. The file is created with the first
// user; its folder must exist.
func OpenFile(path string, opts FileOptions) (*File, error) {
	if opts.FirstID <= 0 {
		opts.FirstID = DefaultFirstID
	}
	if opts.LockPoll <= 0 {
		opts.LockPoll = 5 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	if st, err := os.Stat(filepath.Dir(abs)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("users file %s: its folder does not exist", path)
	}
	f := &File{path: abs, lockPath: abs + ".lock", opts: opts}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the directory's file.
func (f *File) Path() string { return f.path }

// Close releases the lock file. A closed File opens it again when it next writes.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lock == nil {
		return nil
	}
	err := f.lock.Close()
	f.lock = nil
	return err
}

// Provision implements Directory.
func (f *File) Provision(ctx context.Context, site, provider, sub string, p Profile) (string, error) {
	if err := checkArgs(site, provider, sub); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refresh(); err != nil {
		return "", err
	}
	if e := f.doc.lookup(site, provider, sub); e != nil {
		reportCreated(ctx, false)
		return e.ID, nil
	}
	unlock, err := f.lockFile(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have written since: read again under the lock.
	if err := f.refresh(); err != nil {
		return "", err
	}
	if e := f.doc.lookup(site, provider, sub); e != nil {
		reportCreated(ctx, false)
		return e.ID, nil
	}
	id, err := f.add(site, provider, sub, p)
	if err != nil {
		return "", err
	}
	if err := f.write(); err != nil {
		f.loaded = filestamp.Stamp{} // the file is what it was: read it again next time
		return "", err
	}
	reportCreated(ctx, true)
	return id, nil
}

func (d *fileDoc) lookup(site, provider, sub string) *fileEntry {
	s := d.Sites[site]
	if s == nil {
		return nil
	}
	return s.Users[provider][sub]
}

// add allocates the next id of site and records the user in memory.
func (f *File) add(site, provider, sub string, p Profile) (string, error) {
	if f.doc.Sites == nil {
		f.doc.Sites = map[string]*fileSite{}
	}
	s := f.doc.Sites[site]
	if s == nil {
		s = &fileSite{}
		f.doc.Sites[site] = s
	}
	next := f.opts.FirstID
	if s.NextID != "" {
		n, ok := parseID(s.NextID)
		if !ok {
			return "", fmt.Errorf("users file %s: sites.%s.next_id %q is not a positive decimal number", f.path, site, s.NextID)
		}
		next = n
	}
	// Never hand out an id the site already uses, whatever next_id says.
	for _, byProvider := range s.Users {
		for _, e := range byProvider {
			if n, ok := parseID(e.ID); ok && n >= next {
				next = n + 1
			}
		}
	}
	if next <= 0 || next >= 1<<63-1 {
		return "", fmt.Errorf("users file %s: site %s has no ids left", f.path, site)
	}
	id := fmt.Sprint(next)
	if s.Users == nil {
		s.Users = map[string]map[string]*fileEntry{}
	}
	if s.Users[provider] == nil {
		s.Users[provider] = map[string]*fileEntry{}
	}
	s.Users[provider][sub] = &fileEntry{ID: id, GivenName: p.GivenName, FamilyName: p.FamilyName,
		Email: p.Email, Created: f.opts.Now().UTC().Format(time.RFC3339)}
	s.NextID = fmt.Sprint(next + 1)
	return id, nil
}

// refresh reads the file again when it changed since it was last read. The caller holds mu.
func (f *File) refresh() error {
	st, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		if f.loaded.Exists() || f.doc.Sites == nil {
			f.doc, f.loaded = fileDoc{Sites: map[string]*fileSite{}}, filestamp.Stamp{}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	stamp := filestamp.FromInfo(st)
	if stamp == f.loaded && f.doc.Sites != nil {
		return nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("users file %s: %v", f.path, err)
	}
	if doc.Sites == nil {
		doc.Sites = map[string]*fileSite{}
	}
	for name, s := range doc.Sites {
		if s == nil {
			doc.Sites[name] = &fileSite{}
			continue
		}
		for prov, subs := range s.Users {
			for sub, e := range subs {
				if e == nil {
					return fmt.Errorf("users file %s: sites.%s.users.%s.%q has no id", f.path, name, prov, sub)
				}
				if _, ok := parseID(e.ID); !ok {
					return fmt.Errorf("users file %s: sites.%s.users.%s.%q: id %q is not a positive decimal number", f.path, name, prov, sub, e.ID)
				}
			}
		}
	}
	f.doc, f.loaded = doc, stamp
	return nil
}

// fileHeader opens every file the directory writes.
const fileHeader = "# tokenagent just-in-time user directory (SPEC §3.5): written by the agent.\n" +
	"# sites.<site>.users.<provider>.<sub> is the user of that identity; ids are never reused.\n"

// write replaces the file with the directory's contents: a temporary file in the same folder,
// synced, renamed over the old one, and the folder synced. The caller holds mu and the flock.
func (f *File) write() error {
	b, err := yaml.Marshal(&f.doc)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err = tmp.WriteString(fileHeader); err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		return fmt.Errorf("users file %s: %w", f.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	f.loaded = filestamp.FromInfo(st)
	return nil
}

// lockFile takes the exclusive lock on the lock file, waiting for other processes (polling,
// so the wait ends with ctx). The caller holds mu.
func (f *File) lockFile(ctx context.Context) (unlock func(), err error) {
	if f.lock == nil {
		l, err := os.OpenFile(f.lockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("users file lock: %w", err)
		}
		f.lock = l
	}
	for {
		ok, err := tryLock(f.lock)
		if err != nil {
			return nil, fmt.Errorf("users file lock %s: %w", f.lockPath, err)
		}
		if ok {
			return func() { _ = unlockFile(f.lock) }, nil
		}
		t := time.NewTimer(f.opts.LockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("users file lock %s: %w", f.lockPath, ctx.Err())
		case <-t.C:
		}
	}
}
