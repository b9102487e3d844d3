// semaphore, mutex, event, channel: what a waiter takes and keeps when it is cancelled.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using quell::executor;
using quell::join;
using quell::on_cancel;
using quell::pending;
using quell::race;
using quell::task;
using quell::yield;
using lines = std::vector<std::string>;

namespace {
task<> after_turns(int n) {
  for (int i = 0; i < n; ++i) co_await yield();
}
}  // namespace

// ---- semaphore -------------------------------------------------------------------------------

TEST(Semaphore, APermitStaysHeldUntilTheCancelledHoldersAsyncAbortAndFrameHaveFinished) {
  quell::test::log log;
  quell::semaphore sem{1};
  struct frame_marker {
    quell::test::log* l;
    ~frame_marker() { l->print("A: frame destroyed"); }
  };
  auto abort_backend = [&]() -> task<> {
    log.print("A: abort sent");
    co_await yield();
    co_await yield();
    log.print("A: abort acknowledged");
  };
  auto a = [&]() -> task<> {
    quell::permit p = co_await sem.acquire();
    frame_marker m{&log};
    log.print("A: acquired");
    co_await on_cancel(pending(), abort_backend());
  };
  auto b = [&]() -> task<> {
    log.print("B: waits");
    quell::permit p = co_await sem.acquire();
    log.print("B: acquired, available " + std::to_string(sem.available()));
  };
  quell::block_on(join(race(a(), after_turns(2)), b()));
  EXPECT_EQ(log.lines, (lines{"A: acquired", "B: waits", "A: abort sent", "A: abort acknowledged", "A: frame destroyed",
                              "B: acquired, available 0"}));
  EXPECT_EQ(sem.available(), 1u);
}

TEST(Semaphore, WaitersAreServedInFifoOrderAndALargeRequestAtTheHeadHoldsBackSmallerOnes) {
  quell::test::log log;
  quell::semaphore sem{3};
  auto all = sem.try_acquire(3);
  auto waiter = [&](std::string name, std::size_t n) -> task<> {
    quell::permit q = co_await sem.acquire(n);
    log.print(name + " got " + std::to_string(n));
    co_await yield();
  };
  auto releaser = [&]() -> task<> {
    co_await yield();
    all->release();
  };
  quell::block_on(join(waiter("first", 1), waiter("second", 3), waiter("third", 1), releaser()));
  // "third" could have run beside "first" but must not overtake "second".
  EXPECT_EQ(log.lines, (lines{"first got 1", "second got 3", "third got 1"}));
  EXPECT_EQ(sem.available(), 3u);
}

TEST(Semaphore, AskingForMoreUnitsThanItHasIsAnInvalidArgument) {
  quell::semaphore sem{2};
  EXPECT_THROW((void)quell::block_on(sem.acquire(3)), std::invalid_argument);
  EXPECT_EQ(sem.available(), 2u);
}

TEST(SyncMisuseDeathTest, AwaitingTheSameWaitTwiceTerminatesWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        quell::semaphore s{1};
        auto held = s.try_acquire();
        auto w = s.acquire();
        auto body = [&]() -> task<> { co_await join(w, w); };
        executor ex{body()};
        ex.poll_once();
      },
      "awaited twice");
}

TEST(Semaphore, TryAcquireDoesNotOvertakeQueuedWaiters) {
  quell::semaphore sem{1};
  auto held = sem.try_acquire();
  ASSERT_TRUE(held);
  EXPECT_FALSE(sem.try_acquire());
  executor ex{sem.acquire()};
  ex.poll_once();
  EXPECT_EQ(sem.waiting(), 1u);
  held->release();
  EXPECT_FALSE(sem.try_acquire());  // the unit went to the queued waiter
  EXPECT_TRUE(ex.poll_once());
  quell::permit p = ex.run();
  EXPECT_EQ(p.units(), 1u);
}

TEST(Semaphore, AWaiterCancelledWhileQueuedTakesNothingAndTheUnitsGoToTheNext) {
  quell::test::log log;
  quell::semaphore sem{1};
  auto held = sem.try_acquire();
  auto cancelled_waiter = [&]() -> task<> {
    co_await race(sem.acquire(), after_turns(1));
    log.print("first waiter gave up");
  };
  auto patient = [&]() -> task<> {
    quell::permit p = co_await sem.acquire();
    log.print("second waiter got it");
  };
  auto releaser = [&]() -> task<> {
    co_await after_turns(3);
    held->release();
  };
  quell::block_on(join(cancelled_waiter(), patient(), releaser()));
  EXPECT_EQ(log.lines, (lines{"first waiter gave up", "second waiter got it"}));
  EXPECT_EQ(sem.available(), 1u);
}

TEST(Semaphore, CancellingTheHeadWaiterLetsSmallerRequestsBehindItThrough) {
  quell::semaphore sem{2};
  auto held = sem.try_acquire(2);
  executor big{sem.acquire(2)};
  big.poll_once();
  executor small{sem.acquire(1)};
  small.poll_once();
  held->release();
  EXPECT_EQ(sem.available(), 0u);  // went to the head: both units for the big request
  EXPECT_TRUE(big.poll_once());
  big.run().release();  // the big request releases at once; now the small one is served
  EXPECT_TRUE(small.poll_once());
  EXPECT_EQ(small.run().units(), 1u);
  EXPECT_EQ(sem.available(), 2u);
}

TEST(Semaphore, CancellingAHeadWaiterThatBlocksOthersGrantsThemAtOnce) {
  quell::semaphore sem{2};
  auto held = sem.try_acquire(1);  // one unit free, but the head wants two
  executor big{sem.acquire(2)};
  big.poll_once();
  executor small{sem.acquire(1)};
  small.poll_once();
  EXPECT_EQ(sem.waiting(), 2u);
  big.cancel();
  EXPECT_TRUE(big.done());
  EXPECT_TRUE(small.poll_once());
  EXPECT_EQ(small.run().units(), 1u);
}

TEST(Semaphore, AWaiterGrantedAndCancelledBeforeItResumedGivesTheUnitsToTheNextWaiter) {
  quell::test::log log;
  quell::semaphore sem{1};
  auto held = sem.try_acquire();
  auto first = [&]() -> task<> {
    quell::permit p = co_await sem.acquire();
    log.print("first granted");  // must not run: it was cancelled before it resumed
  };
  auto second = [&]() -> task<> {
    quell::permit p = co_await sem.acquire();
    log.print("second granted, available " + std::to_string(sem.available()));
  };
  executor a{first()};
  executor b{second()};
  a.poll_once();
  b.poll_once();
  held->release();  // granted to `first`: it resumes in its executor's run queue
  EXPECT_EQ(sem.available(), 0u);
  a.cancel();  // the cancellation arrives before it resumed: the units go on to `second`
  EXPECT_TRUE(a.done());
  EXPECT_TRUE(b.poll_once());
  EXPECT_EQ(log.lines, (lines{"second granted, available 0"}));
  EXPECT_EQ(sem.available(), 1u);  // not lost, not granted twice
}

TEST(Semaphore, ARaceThatCancelsAGrantedAcquireBeforeItResumedTakesNoPermit) {
  quell::semaphore sem{1};
  auto held = sem.try_acquire();
  bool ran_on = false;
  auto body = [&]() -> task<> {
    auto acquiring = [&]() -> task<> {
      quell::permit p = co_await sem.acquire();
      ran_on = true;
      co_await yield();
    };
    auto releasing = [&]() -> task<> {
      co_await yield();  // the acquire is queued by now
      held->release();   // grants it (its resumption is queued), then this branch wins at once
    };
    co_await race(acquiring(), releasing());
    EXPECT_FALSE(ran_on);
    EXPECT_EQ(sem.available(), 1u);
  };
  quell::block_on(body());
}

TEST(Semaphore, APermitMovedIntoACleanupHookIsReleasedWhenTheHookEnds) {
  quell::test::log log;
  quell::semaphore sem{1};
  auto work = [&]() -> task<> {
    quell::permit p = co_await sem.acquire();
    auto cleanup = [&](quell::permit held) -> task<> {
      log.print("cleanup holds " + std::to_string(held.units()) + ", available " + std::to_string(sem.available()));
      co_await yield();
      log.print("cleanup done");
    };
    co_await on_cancel(pending(), cleanup(std::move(p)));
  };
  {
    executor ex{work()};
    ex.poll_once();
  }
  EXPECT_EQ(log.lines, (lines{"cleanup holds 1, available 0", "cleanup done"}));
  EXPECT_EQ(sem.available(), 1u);
}

TEST(Semaphore, RandomisedAcquireReleaseCancelKeepsTheAccountsExact) {
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    const std::size_t units = 3;
    quell::semaphore sem{units};
    std::size_t held = 0, max_held = 0, completed = 0, gave_up = 0;
    auto worker = [&](std::size_t n, int hold_turns, int patience) -> task<> {
      auto use = [&]() -> task<> {
        quell::permit p = co_await sem.acquire(n);
        struct holding {  // counts units held by tasks, released with the frame however it ends
          std::size_t& held;
          std::size_t n;
          ~holding() { held -= n; }
        } h{held, n};
        held += n;
        max_held = std::max(max_held, held);
        co_await after_turns(hold_turns);
        ++completed;
      };
      bool used = false;
      auto use_and_mark = [&]() -> task<> {
        co_await use();
        used = true;
      };
      co_await race(use_and_mark(), after_turns(patience));
      if (!used) ++gave_up;
    };
    std::vector<task<>> workers;
    std::uniform_int_distribution<int> turns(0, 4), size(1, 2);
    for (int i = 0; i < 40; ++i) workers.push_back(worker(size(rng), turns(rng), turns(rng) + 1));
    quell::block_on(join(std::move(workers)));
    SCOPED_TRACE("seed " + std::to_string(seed));
    EXPECT_EQ(sem.available(), units);
    EXPECT_EQ(sem.waiting(), 0u);
    EXPECT_LE(max_held, units);
    EXPECT_EQ(completed + gave_up, 40u);
  }
}

// ---- mutex -------------------------------------------------------------------------------------

TEST(Mutex, GivesExclusiveAccessInFifoOrder) {
  quell::test::log log;
  quell::mutex m;
  int inside = 0;
  auto critical = [&](std::string name) -> task<> {
    quell::mutex::guard g = co_await m.lock();
    ++inside;
    log.print(name + " in, " + std::to_string(inside) + " inside");
    co_await yield();
    --inside;
  };
  quell::block_on(join(critical("a"), critical("b"), critical("c")));
  EXPECT_EQ(log.lines, (lines{"a in, 1 inside", "b in, 1 inside", "c in, 1 inside"}));
  EXPECT_FALSE(m.locked());
}

TEST(Mutex, ATaskCancelledWhileWaitingForTheLockTakesNothing) {
  quell::mutex m;
  auto g = m.try_lock();
  ASSERT_TRUE(g);
  {
    executor ex{m.lock()};
    ex.poll_once();
    ex.cancel();
    EXPECT_TRUE(ex.done());
  }
  g->release();
  EXPECT_FALSE(m.locked());
  EXPECT_TRUE(m.try_lock());
}

TEST(Mutex, ATaskHandedTheLockButCancelledBeforeItResumedTakesNothing) {
  quell::test::log log;
  quell::mutex m;
  auto g = m.try_lock();
  auto waiter = [&]() -> task<> {
    quell::mutex::guard held = co_await m.lock();
    log.print("got the lock");
    co_await yield();
  };
  executor ex{waiter()};
  ex.poll_once();
  g->release();  // handed over, not yet resumed
  EXPECT_TRUE(m.locked());
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, lines{});
  EXPECT_FALSE(m.locked());
}

TEST(Mutex, LosingARaceWhileWaitingForTheLockTakesNothing) {
  quell::test::log log;
  quell::mutex m;
  auto holder = [&]() -> task<> {
    quell::mutex::guard g = co_await m.lock();
    co_await after_turns(3);
    log.print("holder unlocks");
  };
  auto impatient = [&]() -> task<> {
    co_await yield();
    co_await race(m.lock(), after_turns(1));
    log.print("impatient gave up, locked: " + std::string(m.locked() ? "yes" : "no"));
  };
  quell::block_on(join(holder(), impatient()));
  EXPECT_EQ(log.lines, (lines{"impatient gave up, locked: yes", "holder unlocks"}));
  EXPECT_FALSE(m.locked());
}

// ---- event -------------------------------------------------------------------------------------

TEST(Event, SetWakesEveryWaiterInOrderAndStaysSet) {
  quell::test::log log;
  quell::event e;
  auto waiter = [&](std::string name) -> task<> {
    co_await e.wait();
    log.print(name);
  };
  auto setter = [&]() -> task<> {
    co_await yield();
    e.set();
    co_await e.wait();  // already set: returns at once
    log.print("setter");
  };
  quell::block_on(join(waiter("a"), waiter("b"), setter()));
  EXPECT_EQ(log.lines, (lines{"setter", "a", "b"}));
  EXPECT_TRUE(e.is_set());
  e.reset();
  EXPECT_FALSE(e.is_set());
}

TEST(Event, AWaiterCancelledBeforeSetIsRemovedAndOthersStillWake) {
  quell::test::log log;
  quell::event e;
  auto impatient = [&]() -> task<> {
    co_await race(e.wait(), after_turns(1));
    log.print("impatient gave up");
  };
  auto patient = [&]() -> task<> {
    co_await e.wait();
    log.print("patient woke");
  };
  auto setter = [&]() -> task<> {
    co_await after_turns(3);
    e.set();
  };
  quell::block_on(join(impatient(), patient(), setter()));
  EXPECT_EQ(log.lines, (lines{"impatient gave up", "patient woke"}));
}

TEST(Event, AWaiterWokenButCancelledBeforeItResumedEndsCancelledAndTheEventStaysSet) {
  quell::test::log log;
  quell::event e;
  auto waiter = [&]() -> task<> {
    co_await e.wait();
    log.print("woke");
  };
  executor ex{waiter()};
  ex.poll_once();
  e.set();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, lines{});
  EXPECT_TRUE(e.is_set());
}

// ---- channel -----------------------------------------------------------------------------------

TEST(Channel, DeliversInOrderAndBlocksSendersWhenFull) {
  quell::test::log log;
  quell::channel<int> ch{2};
  auto producer = [&]() -> task<> {
    for (int i = 1; i <= 5; ++i) {
      co_await ch.send(i);
      log.print("sent " + std::to_string(i) + ", buffered " + std::to_string(ch.size()));
    }
    ch.close();
  };
  auto consumer = [&]() -> task<> {
    co_await after_turns(2);
    while (auto v = co_await ch.receive()) log.print("got " + std::to_string(*v));
    log.print("end of stream");
  };
  quell::block_on(join(producer(), consumer()));
  // The waiting send of 3 is admitted when 1 is taken; the consumer then drains 2 and 3 without
  // suspending; 4 goes straight to the waiting consumer; 5 is buffered before it resumes.
  EXPECT_EQ(log.lines,
            (lines{"sent 1, buffered 1", "sent 2, buffered 2", "got 1", "got 2", "got 3", "sent 3, buffered 0",
                   "sent 4, buffered 0", "sent 5, buffered 1", "got 4", "got 5", "end of stream"}));
}

TEST(Channel, CarriesMoveOnlyValues) {
  quell::channel<std::unique_ptr<int>> ch{1};
  auto roundtrip = [&]() -> task<int> {
    co_await ch.send(std::make_unique<int>(41));
    auto v = co_await ch.receive();
    co_return **v + 1;
  };
  EXPECT_EQ(quell::block_on(roundtrip()), 42);
}

TEST(Channel, ASendCancelledWhileWaitingLeavesTheValueWithTheCaller) {
  quell::channel<std::unique_ptr<int>> ch{1};
  auto filler = std::make_unique<int>(1);
  auto fill = [&]() -> task<> { co_await ch.send(filler); };
  quell::block_on(fill());
  auto value = std::make_unique<int>(2);
  bool sent = false;
  auto send_it = [&]() -> task<> {
    co_await ch.send(value);
    sent = true;
  };
  auto try_send = [&]() -> task<bool> {
    co_await race(send_it(), after_turns(2));
    co_return sent;
  };
  EXPECT_FALSE(quell::block_on(try_send()));
  ASSERT_TRUE(value);  // untouched: the caller still owns it
  EXPECT_EQ(*value, 2);
  EXPECT_EQ(ch.size(), 1u);
}

TEST(Channel, ASendWhoseValueWasTakenInTheSameTurnItIsCancelledCompletes) {
  quell::channel<int> ch{1};
  int first = 1, second = 2;
  quell::block_on([&]() -> task<> { co_await ch.send(first); }());
  quell::test::log log;
  auto sender = [&]() -> task<> {
    co_await ch.send(second);
    log.print("send completed");
  };
  executor ex{sender()};
  ex.poll_once();                              // waits: the channel is full
  auto taken = quell::block_on(ch.receive());  // makes room: the waiting send is admitted
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"send completed"}));
  EXPECT_EQ(*taken, 1);
  EXPECT_EQ(*quell::block_on(ch.receive()), 2);  // in the channel once, not lost, not twice
}

TEST(Channel, AReceiveCancelledWhileWaitingConsumesNothing) {
  quell::channel<int> ch{1};
  auto impatient = [&]() -> task<bool> {
    auto r = co_await race(ch.receive(), after_turns(1));
    co_return r.index() == 0;
  };
  EXPECT_FALSE(quell::block_on(impatient()));
  int v = 9;
  quell::block_on([&]() -> task<> { co_await ch.send(v); }());
  EXPECT_EQ(*quell::block_on(ch.receive()), 9);
}

TEST(Channel, AReceiveHandedAValueButCancelledBeforeResumingGivesTheValueBack) {
  quell::channel<int> ch{1};
  quell::test::log log;
  auto receiver = [&]() -> task<> {
    auto v = co_await ch.receive();
    log.print("received " + std::to_string(*v));
  };
  executor ex{receiver()};
  ex.poll_once();
  int v = 5;
  quell::block_on([&]() -> task<> { co_await ch.send(v); }());  // handed straight to the receiver
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_TRUE(log.lines.empty());
  ASSERT_EQ(ch.size(), 1u);  // back in the channel, unconsumed
  EXPECT_EQ(*quell::block_on(ch.receive()), 5);
}

TEST(Channel, AValueHandedToAReceiveThatLosesARaceIsNotDropped) {
  quell::channel<int> ch{1};
  auto sender = [&]() -> task<> {
    co_await yield();
    co_await ch.send(7);
  };
  auto body = [&]() -> task<std::optional<int>> {
    // The receive is handed 7 in the same turn the sender's branch finishes and wins the race.
    co_await race(ch.receive(), sender());
    co_return co_await ch.receive();
  };
  auto got = quell::block_on(body());
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 7);
}

namespace {
struct fragile {
  int v;
  bool boom = false;
  fragile(int x, bool b = false) : v(x), boom(b) {}
  fragile(fragile&& o) : v(o.v), boom(o.boom) {
    if (boom) throw std::runtime_error("move failed");
  }
  fragile& operator=(fragile&&) = default;
};
}  // namespace

TEST(Channel, ASenderWhoseValueFailsToMoveGetsTheErrorAndTheChannelStaysUsable) {
  quell::test::log log;
  quell::channel<fragile> ch{1};
  auto sender = [&]() -> task<> {
    co_await ch.send(fragile{1});
    try {
      co_await ch.send(fragile{2, true});  // waits (full), fails when admitted
    } catch (const std::runtime_error& e) {
      log.print(std::string("sender: ") + e.what());
    }
    co_await ch.send(fragile{3});
  };
  auto receiver = [&]() -> task<> {
    co_await yield();
    auto a = co_await ch.receive();
    log.print("receiver got " + std::to_string(a->v));
    auto b = co_await ch.receive();
    log.print("receiver got " + std::to_string(b->v));
  };
  quell::block_on(join(sender(), receiver()));
  EXPECT_EQ(log.lines, (lines{"receiver got 1", "sender: move failed", "receiver got 3"}));
}

TEST(Channel, CloseWhileSendersAndReceiversWait) {
  quell::test::log log;
  quell::channel<int> full{1}, empty{1};
  int a = 1, b = 2;
  auto sender = [&]() -> task<> {
    co_await full.send(a);
    try {
      co_await full.send(b);
    } catch (const quell::channel_closed&) {
      log.print("sender: channel_closed, value still " + std::to_string(b));
    }
  };
  auto receiver = [&]() -> task<> {
    auto v = co_await empty.receive();
    log.print(v ? "receiver: value" : "receiver: end of stream");
  };
  auto closer = [&]() -> task<> {
    co_await yield();
    full.close();
    empty.close();
    auto drained = co_await full.receive();
    log.print("drained " + std::to_string(*drained));
    auto end = co_await full.receive();
    log.print(end ? "more" : "then end of stream");
  };
  quell::block_on(join(sender(), receiver(), closer()));
  EXPECT_EQ(log.lines, (lines{"drained 1", "then end of stream", "sender: channel_closed, value still 2",
                              "receiver: end of stream"}));
}

TEST(Channel, SendingOnAClosedChannelThrowsChannelClosed) {
  quell::channel<int> ch{4};
  ch.close();
  int v = 1;
  EXPECT_THROW(quell::block_on(ch.send(v)), quell::channel_closed);
}
