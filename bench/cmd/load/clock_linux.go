package main

import (
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// realClock is the wall clock with a precise SleepUntil. Go's own timers wake up to a
// millisecond late in a process that is mostly idle (the runtime then waits for its next timer
// in epoll with a timeout in whole milliseconds), which would add up to 1 ms to open-loop
// latencies. SleepUntil instead arms a Linux timerfd, an exact kernel timer, and waits for it
// in Go's netpoller: the goroutine wakes within microseconds of t and no thread is blocked.
type realClock struct {
	// timerFDs are idle timerfds; a dropped one is closed by its os.File's finalizer.
	timerFDs *sync.Pool
}

func newRealClock() realClock {
	return realClock{timerFDs: &sync.Pool{New: func() any {
		tf, err := newTimerFD()
		if err != nil {
			return nil
		}
		return tf
	}}}
}

func (realClock) Now() time.Time { return time.Now() }

func (c realClock) SleepUntil(t time.Time) {
	d := time.Until(t)
	if d < time.Microsecond {
		return
	}
	tf, _ := c.timerFDs.Get().(*timerFD)
	if tf == nil || tf.sleep(d) != nil {
		time.Sleep(time.Until(t)) // no timerfd: the runtime's timer
		return
	}
	c.timerFDs.Put(tf)
}

type timerFD struct {
	f  *os.File // non-blocking, so reads park the goroutine in the netpoller
	fd uintptr
}

// Linux's timerfd constants (TFD_NONBLOCK and TFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC).
const clockMonotonic = 1

func newTimerFD() (*timerFD, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, errno
	}
	return &timerFD{f: os.NewFile(fd, "timerfd"), fd: fd}, nil
}

type itimerspec struct {
	interval, value syscall.Timespec
}

// sleep arms the timer to fire once after d and waits for it.
func (t *timerFD) sleep(d time.Duration) error {
	spec := itimerspec{value: syscall.NsecToTimespec(int64(d))}
	if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, t.fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		return errno
	}
	var buf [8]byte // the number of expirations
	_, err := t.f.Read(buf[:])
	return err
}
