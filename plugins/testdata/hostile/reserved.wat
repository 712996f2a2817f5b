;; Hostile: a well-formed output that sets the reserved header x-auth-user.
(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 44)))
  (data (i32.const 1024)
    "\01\00\00\00" "\01\00\00\00" "\00\00\00\00" "\00\00\00\00"
    "\01\00\00\00" "\0b\00\00\00" "x-auth-user" "\01\00\00\00" "1"
    "\00\00\00\00"))
