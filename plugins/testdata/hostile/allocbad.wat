;; Hostile: tokenagent_alloc returns a region outside its memory.
(module
  (memory (export "memory") 1)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 0x7ffffff0))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) (i64.const 0)))
