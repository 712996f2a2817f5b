;; Hostile: returns bytes that are not an output record.
(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 9)))
  (data (i32.const 1024) "garbage!!"))
