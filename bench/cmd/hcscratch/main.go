package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func cpu(pid int) time.Duration {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * 10 * time.Millisecond
}

func main() {
	addr := flag.String("addr", "", "")
	pid := flag.Int("pid", 0, "")
	rate := flag.Int("rate", 2000, "")
	dur := flag.Duration("d", 10*time.Second, "")
	check := flag.Bool("check", false, "")
	timeout := flag.Bool("timeout", false, "")
	flag.Parse()
	c, _ := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStaticStreamWindowSize(64<<20), grpc.WithStaticConnWindowSize(64<<20))
	h := healthpb.NewHealthClient(c)
	a := authv3.NewAuthorizationClient(c)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "GET", Host: "bench.example.com", Path: "/@api/deki/pages/home", Scheme: "https",
		Headers: map[string]string{":authority": "bench.example.com", ":method": "GET", ":path": "/@api/deki/pages/home", "user-agent": "Mozilla/5.0", "accept": "application/json", "x-request-id": "6f1c0f0e-4a1b-4a8e-9e55-0a1f1f1b2c3d"}}}}}
	for range 100 {
		h.Check(context.Background(), &healthpb.HealthCheckRequest{})
	}
	c0 := cpu(*pid)
	start := time.Now()
	n := int(dur.Seconds() * float64(*rate))
	var wg sync.WaitGroup
	for i := range n {
		t := start.Add(time.Duration(i) * time.Second / time.Duration(*rate))
		if d := time.Until(t); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if *timeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			if *check {
				a.Check(ctx, req)
				return
			}
			h.Check(ctx, &healthpb.HealthCheckRequest{})
		}()
	}
	wg.Wait()
	fmt.Printf("%s: %.1f µs/check\n", *addr, float64((cpu(*pid)-c0).Microseconds())/float64(n))
}
