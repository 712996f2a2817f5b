package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// config is the parsed configuration.
type config struct {
	daily    []daily
	absolute []absolute
	exempt   map[string]bool
}

// daily is a window repeated every day, in seconds since midnight UTC; end < start crosses
// midnight.
type daily struct{ start, end int }

// absolute is a one-off window in Unix nanoseconds.
type absolute struct{ start, end int64 }

func parseConfig(windows, exempt string) (config, error) {
	c := config{exempt: map[string]bool{}}
	for _, w := range strings.Split(windows, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if s, e, ok := strings.Cut(w, "/"); ok {
			start, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
			if err != nil {
				return config{}, fmt.Errorf("window %q: start: %v", w, err)
			}
			end, err := time.Parse(time.RFC3339, strings.TrimSpace(e))
			if err != nil {
				return config{}, fmt.Errorf("window %q: end: %v", w, err)
			}
			if !end.After(start) {
				return config{}, fmt.Errorf("window %q: the end is not after the start", w)
			}
			c.absolute = append(c.absolute, absolute{start.UnixNano(), end.UnixNano()})
			continue
		}
		s, e, ok := strings.Cut(w, "-")
		if !ok {
			return config{}, fmt.Errorf("window %q: want HH:MM-HH:MM or START/END (RFC 3339)", w)
		}
		start, err := clock(s)
		if err != nil {
			return config{}, fmt.Errorf("window %q: %v", w, err)
		}
		end, err := clock(e)
		if err != nil {
			return config{}, fmt.Errorf("window %q: %v", w, err)
		}
		if start == end {
			return config{}, fmt.Errorf("window %q: start and end are the same time", w)
		}
		c.daily = append(c.daily, daily{start, end})
	}
	for _, u := range strings.Split(exempt, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.exempt[u] = true
		}
	}
	return c, nil
}

// clock parses "HH:MM" into seconds since midnight.
func clock(s string) (int, error) {
	s = strings.TrimSpace(s)
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hh > 23 || mm > 59 || hh < 0 || mm < 0 {
		return 0, errors.New("time " + strconv.Quote(s) + " is not HH:MM (00:00 to 23:59)")
	}
	return hh*3600 + mm*60, nil
}

// activeUntil reports whether t is inside a window and, if so, when the maintenance ends: the
// end of the window, carried on through any window that overlaps or touches it.
func (c *config) activeUntil(t time.Time) (time.Time, bool) {
	end, ok := c.activeUntilNano(t.UnixNano())
	return time.Unix(0, end).UTC(), ok
}

// activeUntilNano is activeUntil in Unix nanoseconds: integer arithmetic only, since every
// loop and call in a module costs a deadline check.
func (c *config) activeUntilNano(t int64) (int64, bool) {
	end, ok := c.endOfWindowAt(t)
	if !ok {
		return 0, false
	}
	for i := 0; i <= len(c.daily)+len(c.absolute); i++ {
		next, ok := c.endOfWindowAt(end)
		if !ok || next <= end {
			break
		}
		end = next
	}
	return end, true
}

const (
	second = int64(time.Second)
	day    = 24 * 3600 * second
)

// endOfWindowAt returns the latest end among the windows that contain t (Unix nanoseconds).
func (c *config) endOfWindowAt(t int64) (int64, bool) {
	var end int64
	found := false
	for _, w := range c.absolute {
		if t >= w.start && t < w.end && (!found || w.end > end) {
			end, found = w.end, true
		}
	}
	if len(c.daily) == 0 {
		return end, found
	}
	midnight := t - ((t%day)+day)%day // UTC days are 24 h long in Unix time
	sec := int((t - midnight) / second)
	for _, w := range c.daily {
		var e int64
		switch {
		case w.start < w.end && sec >= w.start && sec < w.end:
			e = midnight + int64(w.end)*second
		case w.start > w.end && sec >= w.start: // crosses midnight, before it
			e = midnight + day + int64(w.end)*second
		case w.start > w.end && sec < w.end: // crosses midnight, after it
			e = midnight + int64(w.end)*second
		default:
			continue
		}
		if !found || e > end {
			end, found = e, true
		}
	}
	return end, found
}

// retrySeconds is the Retry-After value from now until end: whole seconds, rounded up, at least 1.
func retrySeconds(now, end time.Time) string {
	d := end.Sub(now)
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}
