// Package filestamp tells whether a file changed, the way tokenagent's watchers need it (the
// key and user files, the config file, TLS certificates, policy modules): by the file's
// identity (device and inode), size and modification time. A file replaced by a rename
// (editors, `mv`, Kubernetes' symlink swap of a mounted ConfigMap or Secret) is a change even
// when its size and time match: file times come from a coarse clock, so two writes a few
// milliseconds apart can carry the same time.
//
//	before := filestamp.Of(path)
//	// ... later
//	if filestamp.Of(path) != before {
//		// read it again
//	}
//
// Stamps are comparable with ==. A rewrite in place of the same size within one tick of the
// file-system clock is not seen; write a new file and rename it over the old one (atomic, and
// what every deployment tool does).
package filestamp

import "os"

// Stamp is what a stat of a file says of its contents. The zero Stamp is a file that could not
// be read.
type Stamp struct {
	exists   bool
	size     int64
	modNanos int64
	dev, ino uint64 // 0 where the system does not say
}

// Of stats the file at path (following links); the zero Stamp when it cannot.
func Of(path string) Stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}
	}
	return FromInfo(fi)
}

// FromInfo is the stamp of a file's FileInfo (from os.Stat or File.Stat).
func FromInfo(fi os.FileInfo) Stamp {
	s := Stamp{exists: true, size: fi.Size(), modNanos: fi.ModTime().UnixNano()}
	s.dev, s.ino = identity(fi)
	return s
}

// Exists reports whether the stat succeeded.
func (s Stamp) Exists() bool { return s.exists }
