;; Broken: imports a function the host does not provide (env.abort).
(module
  (import "env" "abort" (func (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) (i64.const 0)))
