package plugins_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// TestHangingInitDoesNotStarveOtherModules is the regression test of a fault-test finding (a
// hostile module deployed under load): loading a module whose _initialize never returns held
// the engine's only slot (GOMAXPROCS 2) for its whole InitTimeout (2 s), longer than the
// serving module's calls wait for a slot (MaxWait, 1 s), so they failed (policy_error) although
// the serving module was fine. Outside a call, an instantiation now holds the slot for at most
// MaxWait/2: the other module's calls wait, and are answered.
func TestHangingInitDoesNotStarveOtherModules(t *testing.T) {
	e := plugintest.NewEngine(t, plugins.EngineOptions{MaxConcurrency: 1})
	good := plugintest.Load(t, e, plugintest.BuildWAT(t, filepath.Join("testdata", "wat", "allow_v1.wat")),
		plugins.ModuleOptions{Deadline: okDeadline, MaxWait: time.Second})
	hostile := plugintest.BuildWAT(t, filepath.Join("testdata", "hostile", "initloop.wat"))

	stop := make(chan struct{})
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := good.Evaluate(context.Background(), &plugins.Input{Kind: "anonymous", Method: "GET", Path: "/"}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				calls.Add(1)
			}
		}()
	}
	// Defaults for the hostile module: InitTimeout 2 s, MaxWait 1 s.
	if m, err := e.Load(context.Background(), hostile, plugins.ModuleOptions{}); err == nil {
		m.Close(context.Background())
		t.Fatal("a module whose _initialize never returns loaded")
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls of the serving module failed while the hostile module loaded; first: %v", n, calls.Load(), firstErr.Load())
	}
}
