;; Hostile: calls tokenagent.log in an endless loop (rate-limited, then stopped by the deadline).
(module
  (import "tokenagent" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64)
    (loop $l
      (call $log (i32.const 0) (i32.const 1024) (i32.const 5))
      (br $l))
    (unreachable))
  (data (i32.const 1024) "spam!"))
