"""The standing mutation check of quell's cancellation core (run through scripts/mutants).

Each fault below is a one-line change (a few lines at most) that breaks one rule of the model.
Each is applied in turn to a scratch copy of the tree, which is rebuilt (Release, g++, through
ccache, so that restoring a file costs nothing) and run against the core test binary with
--gtest_fail_fast under a time limit. A fault is *caught* when a test fails, crashes or hangs;
the first such test is printed. A fault that survives gets a test, not a removal from this list,
unless it is truly equivalent (then say why here, and remove it).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

# (id, file, text to find (exactly once), replacement, the rule it breaks)
MUTANTS = [
    # ---- the driver (the one awaiter state machine) and the protocol's defaults
    ("driver-settle", "include/quell/detail/driver.hpp",
     "    cancelled = !protocol_must_resume(aw_);",
     "    cancelled = false;",
     "a leaf that says it was cancelled is reported as completed"),
    ("driver-sync-cancel", "include/quell/detail/driver.hpp",
     "    if (sync) {\n      state = phase::done;\n      cancelled = true;",
     "    if (sync) {\n      state = phase::done;\n      cancelled = false;",
     "a leaf cancelled synchronously is reported as completed"),
    ("driver-deferred", "include/quell/detail/driver.hpp",
     "        self->defer(r);  // the call in progress delivers it when it returns",
     "        (void)r;  // the call in progress delivers it when it returns",
     "a request that arrives during a call into the awaitable is dropped"),
    ("protocol-early-cancel", "include/quell/cancellation.hpp",
     "    return true;  // never started: nothing of it runs",
     "    return false;  // never started: nothing of it runs",
     "an operation awaited under a pending cancel starts anyway"),
    ("merge-first-reason", "include/quell/cancellation.hpp",
     "  if (into.level == cancel_level::none) into.reason = r.reason;",
     "  into.reason = r.reason;",
     "a later request's reason replaces the first"),
    ("give-back-dropped", "include/quell/detail/driver.hpp",
     "    if (!(rare && rare->error) && protocol_give_back(aw_)) return nullptr;",
     "",
     "a race loser's unused result is dropped instead of put back"),
    # ---- the I/O leaf state machine and the reactor's two-phase cancel
    ("io-completion-ignores-decision", "include/quell/detail/io_leaf.hpp",
     "    if (d->cancel_sent) d->cancelled_ = d->on_cancel();",
     "    if (d->cancel_sent) d->cancelled_ = true;",
     "I/O that completed while its cancel was in flight is reported cancelled (completion wins broken)"),
    ("io-window", "include/quell/detail/io_leaf.hpp",
     "        cancelled_ = static_cast<D*>(this)->on_cancel();  // the completion window",
     "        (void)0;  // the completion window",
     "a leaf cancelled after its result was reaped reports completed anyway"),
    ("io-two-phase", "include/quell/detail/io_leaf.hpp",
     "        if (!owner_->cancel(this)) return false;  // in the kernel: its final CQE decides",
     "        if (!owner_->cancel(this)) return cancelled_ = true;  // in the kernel: its final CQE decides",
     "an operation in the kernel reports cancelled before its final CQE (two-phase cancel broken)"),
    ("io-give-back", "include/quell/detail/io_leaf.hpp",
     "      return static_cast<D*>(this)->give_back();",
     "      return false;",
     "a read, accept, recv_from or signal wait that a race discards does not put its result back"),
    ("reactor-queued-cancel", "src/reactor.cpp",
     "      op->unlink();\n      op->cancel_sent = true;",
     "      op->cancel_sent = true;",
     "an operation cancelled before it reached the kernel is still submitted"),
    ("read-keeps-bytes", "src/net.cpp",
     "    keep(object, buf.data(), static_cast<std::size_t>(res));  // received anyway: the next read gets it",
     "    (void)0;  // received anyway: the next read gets it",
     "bytes a cancelled read received anyway are dropped"),
    ("read-exact-keeps-bytes", "src/net.cpp",
     "  keep(object, buf.data(), got);\n  if (eof) object->stash_eof = true;\n  return true;",
     "  if (eof) object->stash_eof = true;\n  return true;",
     "bytes a cancelled read_exact received are dropped"),
    ("accept-keeps-connection", "src/net.cpp",
     "      object->stash_fds.push_back(res);  // accepted anyway: the next accept delivers it",
     "      ::close(res);  // accepted anyway: the next accept delivers it",
     "a connection a cancelled accept received anyway is closed"),
    ("recv-keeps-datagram", "src/net.cpp",
     "    object->stash_datagrams.push_back(record());  // received anyway: the next recv_from gets it",
     "    (void)0;  // received anyway: the next recv_from gets it",
     "a datagram a cancelled recv_from received anyway is dropped"),
    ("signal-keeps-signal", "src/signal.cpp",
     "    object->stash_signals.push_back(static_cast<int>(reinterpret_cast<const signalfd_siginfo*>(info)->ssi_signo));",
     "    (void)info;",
     "a signal a cancelled wait received anyway is dropped"),
    ("write-completed-anyway", "src/net.cpp",
     "  if (done == data.size()) return false;\n  if (res < 0 && res != -ECANCELED && res != -EINTR) return false;\n  return true;",
     "  if (res < 0 && res != -ECANCELED && res != -EINTR) return false;\n  return true;",
     "a write that went out while its cancel was in flight is reported cancelled"),
    # ---- run_blocking: the pool's cancel
    ("blocking-abandons", "src/blocking.cpp",
     "  job.stop.request_stop();\n  return false;",
     "  job.stop.request_stop();\n  return true;",
     "a cancelled caller stops waiting for its running function (it runs unowned)"),
    ("blocking-idle-counted-twice", "src/blocking.cpp",
     "  const bool start = queued_ + 1 > idle_ && threads_.size() < max_;",
     "  const bool start = idle_ == 0 && threads_.size() < max_;",
     "two jobs submitted before an idle thread wakes share it, and one that waits for the other never runs"),
    ("blocking-queued-runs", "src/blocking.cpp",
     "      job.unlink();\n      --queued_;\n      job.state = blocking_job::phase::dropped;\n      return true;",
     "      return false;",
     "a job cancelled while queued still runs"),
    # ---- seeing inside: the task tree, the observer's order, the cancel counters
    ("tree-age-unrecorded", "include/quell/detail/scheduler.hpp",
     "    stamp = turn_now();",
     "    (void)stamp;",
     "the task tree cannot say how long ago a request reached a task"),
    ("tree-skips-ancestors", "src/task_tree.cpp",
     "    for (const task_record* x = t; x && !index.count(x); x = task_above(x->parent)) chain.push_back(x);",
     "    if (!index.count(t)) chain.push_back(t);",
     "a task that never suspended itself is left out of the tree, and its children become roots"),
    ("observer-resume-without-suspend", "include/quell/detail/promise.hpp",
     "    tls.context = &p_;  // the body runs again: it is the current node\n    return this->result();",
     "    tls.context = &p_;  // the body runs again: it is the current node\n    if (tls.hooks) hook_task(hook_event::resumed, p_);\n    return this->result();",
     "an await that completed at once is reported to the observer as a resume"),
    ("confirm-uncounted", "include/quell/detail/promise.hpp",
     "    ended_cancelled = true;\n    if (scheduler* s = tls.current; s && requested_at != time_point::min()) s->note_confirmed(requested_at);\n    finish();",
     "    ended_cancelled = true;\n    finish();",
     "a task that ended cancelled at a suspension point is not counted as a confirmed cancel"),
    # ---- receive-ahead: multishot receive and accept, reads and accepts parked in user space
    ("ahead-window-put-back", "src/net.cpp",
     "    if (res > 0) put_back(object, buf.data(), static_cast<std::size_t>(res));",
     "    (void)0;",
     "bytes handed to a waiting read that is cancelled before it resumes are dropped"),
    ("ahead-parked-cancel-keeps", "include/quell/detail/io_leaf.hpp",
     "        res = -ECANCELED;\n        cancelled_ = static_cast<D*>(this)->on_cancel();",
     "        res = -ECANCELED;\n        cancelled_ = true;",
     "a waiting read_exact cancelled after part of its bytes came drops that part"),
    ("ahead-rest-of-cqe", "src/receive_ahead.cpp",
     "      if (o->incoming_len > 0 && !o->closing) append(o, o->incoming, o->incoming_len);",
     "      (void)append;",
     "the bytes of a CQE that the waiting read had no room for are dropped"),
    ("ahead-raised-cap-kept", "src/receive_ahead.cpp",
     "    a->stop_for_bound = true;  // its cap made room for this read's bytes: the queue has no such room\n    r.cancel(a);",
     "    a->stop_for_bound = true;  // its cap made room for this read's bytes: the queue has no such room",
     "a receive whose cap was raised for a waiting read keeps it after that read is cancelled (the bound broken)"),
    ("ahead-enobufs-fails", "src/receive_ahead.cpp",
     "  } else if (res == -ENOBUFS) {",
     "  } else if (false) {",
     "a ring that ran dry fails the socket's reads instead of re-arming"),
    ("ahead-bound-not-enforced", "src/receive_ahead.cpp",
     "      a->stop_for_bound = true;  // no kernel cap, or one raised for a read that went: stop it ourselves\n      r.cancel(a);",
     "      a->stop_for_bound = true;  // no kernel cap, or one raised for a read that went: stop it ourselves",
     "without the kernel's length cap, a socket nobody reads queues without bound"),
    ("ahead-executor-leaves-armed", "src/executor.cpp",
     "  r.stop_background();",
     "  (void)0;",
     "an executor returns (or hangs) with receive-ahead multishots still in the kernel"),
    # ---- cores: the cross-core child, the mailbox, the runtime's stuck detection, shared_semaphore
    ("on-start-ignores-cancel", "include/quell/detail/on_op.hpp",
     "      if (c->asked.load(std::memory_order_acquire) != cancel_level::none) {",
     "      if (false) {",
     "a cross-core child cancelled before its core started it calls its factory anyway"),
    ("on-cancel-not-forwarded", "include/quell/detail/on_op.hpp",
     "      if (!c->finished && c->drv) c->drv->cancel(c->req[i]);  // may finish it at once",
     "      (void)i;",
     "a request to a cross-core call never reaches the remote child"),
    ("on-resumes-before-remote-end", "include/quell/detail/on_op.hpp",
     "    return false;  // the child's end comes back as a message",
     "    return true;  // the child's end comes back as a message",
     "a cancelled cross-core call resumes its caller before the remote child (and its cleanup) ended"),
    ("mailbox-lifo", "include/quell/detail/service.hpp",
     "      m->next = fifo;\n      fifo = m;",
     "      m->next = nullptr;\n      if (!fifo) fifo = m;",
     "messages between cores are lost or run out of order"),
    ("group-idle-with-messages", "src/executor.cpp",
     "  if (group_ && (msgs || asked)) go_active();",
     "  (void)asked;",
     "a core runs messages while counted idle: the runtime may report stuck while work is in flight"),
    ("shared-sem-crossed-grant-kept", "src/shared_semaphore.cpp",
     "      sem_.available_ += w_.units;",
     "      (void)0;",
     "a shared_semaphore waiter granted while its cancel crossed keeps the units from everyone"),
    ("shared-event-crossed-sync", "src/shared_event.cpp",
     "  crossed_ = true;  // set() woke it on its way here: the wake-up message ends the wait, cancelled\n  return false;",
     "  crossed_ = true;\n  return true;",
     "a shared_event wait whose cancel crossed the wake-up ends before the wake-up arrived (it then resumes a finished wait)"),
    # ---- the synchronization primitives' wait queue
    ("semaphore-window", "include/quell/semaphore.hpp",
     "      sem_.release(units_);",
     "      (void)units_;",
     "units granted to a waiter that is then cancelled are lost"),
    ("event-window", "include/quell/event.hpp",
     "      gave_back();  // woken, not resumed yet: nothing was consumed",
     "      (void)0;  // woken, not resumed yet: nothing was consumed",
     "an event waiter cancelled before it resumed completes anyway"),
    ("channel-give-back", "include/quell/channel.hpp",
     "      c_.give_back(std::move(*value_));",
     "      (void)0;",
     "a value handed to a cancelled receive is dropped"),
    ("wait-queue-withdraw", "include/quell/detail/wait_queue.hpp",
     "    if (granted_) return false;\n    unlink();\n    return true;",
     "    unlink();\n    return true;",
     "a granted waiter is withdrawn as if it were still queued (resumed after a synchronous cancel)"),
    # ---- combinators
    ("composite-notify-early", "include/quell/detail/composite.hpp",
     "    if (--busy_ == 0 && done_) notify();  // may destroy *this",
     "    if (--busy_ == 0) notify();  // may destroy *this",
     "a combinator tells its waiter before it has its outcome"),
    ("race-error-beats-value", "include/quell/detail/race_op.hpp",
     "        result_.set_error(std::move(e));  // an exception beats a value",
     "        (void)e;  // an exception beats a value",
     "a loser's exception is dropped when the winner has a value"),
    ("race-cancels-losers", "include/quell/detail/race_op.hpp",
     "    } else if (!starting_ && !losers_cancelled_ && keeps_.decided()) {\n      cancel_losers();",
     "    } else if (!starting_ && !losers_cancelled_ && keeps_.decided()) {\n      losers_cancelled_ = true;",
     "a race does not cancel its losers once decided"),
    ("join-first-error", "include/quell/detail/join_op.hpp",
     "    } else if ((error_ || incomplete_) && !siblings_cancelled_ && !starting_) {\n      self().cancel_all(sibling_request());",
     "    } else if ((error_ || incomplete_) && !siblings_cancelled_ && !starting_) {\n      siblings_cancelled_ = true;",
     "join's first exception does not cancel the siblings"),
    ("on-cancel-outside-in", "include/quell/detail/on_cancel_op.hpp",
     "      if (!op_.finished()) start_hook();",
     "      if (!op_.finished()) forward();",
     "on_cancel cancels the operation without running its hook first"),
    ("shield-graceful", "include/quell/detail/shield_op.hpp",
     "      if (req_.forced() || lifted_) {",
     "      if (true) {",
     "a shield lets a graceful request through"),
    ("shield-bound", "include/quell/detail/shield_op.hpp",
     "        alarm_.arm_at(node_.deadline);",
     "        (void)node_.deadline;",
     "a bounded shield never ends"),
    ("deadline-armed", "include/quell/detail/deadline_op.hpp",
     "      alarm_.arm_reserved_at(node_.deadline);",
     "      (void)node_.deadline;",
     "a deadline whose operation is waiting never fires"),
    ("deadline-passed-at-start", "include/quell/detail/deadline_op.hpp",
     "      if (op_.start(this, &op_done, &r)) op_finished();",
     "      if (op_.start(this, &op_done, nullptr)) op_finished();",
     "an operation whose deadline has already passed is started without a pending cancel"),
    ("deadline-outer-wins", "include/quell/detail/deadline_op.hpp",
     "      timed_out_ = !enclosing_cancel_due(node_.parent, now());",
     "      timed_out_ = true;",
     "an inner deadline times out although an enclosing one expired with it"),
    ("any-of-keeps-late", "include/quell/detail/race_op.hpp",
     "        std::get<I>(values_).emplace(d.result());",
     "        (void)d.result();",
     "any_of drops the value of a branch that completed"),
    ("join-settled-completed", "include/quell/detail/join_op.hpp",
     "      if (!slot.cancelled()) completed_ = true;",
     "      (void)slot;",
     "join_settled cancelled from outside ends cancelled although an operation completed anyway"),
    ("task-set-window", "include/quell/task_set.hpp",
     "      if (taken_) s_.done_.push_front(std::exchange(taken_, nullptr));  // first in line again",
     "      if (taken_) std::exchange(taken_, nullptr)->release();  // first in line again",
     "a result handed to a next() that is cancelled before it resumed is dropped"),
    ("generator-forwards-cancel", "include/quell/generator.hpp",
     "      h_.promise().request_cancel(r);  // to the operation the producer waits on",
     "      (void)r;  // to the operation the producer waits on",
     "cancelling a consumer waiting in next() does not reach the producer"),
    # ---- scopes, tasks, cleanup
    ("scope-walk", "src/scope.cpp",
     "  while (cursor.next != &end) {",
     "  while (cursor.next->next != &end) {",
     "cancelling a scope skips its last child"),
    ("handle-force-cancel", "include/quell/scope.hpp",
     "    if (c_ && !c_->finished) c_->cancel(cancel_request{cancel_level::forced, std::move(reason)});",
     "    if (c_ && !c_->finished) c_->cancel(cancel_request{cancel_level::graceful, std::move(reason)});",
     "spawn_handle::force_cancel sends a graceful request"),
    ("run-main-third-signal", "src/signal.cpp",
     "      core.add_service(this);  // a third one ends the process",
     "      (void)0;  // a third one ends the process",
     "run_main ignores a third signal"),
    ("task-forced-reaches-cleanup", "include/quell/detail/promise.hpp",
     "        if (p->cleanup) p->cleanup->request(p->request);  // its cleanups may be running",
     "        (void)0;  // its cleanups may be running",
     "a forced request does not reach a running async cleanup"),
    ("cleanup-shielded", "src/cleanup.cpp",
     "      if (!sync && owner_.request.forced()) current_->cancel(owner_.request);",
     "      if (!sync && owner_.request.level != cancel_level::none) current_->cancel(owner_.request);",
     "an async cleanup is cancelled by a graceful request (not shielded)"),
    # ---- the executor
    ("executor-cancel-drains", "src/executor.cpp",
     "  if (active_ == 1) sched_.drain_ready();  // inside a turn, the turn's own loop runs what was queued",
     "  (void)0;  // inside a turn, the turn's own loop runs what was queued",
     "cancel() from outside a turn does not run what the cancel made ready"),
    ("executor-waits-for-io", "src/executor.cpp",
     "  return io && (io->in_flight() > 0 || io->external_sources > 0);",
     "  return io && io->external_sources > 0;",
     "the executor ignores I/O in flight (does not wait for it, reports stuck, frees under the kernel)"),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and check each applies, build nothing")
    ap.add_argument("--timeout", type=int, default=240, help="seconds for one test run")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    top = sh(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    chosen = MUTANTS
    if args.only:
        ids = set(args.only.split(","))
        chosen = [m for m in MUTANTS if m[0] in ids]
        unknown = ids - {m[0] for m in chosen}
        if unknown:
            sys.exit("scripts/mutants: unknown mutant(s): " + ", ".join(sorted(unknown)))

    # Every fault must apply to the current tree exactly once: a stale entry is an error, not a pass.
    stale = []
    for mid, path, find, _, _ in chosen:
        with open(os.path.join(top, path)) as f:
            n = f.read().count(find)
        if n != 1:
            stale.append(f"{mid}: found {n} times in {path}")
    if stale:
        print("scripts/mutants: these faults no longer apply to the tree (update the list):")
        for s in stale:
            print("  " + s)
        sys.exit(2)
    if args.list:
        for mid, path, _, _, why in chosen:
            print(f"{mid:34} {path:40} {why}")
        return

    work = os.path.join(top, "build", "mutants")
    src = os.path.join(work, "src")
    bld = os.path.join(work, "build")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    files = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=top, capture_output=True,
               check=True).stdout.split(b"\0")
    for rel in files:
        if not rel:
            continue
        rel = rel.decode()
        if not os.path.isfile(os.path.join(top, rel)):
            continue  # deleted in the work tree
        dst = os.path.join(src, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        # copy, not copy2: a fresh mtime, so that ninja rebuilds whatever the scratch build of an
        # earlier run compiled from other sources (ccache makes the unchanged ones free). With the
        # work tree's mtimes, objects newer than them were kept: stale code, wrong verdicts.
        shutil.copy(os.path.join(top, rel), dst)

    env = dict(os.environ, CCACHE_DIR=os.path.join(top, "build", "ccache"), CCACHE_NOHASHDIR="1",
               CCACHE_BASEDIR=src)
    sh(["cmake", "-S", src, "-B", bld, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_COMPILER=g++",
        "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DQUELL_BUILD_EXAMPLES=OFF", "-DQUELL_BUILD_BENCH=OFF",
        "-DQUELL_BUILD_PG=OFF", "-DQUELL_BUILD_HTTP=OFF", "-DQUELL_BUILD_TESTS=ON"], env=env, check=True,
       stdout=subprocess.DEVNULL)
    binary = os.path.join(bld, "tests", "quell_tests")

    def build():
        r = sh(["cmake", "--build", bld, "-j", str(args.jobs), "--target", "quell_tests"], env=env,
               capture_output=True, text=True)
        return r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def run_tests():
        try:
            r = sh([binary, "--gtest_fail_fast", "--gtest_brief=0"], cwd=bld, capture_output=True, text=True,
                   timeout=args.timeout, errors="replace")
            out, rc, hung = r.stdout + r.stderr, r.returncode, False
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, hung = -1, True
        failed = [f.rstrip(",") for f in re.findall(r"^\[  FAILED  \] (\S+)", out, re.M)]
        running = re.findall(r"^\[ RUN      \] (\S+)", out, re.M)
        if rc == 0:
            return None
        if failed:
            return f"{failed[0]} (failed)"
        last = running[-1] if running else "(before any test)"
        return f"{last} ({'hung' if hung else 'crashed'})"

    t0 = time.time()
    ok, log = build()
    if not ok:
        print(log)
        sys.exit("scripts/mutants: the unmutated tree does not build")
    base = run_tests()
    if base is not None:
        sys.exit(f"scripts/mutants: the unmutated tree fails: {base}")
    print(f"baseline: builds, all tests pass ({time.time() - t0:.0f} s)")

    survived, broken = [], []
    for i, (mid, path, find, repl, why) in enumerate(chosen, 1):
        t1 = time.time()
        target = os.path.join(src, path)
        with open(target) as f:
            original = f.read()
        with open(target, "w") as f:
            f.write(original.replace(find, repl, 1))
        try:
            ok, log = build()
            if not ok:
                verdict = "DID NOT BUILD (fix the fault)"
                broken.append(mid)
                print(log[-1500:])
            else:
                caught = run_tests()
                if caught is None:
                    verdict = "SURVIVED"
                    survived.append(mid)
                else:
                    verdict = "caught by " + caught
        finally:
            with open(target, "w") as f:
                f.write(original)
        print(f"[{i}/{len(chosen)}] {mid}: {why}\n        {verdict} ({time.time() - t1:.0f} s)", flush=True)

    ok, _ = build()  # leave the scratch build unmutated (and the cache warm)
    print(f"\n{len(chosen) - len(survived) - len(broken)} of {len(chosen)} faults caught"
          f"{'; survived: ' + ', '.join(survived) if survived else ''}"
          f"{'; did not build: ' + ', '.join(broken) if broken else ''} ({time.time() - t0:.0f} s)")
    sys.exit(1 if survived or broken else 0)


if __name__ == "__main__":
    main()
