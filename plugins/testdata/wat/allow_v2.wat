;; A minimal ABI v1 module: allows every request and sets the upstream header
;; x-policy-version: 2. Used by the engine tests (reload, pool, concurrency).
(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  ;; The input region starts at 64 KiB; grow the memory to hold $size bytes there.
  (func (export "tokenagent_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 65536)) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $need) (memory.size))))))
    (i32.const 65536))
  ;; Output: version 1, flags allow, status 0, reason "", 1 header, 0 response headers.
  (func (export "tokenagent_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 49)))
  (data (i32.const 1024)
    "\01\00\00\00" "\01\00\00\00" "\00\00\00\00" "\00\00\00\00"
    "\01\00\00\00" "\10\00\00\00" "x-policy-version" "\01\00\00\00" "2"
    "\00\00\00\00"))
