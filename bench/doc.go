// Package bench is tokenagent's benchmark harness for the verification hot path. Its
// benchmarks live in the _test.go files of this folder:
//
//	go test ./bench -run '^$' -bench . -benchmem            # everything
//	go test ./bench -run '^$' -bench 'AuthToken|Server|Check' -benchmem -count 10 | tee new.txt
//	benchstat old.txt new.txt                               # compare two runs
//
// Each token kind has a benchmark of its verifier alone (keys cached, as in steady state) and
// of a whole in-process agent.Check; timings are only ever reported, never asserted in tests.
package bench
