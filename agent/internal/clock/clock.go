// Package clock is the pipeline's one clock rule: every part takes an optional
// `Now func() time.Time` (tests drive it), nil meaning the real clock.
package clock

import "time"

// Now returns now(), or time.Now() when now is nil.
func Now(now func() time.Time) time.Time {
	if now != nil {
		return now()
	}
	return time.Now()
}
