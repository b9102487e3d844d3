//! tokio peer of quell's benchmark comparison: the workloads of bench/compare/WORKLOADS.md,
//! written against tokio 1.24's public API on a `current_thread` runtime with `enable_all()`
//! (W10 and W11: a `multi_thread` runtime with `worker_threads(2)` and `enable_all()`).
//!
//! Usage: `quell-bench-tokio <W1|W2|W3|W4|W5|W5m|W6a|W6b|W7|W8|W9|W10|W11|W12>`; prints
//! `RESULT <workload> <unit> <value>` lines, exits 1 with a message on stderr when the
//! workload's self-check fails.
//!
//! How each workload maps to tokio:
//! - W1 await_chain: `sum += child(i).await` with `async fn child(i: i64) -> i64 { i }`.
//! - W2 race_pending_loser: `select! { biased; v = async { 1 } => v, _ = never => .. }` where
//!   `never` owns a guard whose `Drop` is the cancellation hook and then awaits `pending()`.
//! - W3 spawn_cancel: 100,000 `sleep(3600 s)` tasks in a `JoinSet`, `abort_all()` and join them
//!   all (what `JoinSet::shutdown` does, plus checking each ended cancelled); bytes/task from a
//!   counting `#[global_allocator]`.
//! - W4 timeout_fast_op: `tokio::time::timeout(1 s, async { i }).await`.
//! - W5 tcp_echo: `TcpListener`/`TcpStream`, a task per server and per client connection,
//!   `read`/`write_all` on the server, `write_all`/`read_exact` on the client.
//! - W5m tcp_echo on every core: W5 on a `multi_thread` runtime of one worker, then as many W5
//!   copies as CPUs on one of that many workers, at once (the scheduler places the tasks).
//! - W6a: `select! { biased; v = async { 1 } => v, r = stream.read(&mut buf) => .. }`.
//! - W6b: `select! { biased; r = stream.read(&mut buf) => .., _ = yield_now() => cancelled }`: the
//!   read is polled (waker registered with the epoll-backed driver), the task yields once to the
//!   runtime, and the read is dropped when `select!` returns.
//! - W7 cancel_latency: a root `CancellationToken`, a `child_token()` per subtree, a `JoinSet` of
//!   subtree tasks in the root and of leaf tasks in each subtree; a leaf is
//!   `select! { biased; _ = token.cancelled() => hook, _ = read or sleep => .. }`.
//! - W12 bulk_read: `write_all` of 1 MiB chunks and `read_exact` of them on a loopback pair,
//!   as two futures of one task (`join!`).
//! - W10 cross_core_call: `sum += tokio::spawn(async move { black_box(i) }).await` in the
//!   `block_on` of the two-worker runtime (on the main thread); tokio decides where the child runs.
//! - W11 cross_core_cancel: `tokio::spawn` of a child that sets an `AtomicBool` and then
//!   `select!`s `token.cancelled()` (the hook) against `stream.read(&mut buf)`; the caller, in
//!   `block_on`, yields until it sees the flag, sleeps 1 ms, then times `token.cancel()` +
//!   `handle.await`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::runtime::Runtime;
use tokio::task::{yield_now, JoinSet};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Counting allocator for W3's bytes/task: live heap bytes, counted as malloc_usable_size like the
// C++ peers do, so all peers count what the allocator really hands out.

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(libc::malloc_usable_size(p.cast()), Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(libc::malloc_usable_size(p.cast()), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(libc::malloc_usable_size(p.cast()), Relaxed);
        System.dealloc(p, layout)
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = libc::malloc_usable_size(p.cast());
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE_BYTES.fetch_sub(old, Relaxed);
            LIVE_BYTES.fetch_add(libc::malloc_usable_size(q.cast()), Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Debian 12's rustc 1.63 predates `std::hint::black_box` (stable in 1.66). This is the barrier
/// it is built on: the value's address escapes into an asm block that may read or write memory,
/// so the compiler can neither fold the value nor drop the computation producing it.
#[inline(always)]
fn black_box<T>(x: T) -> T {
    unsafe { std::arch::asm!("/* {0} */", in(reg) &x, options(nostack, preserves_flags)) };
    x
}

type Res<T> = Result<T, String>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// WORKLOADS.md timing: ~0.1 s warm-up, then 5 batches of a fixed size chosen from the warm-up
/// rate to take ~0.2 s each; returns the median batch's ns/op. `batch(n)` runs n operations and
/// checks them. Each batch is one `block_on`, whose entry cost is spread over ~0.2 s of work.
fn ns_per_op(mut batch: impl FnMut(u64) -> Res<()>) -> Res<f64> {
    let warm_start = Instant::now();
    let warm = Duration::from_millis(100);
    let mut n: u64 = 16;
    let mut rate; // ops per second
    loop {
        let t = Instant::now();
        batch(n)?;
        let dt = t.elapsed().as_secs_f64();
        rate = n as f64 / dt.max(1e-9);
        if dt >= 0.01 || warm_start.elapsed() >= warm {
            break;
        }
        n *= 2;
    }
    // Fill the rest of the warm-up with one batch, which also gives a steadier rate.
    let rest = warm.saturating_sub(warm_start.elapsed()).as_secs_f64();
    let m = (rate * rest) as u64;
    if m > 0 {
        let t = Instant::now();
        batch(m)?;
        rate = m as f64 / t.elapsed().as_secs_f64().max(1e-9);
    }
    let per_batch = ((rate * 0.2) as u64).max(1);
    let mut samples = Vec::with_capacity(5);
    for _ in 0..5 {
        let t = Instant::now();
        batch(per_batch)?;
        samples.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    Ok(median(samples))
}

/// ns_per_op over an async batch, one `block_on` per batch.
fn bench<F, Fut>(rt: &Runtime, batch: F) -> Res<f64>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    ns_per_op(|n| rt.block_on(batch(n)))
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// A connected TCP pair over 127.0.0.1: (the side W6 reads from, the peer).
async fn tcp_pair() -> Res<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.map_err(|e| format!("connect: {e}"))?;
    let (server, _) = accepted.map_err(|e| format!("accept: {e}"))?;
    Ok((client, server))
}

// ---------------------------------------------------------------------------------------------
// W1 await_chain

async fn child(i: i64) -> i64 {
    i
}

async fn w1_batch(n: u64) -> Res<()> {
    let mut sum: i64 = 0;
    for i in 0..n as i64 {
        sum += black_box(child(black_box(i)).await);
    }
    let n = n as i64;
    check(sum == n * (n - 1) / 2, || format!("W1: sum {sum} != {}", n * (n - 1) / 2))
}

// ---------------------------------------------------------------------------------------------
// W2 race_pending_loser

/// The loser's cancellation hook: runs when the branch's future is dropped unfinished.
struct Hook<'a>(&'a Cell<u64>);

impl Drop for Hook<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

async fn w2_batch(n: u64) -> Res<()> {
    let hooks = Cell::new(0u64);
    let mut sum: u64 = 0;
    for _ in 0..n {
        // The guard is created outside and moved in, so it drops with the future even though the
        // biased select never polls this branch (an unpolled async block drops its captures).
        let guard = Hook(&hooks);
        let never = async move {
            let _guard = guard;
            std::future::pending::<u64>().await
        };
        let v = tokio::select! {
            biased;
            v = async { 1u64 } => v,
            _ = never => return Err("W2: the pending branch completed".into()),
        };
        sum += black_box(v);
    }
    check(sum == n, || format!("W2: sum {sum} != {n}"))?;
    check(hooks.get() == n, || format!("W2: {} hooks ran, expected {n}", hooks.get()))
}

// ---------------------------------------------------------------------------------------------
// W9 task_set_next: a JoinSet of 100,000 tasks, each yielding once then returning its index;
// every result taken with join_next(), in completion order. (W8 is W2's select! again: tokio has
// no combinator that keeps a loser's value.)

const W9_TASKS: u64 = 100_000;

async fn w9_rep() -> Res<f64> {
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..W9_TASKS {
        set.spawn(async move {
            yield_now().await;
            black_box(i)
        });
    }
    let mut sum: u64 = 0;
    let mut n: u64 = 0;
    while let Some(r) = set.join_next().await {
        sum += r.map_err(|e| format!("W9: task failed: {e}"))?;
        n += 1;
    }
    let dt = t0.elapsed();
    check(n == W9_TASKS && sum == W9_TASKS * (W9_TASKS - 1) / 2, || {
        format!("W9: {n} results summing to {sum}")
    })?;
    Ok(dt.as_nanos() as f64 / W9_TASKS as f64)
}

// ---------------------------------------------------------------------------------------------
// W3 spawn_cancel

const W3_TASKS: usize = 100_000;
static W3_STARTED: AtomicUsize = AtomicUsize::new(0);

/// One repetition: (ns/task, bytes/task).
async fn w3_rep() -> Res<(f64, f64)> {
    W3_STARTED.store(0, Relaxed);
    let mut set = JoinSet::new();
    let before = LIVE_BYTES.load(Relaxed);
    let t0 = Instant::now();
    for _ in 0..W3_TASKS {
        set.spawn(async {
            W3_STARTED.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
    }
    // Let the runtime run every task once, so each has armed its timer and is really blocked.
    // (On current_thread a yield lets the scheduler run its queue up to the next driver poll.)
    while W3_STARTED.load(Relaxed) < W3_TASKS {
        yield_now().await;
    }
    let live = LIVE_BYTES.load(Relaxed);
    // JoinSet::shutdown() is exactly abort_all() + join_next() until empty; spelled out so that
    // every task's end can be checked to be a cancellation.
    set.abort_all();
    let mut cancelled = 0usize;
    while let Some(r) = set.join_next().await {
        match r {
            Err(e) if e.is_cancelled() => cancelled += 1,
            Err(e) => return Err(format!("W3: task failed: {e}")),
            Ok(()) => return Err("W3: a task finished its one-hour sleep".into()),
        }
    }
    let dt = t0.elapsed();
    check(cancelled == W3_TASKS, || format!("W3: {cancelled} of {W3_TASKS} tasks cancelled"))?;
    let bytes = live.saturating_sub(before) as f64 / W3_TASKS as f64;
    Ok((dt.as_nanos() as f64 / W3_TASKS as f64, bytes))
}

// ---------------------------------------------------------------------------------------------
// W4 timeout_fast_op

async fn w4_batch(n: u64) -> Res<()> {
    let mut sum: u64 = 0;
    for i in 0..n {
        let v = tokio::time::timeout(Duration::from_secs(1), async { black_box(i) })
            .await
            .map_err(|_| "W4: the 1 s timeout fired".to_string())?;
        sum += black_box(v);
    }
    check(sum == n * (n - 1) / 2, || format!("W4: sum {sum} != {}", n * (n - 1) / 2))
}

// ---------------------------------------------------------------------------------------------
// W5 tcp_echo

const W5_CONNS: usize = 50;
const W5_MSG: usize = 64;
static W5_ROUNDS: AtomicU64 = AtomicU64::new(0);
static W5_STOP: AtomicBool = AtomicBool::new(false);

async fn echo_server(mut s: TcpStream) -> Res<u64> {
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [0u8; W5_MSG];
    let mut echoed = 0u64;
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("server read: {e}"))?;
        if n == 0 {
            return Ok(echoed);
        }
        s.write_all(&buf[..n]).await.map_err(|e| format!("server write: {e}"))?;
        echoed += n as u64;
    }
}

async fn echo_acceptor(listener: TcpListener) -> Res<u64> {
    let mut servers = JoinSet::new();
    for _ in 0..W5_CONNS {
        let (s, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        servers.spawn(echo_server(s));
    }
    let mut echoed = 0;
    while let Some(r) = servers.join_next().await {
        echoed += r.map_err(|e| e.to_string())??;
    }
    Ok(echoed)
}

async fn echo_client(addr: SocketAddr, id: u64) -> Res<u64> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut msg = [0u8; W5_MSG];
    let mut back = [0u8; W5_MSG];
    let mut rounds = 0u64;
    while !W5_STOP.load(Relaxed) {
        // Every message differs (connection id, sequence number), so a stale or misrouted echo
        // fails the comparison.
        let tag = (id << 40) | rounds;
        for (k, b) in msg.iter_mut().enumerate() {
            *b = (tag >> (8 * (k % 8))) as u8 ^ k as u8;
        }
        s.write_all(&msg).await.map_err(|e| format!("client write: {e}"))?;
        s.read_exact(&mut back).await.map_err(|e| format!("client read: {e}"))?;
        if back != msg {
            return Err(format!("W5: connection {id} got a wrong echo"));
        }
        rounds += 1;
        W5_ROUNDS.fetch_add(1, Relaxed);
    }
    Ok(rounds) // dropping the stream closes it; the server sees EOF and ends
}

async fn w5() -> Res<f64> {
    w5_on(1).await
}

/// `instances` copies of W5 at once (each its own listener, 50 clients and 50 servers), timed
/// together: W5m runs one per worker thread of a multi-thread runtime.
async fn w5_on(instances: usize) -> Res<f64> {
    W5_ROUNDS.store(0, Relaxed);
    W5_STOP.store(false, Relaxed);
    let mut acceptors = Vec::new();
    let mut clients = JoinSet::new();
    for instance in 0..instances {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        acceptors.push(tokio::spawn(echo_acceptor(listener)));
        for id in 0..W5_CONNS as u64 {
            clients.spawn(echo_client(addr, (instance as u64) << 16 | id));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // warm-up
    let (r0, t0) = (W5_ROUNDS.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r1, t1) = (W5_ROUNDS.load(Relaxed), Instant::now());
    W5_STOP.store(true, Relaxed);
    let mut rounds = 0u64;
    while let Some(r) = clients.join_next().await {
        rounds += r.map_err(|e| e.to_string())??;
    }
    let mut echoed = 0;
    for acceptor in acceptors {
        echoed += acceptor.await.map_err(|e| e.to_string())??;
    }
    check(echoed == rounds * W5_MSG as u64, || {
        format!("W5: servers echoed {echoed} bytes, clients completed {rounds} round trips")
    })?;
    check(r1 > r0, || "W5: no round trip in the timed window".into())?;
    Ok((r1 - r0) as f64 / (t1 - t0).as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// W6 cancel_inflight_read

async fn w6a_batch(s: &mut TcpStream, n: u64) -> Res<()> {
    let mut buf = [0u8; 64];
    let mut sum = 0u64;
    for _ in 0..n {
        let v = tokio::select! {
            biased;
            v = async { 1u64 } => v,
            r = s.read(&mut buf) => return Err(format!("W6a: the read completed: {r:?}")),
        };
        sum += black_box(v);
    }
    check(sum == n, || format!("W6a: sum {sum} != {n}"))
}

async fn w6b_batch(s: &mut TcpStream, n: u64) -> Res<()> {
    let mut buf = [0u8; 64];
    let mut cancelled = 0u64;
    for _ in 0..n {
        // First poll: the read finds no readiness and parks its waker with the I/O driver; the
        // yield goes back to the runtime (which polls epoll) and wins on the second poll; the
        // read future is dropped, i.e. cancelled, before select! returns.
        tokio::select! {
            biased;
            r = s.read(&mut buf) => return Err(format!("W6b: the read completed: {r:?}")),
            _ = yield_now() => cancelled += 1,
        }
    }
    check(black_box(cancelled) == n, || format!("W6b: {cancelled} of {n} reads cancelled"))
}

/// After the loop: the socket still works (one byte from the peer arrives).
async fn w6_still_usable(s: &mut TcpStream, peer: &mut TcpStream) -> Res<()> {
    peer.write_all(&[0x5a]).await.map_err(|e| format!("peer write: {e}"))?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.map_err(|e| format!("final read: {e}"))?;
    check(n == 1 && buf[0] == 0x5a, || format!("W6: final read got {:?}", &buf[..n]))
}

fn w6(rt: &Runtime, same_turn: bool) -> Res<f64> {
    let (mut s, mut peer) = rt.block_on(tcp_pair())?;
    let r = ns_per_op(|n| {
        if same_turn {
            rt.block_on(w6a_batch(&mut s, n))
        } else {
            rt.block_on(w6b_batch(&mut s, n))
        }
    })?;
    rt.block_on(w6_still_usable(&mut s, &mut peer))?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// W7 cancel_latency

const W7_SUBTREES: usize = 100;
const W7_LEAVES: usize = 100; // per subtree; half read a socket, half sleep
const W7_TOTAL: usize = W7_SUBTREES * W7_LEAVES;
static W7_STARTED: AtomicUsize = AtomicUsize::new(0);
static W7_HOOKS: AtomicUsize = AtomicUsize::new(0);

/// A leaf reading a socket with no data. It hands its socket back when it ends, so the timed
/// window holds the cancellation and not 5,000 close() calls (the sockets belong to the tree's
/// owner, who closes them after the clock stops).
async fn read_leaf(token: CancellationToken, mut sock: UnixStream) -> Res<UnixStream> {
    let mut buf = [0u8; 64];
    W7_STARTED.fetch_add(1, Relaxed);
    // biased, token first: once cancelled, the cancellation wins over a read that a peer's
    // teardown might have made ready.
    tokio::select! {
        biased;
        _ = token.cancelled() => {
            W7_HOOKS.fetch_add(1, Relaxed); // the cancellation hook
        }
        r = sock.read(&mut buf) => return Err(format!("W7: a leaf's read completed: {r:?}")),
    }
    Ok(sock)
}

async fn sleep_leaf(token: CancellationToken) -> Res<()> {
    W7_STARTED.fetch_add(1, Relaxed);
    tokio::select! {
        biased;
        _ = token.cancelled() => {
            W7_HOOKS.fetch_add(1, Relaxed); // the cancellation hook
        }
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {
            return Err("W7: a leaf's one-hour sleep ended".into())
        }
    }
    Ok(())
}

enum Leaf {
    Read(Res<UnixStream>),
    Sleep(Res<()>),
}

/// A subtree: its own token and JoinSet of 100 leaves; returns (leaves ended, their sockets).
async fn subtree(token: CancellationToken, pairs: Vec<(UnixStream, UnixStream)>) -> Res<(usize, Vec<UnixStream>)> {
    let mut leaves = JoinSet::new();
    for (a, b) in pairs {
        // Both ends of each socketpair are read, each by its own leaf.
        let (ta, tb) = (token.clone(), token.clone());
        leaves.spawn(async move { Leaf::Read(read_leaf(ta, a).await) });
        leaves.spawn(async move { Leaf::Read(read_leaf(tb, b).await) });
        for _ in 0..2 {
            let t = token.clone();
            leaves.spawn(async move { Leaf::Sleep(sleep_leaf(t).await) });
        }
    }
    let mut ended = 0;
    let mut socks = Vec::with_capacity(W7_LEAVES / 2);
    while let Some(r) = leaves.join_next().await {
        match r.map_err(|e| format!("W7: leaf task failed: {e}"))? {
            Leaf::Read(r) => socks.push(r?),
            Leaf::Sleep(r) => r?,
        }
        ended += 1;
    }
    Ok((ended, socks))
}

/// One repetition: µs from root.cancel() until every leaf has ended and every hook has run.
async fn w7_rep() -> Res<f64> {
    W7_STARTED.store(0, Relaxed);
    W7_HOOKS.store(0, Relaxed);
    let root = CancellationToken::new();
    let mut subtrees = JoinSet::new();
    for _ in 0..W7_SUBTREES {
        let pairs = (0..W7_LEAVES / 4)
            .map(|_| UnixStream::pair().map_err(|e| format!("socketpair: {e}")))
            .collect::<Res<Vec<_>>>()?;
        subtrees.spawn(subtree(root.child_token(), pairs));
    }
    // Wait until every leaf has run once: each one's select! has then registered the token
    // waiter and its read or timer.
    while W7_STARTED.load(Relaxed) < W7_TOTAL {
        yield_now().await;
    }
    let t0 = Instant::now();
    root.cancel();
    let mut ended = 0;
    let mut socks = Vec::with_capacity(W7_TOTAL / 2);
    while let Some(r) = subtrees.join_next().await {
        let (n, s) = r.map_err(|e| format!("W7: subtree task failed: {e}"))??;
        ended += n;
        socks.extend(s);
    }
    let hooks = W7_HOOKS.load(Relaxed);
    let dt = t0.elapsed();
    check(ended == W7_TOTAL && hooks == W7_TOTAL, || {
        format!("W7: {ended} leaves ended, {hooks} hooks ran, expected {W7_TOTAL}")
    })?;
    drop(socks);
    Ok(dt.as_nanos() as f64 / 1e3)
}

// ---------------------------------------------------------------------------------------------
// W10 cross_core_call and W11 cross_core_cancel: a multi_thread runtime of two workers, the loop
// inside block_on. Nothing is pinned; tokio's scheduler decides which worker runs a child.
// block_on polls the loop on the calling (main) thread, not on a worker: a child spawned from it
// goes through the runtime's shared inject queue to a worker it wakes, and its JoinHandle wakes
// the main thread again, so every child crosses threads (a loop spawned onto a worker would
// instead put its children in that worker's LIFO slot and run them there).

async fn w10_batch(n: u64) -> Res<()> {
    let mut sum: i64 = 0;
    for i in 0..n as i64 {
        sum += tokio::spawn(async move { black_box(i) })
            .await
            .map_err(|e| format!("W10: child failed: {e}"))?;
    }
    let n = n as i64;
    check(sum == n * (n - 1) / 2, || format!("W10: sum {sum} != {}", n * (n - 1) / 2))
}

const W11_REPS: usize = 1000;
static W11_HOOKS: AtomicUsize = AtomicUsize::new(0);
static W11_DATA_READS: AtomicUsize = AtomicUsize::new(0);

/// The child: reads a socket with no data until its token is cancelled. It hands its socket back
/// when it ends, so the timed span holds the cancellation and not the close() (as in W7).
async fn w11_child(token: CancellationToken, mut sock: UnixStream, reading: Arc<AtomicBool>) -> UnixStream {
    let mut buf = [0u8; 64];
    reading.store(true, SeqCst); // right before the read
    tokio::select! {
        biased;
        _ = token.cancelled() => {
            W11_HOOKS.fetch_add(1, Relaxed); // the cancellation hook
        }
        _ = sock.read(&mut buf) => {
            W11_DATA_READS.fetch_add(1, Relaxed); // never: nothing is ever written
        }
    }
    sock
}

/// The median over 1,000 repetitions of µs from token.cancel() until handle.await has returned.
async fn w11() -> Res<f64> {
    W11_HOOKS.store(0, Relaxed);
    W11_DATA_READS.store(0, Relaxed);
    let mut us = Vec::with_capacity(W11_REPS);
    for _ in 0..W11_REPS {
        let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let token = CancellationToken::new();
        let reading = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn(w11_child(token.clone(), a, reading.clone()));
        while !reading.load(SeqCst) {
            yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await; // the child's worker registers its read
        let t0 = Instant::now();
        token.cancel();
        let a = handle.await.map_err(|e| format!("W11: child failed: {e}"))?;
        let dt = t0.elapsed();
        drop((a, b));
        us.push(dt.as_nanos() as f64 / 1e3);
    }
    let (hooks, data_reads) = (W11_HOOKS.load(Relaxed), W11_DATA_READS.load(Relaxed));
    check(hooks == W11_REPS && data_reads == 0, || {
        format!("W11: {hooks} hooks ran, {data_reads} reads returned, expected {W11_REPS} and 0")
    })?;
    Ok(median(us))
}

// ---------------------------------------------------------------------------------------------

/// W7 holds 5,000 socket fds: raise the soft RLIMIT_NOFILE to the hard limit.
fn raise_nofile_limit() {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// W12 bulk_read: `write_all` of 1 MiB chunks on one end of a loopback pair, `read_exact` of them
// into a 1 MiB buffer on the other, as two futures of one task (`join!`).

const W12_CHUNK: usize = 1 << 20;

fn w12_fill_pattern(c: &mut [u8]) {
    for (k, b) in c.iter_mut().enumerate() {
        *b = (k * 7 % 251) as u8;
    }
}

fn w12_stamp(c: &mut [u8], seq: u64) {
    c[..8].copy_from_slice(&seq.to_le_bytes());
    c[W12_CHUNK - 8..].copy_from_slice(&seq.to_le_bytes());
}

fn w12_check(c: &[u8], seq: u64) -> bool {
    c[..8] == seq.to_le_bytes()
        && c[W12_CHUNK - 8..] == seq.to_le_bytes()
        && c[W12_CHUNK / 2 + 3] == ((W12_CHUNK / 2 + 3) * 7 % 251) as u8
}

async fn w12() -> Res<f64> {
    let (mut rd, mut wr) = tcp_pair().await?;
    let sent = Cell::new(0u64);
    let stop = Cell::new(false);
    let writer_done = Cell::new(false);
    let writer = async {
        let mut out = vec![0u8; W12_CHUNK];
        w12_fill_pattern(&mut out);
        while !stop.get() {
            w12_stamp(&mut out, sent.get());
            wr.write_all(&out).await.map_err(|e| format!("W12: write: {e}"))?;
            sent.set(sent.get() + 1);
        }
        writer_done.set(true);
        Ok::<(), String>(())
    };
    let reader = async {
        let mut input = vec![0u8; W12_CHUNK];
        let start = Instant::now();
        let (mut t0, mut c0, mut warm, mut received, mut mb_per_s) = (start, 0u64, true, 0u64, 0.0);
        while !(writer_done.get() && received == sent.get()) {
            rd.read_exact(&mut input).await.map_err(|e| format!("W12: read: {e}"))?;
            check(w12_check(&input, received), || "W12: a chunk arrived out of order or damaged".into())?;
            received += 1;
            if stop.get() {
                continue;
            }
            let now = Instant::now();
            if warm && now - start >= Duration::from_millis(200) {
                warm = false;
                t0 = now;
                c0 = received;
            } else if !warm && now - t0 >= Duration::from_secs(1) {
                mb_per_s = ((received - c0) as usize * W12_CHUNK) as f64 / 1e6 / (now - t0).as_secs_f64();
                stop.set(true);
            }
        }
        Ok::<f64, String>(mb_per_s)
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    let mb_per_s = r?;
    check(mb_per_s > 0.0, || "W12: no chunk in the timed window".into())?;
    Ok(mb_per_s)
}

fn run(workload: &str) -> Res<Vec<(&'static str, f64)>> {
    let rt = if matches!(workload, "W10" | "W11") {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
    .map_err(|e| format!("runtime: {e}"))?;
    Ok(match workload {
        "W1" => vec![("ns/op", bench(&rt, w1_batch)?)],
        "W2" => vec![("ns/op", bench(&rt, w2_batch)?)],
        "W3" => {
            let mut ns = Vec::new();
            let mut bytes = Vec::new();
            for _ in 0..3 {
                let (t, b) = rt.block_on(w3_rep())?;
                ns.push(t);
                bytes.push(b);
            }
            vec![("ns/task", median(ns)), ("bytes/task", median(bytes))]
        }
        "W4" => vec![("ns/op", bench(&rt, w4_batch)?)],
        "W8" => vec![("ns/op", bench(&rt, w2_batch)?)],
        "W9" => {
            let reps = (0..3).map(|_| rt.block_on(w9_rep())).collect::<Res<Vec<_>>>()?;
            vec![("ns/task", median(reps))]
        }
        "W5" => vec![("msg/s", rt.block_on(w5())?)],
        "W5m" => {
            // One worker, then one per CPU the process may use, each running as many W5 copies
            // as it has workers; the scheduler places (and steals) the tasks as it does.
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let multi = |workers: usize| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))
            };
            let one = multi(1)?.block_on(w5_on(1))?;
            let all = multi(cpus)?.block_on(w5_on(cpus))?;
            vec![("msg/s@1", one), ("msg/s", all), ("scaling", all / one)]
        }
        "W6a" => vec![("ns/op", w6(&rt, true)?)],
        "W6b" => vec![("ns/op", w6(&rt, false)?)],
        "W7" => {
            let reps = (0..3).map(|_| rt.block_on(w7_rep())).collect::<Res<Vec<_>>>()?;
            vec![("µs", median(reps))]
        }
        "W10" => vec![("ns/op", bench(&rt, w10_batch)?)],
        "W11" => vec![("µs", rt.block_on(w11())?)],
        "W12" => vec![("MB/s", rt.block_on(w12())?)],
        _ => return Err(format!("unknown workload {workload:?} (W1 W2 W3 W4 W5 W5m W6a W6b W7 W8 W9 W10 W11 W12)")),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: {} <W1|W2|W3|W4|W5|W5m|W6a|W6b|W7|W8|W9|W10|W11|W12>", args[0]);
        exit(2);
    }
    raise_nofile_limit();
    match run(&args[1]) {
        Ok(results) => {
            for (unit, value) in results {
                println!("RESULT {} {} {}", args[1], unit, fmt(value));
            }
        }
        Err(msg) => {
            eprintln!("{msg}");
            exit(1);
        }
    }
}

/// Three significant digits at least, no exponent.
fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
