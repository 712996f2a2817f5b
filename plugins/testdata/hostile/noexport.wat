;; Broken: lacks tokenagent_evaluate and the memory export (Load refuses it).
(module
  (memory 1)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 1024)))
