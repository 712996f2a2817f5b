;; Hostile: _initialize never returns (Load fails after InitTimeout).
(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "_initialize") (loop $l (br $l)))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) (i64.const 0)))
