;; no-legacy: a tokenagent site policy written by hand in WebAssembly text, to show that ABI v1
;; (plugins/ABI.md) does not depend on Go or on plugins/guest.
;;
;; It refuses requests made with the legacy credentials, kind "apikey" (Site API Key) and
;; "impersonation" (Impersonation Auth Token), with 403, and allows everything else, telling the
;; upstream the site id in the header x-site-id.
;;
;; Build: wat2wasm policy.wat -o no-legacy.wasm   (wabt; Debian: apt-get install -y wabt)
(module
  (import "tokenagent" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)

  ;; Constants (addresses below 1024).
  (data (i32.const 256) "apikey")                                    ;; 6 bytes
  (data (i32.const 272) "impersonation")                             ;; 13 bytes
  (data (i32.const 304) "x-site-id")                                 ;; 9 bytes
  (data (i32.const 320) "no-legacy: unknown input layout version")   ;; 39 bytes
  ;; The denial, a complete output record (68 bytes): version 1, flags 0 (deny), status 403,
  ;; reason (44 bytes), 0 headers, 0 response headers.
  (data (i32.const 512)
    "\01\00\00\00" "\00\00\00\00" "\93\01\00\00"
    "\2c\00\00\00" "legacy credentials are disabled on this site"
    "\00\00\00\00" "\00\00\00\00")

  (func (export "tokenagent_abi_v1"))

  ;; The input region is one buffer at 64 KiB, reused for every call; grow the memory so it
  ;; holds $size bytes.
  (func (export "tokenagent_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 65536)) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 65536))

  ;; $eq reports whether the $alen bytes at $a equal the $blen bytes at $b.
  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen))
      (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Input: u32 version, i64 time, then site and kind as (u32 length, bytes); the rest of the
  ;; record is not needed here.
  (func (export "tokenagent_evaluate") (param $p i32) (param $n i32) (result i64)
    (local $site i32) (local $sitelen i32) (local $kind i32) (local $kindlen i32)
    (if (i32.ne (i32.load (local.get $p)) (i32.const 1))
      (then
        (call $log (i32.const 8) (i32.const 320) (i32.const 39))
        (return (i64.const 0))))   ;; an empty output: the host reports an error (fail closed)
    (local.set $sitelen (i32.load (i32.add (local.get $p) (i32.const 12))))
    (local.set $site (i32.add (local.get $p) (i32.const 16)))
    (local.set $kindlen (i32.load (i32.add (local.get $site) (local.get $sitelen))))
    (local.set $kind (i32.add (i32.add (local.get $site) (local.get $sitelen)) (i32.const 4)))

    (if (i32.or (call $eq (local.get $kind) (local.get $kindlen) (i32.const 256) (i32.const 6))
                (call $eq (local.get $kind) (local.get $kindlen) (i32.const 272) (i32.const 13)))
      (then (return (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 68)))))

    ;; Allow, with x-site-id: <site>, built at 1024: 41 + site length bytes.
    (if (i32.gt_u (local.get $sitelen) (i32.const 1024))
      (then (return (i64.const 0))))
    (i32.store (i32.const 1024) (i32.const 1))   ;; version
    (i32.store (i32.const 1028) (i32.const 1))   ;; flags: allow
    (i32.store (i32.const 1032) (i32.const 0))   ;; status
    (i32.store (i32.const 1036) (i32.const 0))   ;; reason: empty
    (i32.store (i32.const 1040) (i32.const 1))   ;; one header
    (i32.store (i32.const 1044) (i32.const 9))   ;; its name
    (memory.copy (i32.const 1048) (i32.const 304) (i32.const 9))
    (i32.store (i32.const 1057) (local.get $sitelen))   ;; its value
    (memory.copy (i32.const 1061) (local.get $site) (local.get $sitelen))
    (i32.store (i32.add (i32.const 1061) (local.get $sitelen)) (i32.const 0))  ;; no response headers
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 41) (local.get $sitelen))))))
