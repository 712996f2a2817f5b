//go:build linux

package h2

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a plaintext socket with raw, non-blocking system calls inside
// syscall.RawConn's Read and Write: when the socket is not ready the goroutine still parks in
// Go's netpoller, but a call that does not block skips the runtime's syscall entry and exit,
// which at a few thousand checks a second wake the runtime's monitor thread (sysmon) once per
// call — a futex wake and two context switches, about a fifth of the agent's CPU at 2,000
// checks/s. The socket is non-blocking (Go opens every socket so), so these calls never wait.
type rawIO struct {
	net.Conn
	rc syscall.RawConn
}

// newRawIO wraps a TCP or Unix connection; any other connection (TLS) is returned as it is.
func newRawIO(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	return &rawIO{Conn: nc, rc: rc}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if e == syscall.EINTR {
				continue
			}
			n, errno = int(m), e
			return e != syscall.EAGAIN
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: errno}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
			switch e {
			case 0:
				written += int(m)
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // the socket buffer is full: wait until it drains
			}
			errno = e
			return true
		}
		return true
	})
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, &net.OpError{Op: "write", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: errno}
	}
	return written, nil
}

// CloseWrite closes the writing half of the socket (a FIN), as net.TCPConn does.
func (r *rawIO) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
