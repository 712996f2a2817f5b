;; Hostile: calls tokenagent.log with a message outside its memory (the host traps the call).
(module
  (import "tokenagent" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64)
    (call $log (i32.const 0) (i32.const 0x7ffffff0) (i32.const 100))
    (i64.const 0)))
