;; Broken: its memory starts at 1000 pages (62.5 MiB), over the default module limit of 512.
(module
  (memory (export "memory") 1000)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) (i64.const 0)))
