;; Hostile: grows memory a page at a time until refused, then traps (memory limit).
(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param $size i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64)
    (loop $l
      (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (unreachable)))
