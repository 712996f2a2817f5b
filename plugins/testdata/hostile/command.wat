;; Broken: a WASI command (exports _start, no _initialize) rather than a reactor.
(module
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) (i64.const 0)))
