// Build-time policy knobs. Everything here has a safe default; override with -D on the compiler line.
#pragma once

// How many resumptions may nest on one thread's stack before the next one is handed to the
// executor's ready queue instead (a trampoline). quell never relies on the compiler turning
// symmetric transfer into a tail call: g++ 12 does not at -O0/-Og/-O1 nor under ASan.
#ifndef QUELL_MAX_RESUME_DEPTH
#define QUELL_MAX_RESUME_DEPTH 48
#endif

// How long a runtime's core with nothing of its own to do polls its mailbox before it sleeps in
// the kernel (microseconds; 0: never). Waking a sleeping thread through its eventfd costs several
// microseconds on each side of a cross-core round trip (W10 in bench/compare/WORKLOADS.md).
#ifndef QUELL_CORE_SPIN_US
#define QUELL_CORE_SPIN_US 50
#endif

// Coroutine frames are recycled through a per-thread free list. Under AddressSanitizer the pool
// is off so that a use-after-free of a frame is still reported.
#ifndef QUELL_FRAME_POOL
#if defined(__SANITIZE_ADDRESS__)
#define QUELL_FRAME_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUELL_FRAME_POOL 0
#endif
#endif
#endif
#ifndef QUELL_FRAME_POOL
#define QUELL_FRAME_POOL 1
#endif

// For the few functions on the path of every co_await: keeps the inliner from splitting them
// off when surrounding code grows (measured: W1 in bench/bench_core.cpp).
#define QUELL_HOT __attribute__((always_inline)) inline
#define QUELL_COLD __attribute__((noinline, cold))
