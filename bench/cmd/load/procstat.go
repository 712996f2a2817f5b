package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on every Linux
// platform Go supports).
const clockTicks = 100

// ProcSample is a process's CPU time and memory at one moment, from /proc.
type ProcSample struct {
	CPUSeconds float64 // utime + stime
	RSSKiB     int64   // VmRSS
	PeakRSSKiB int64   // VmHWM: the peak resident set since the process started
}

// ReadProc samples process pid ("self" when 0).
func ReadProc(pid int) (ProcSample, error) {
	p := "self"
	if pid > 0 {
		p = strconv.Itoa(pid)
	}
	var s ProcSample
	stat, err := os.ReadFile("/proc/" + p + "/stat")
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%s/stat: unexpected format", p)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%s/stat: unexpected format", p)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%s/stat: unexpected format", p)
	}
	s.CPUSeconds = float64(utime+stime) / clockTicks
	st, err := os.Open("/proc/" + p + "/status")
	if err != nil {
		return s, err
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &s.RSSKiB
		case "VmHWM":
			dst = &s.PeakRSSKiB
		default:
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			*dst = n
		}
	}
	return s, sc.Err()
}

// loadAvg returns the 1, 5 and 15 minute load averages (zeros when unknown).
func loadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}
