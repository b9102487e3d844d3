// docs/guide/03-structured-concurrency.md: a task_group owned by an object.
#include <string>
#include <utility>

#include "guide.hpp"

// Internal linkage: clang 14 with -fsanitize=function (UBSan) cannot emit the prologue of an
// inline (comdat) coroutine, such as a member coroutine defined in its class ("Cannot represent a
// difference across sections"); tests/support/random_tree.hpp does the same.
namespace {

// [guide:task-group]
class session_table {
 public:
  void accept(std::string client) { sessions_.spawn(session(std::move(client))); }
  std::size_t open() const { return sessions_.running(); }
  quell::task<> stop() {
    quell::cancel_reason why(quell::cancel_kind::shutdown);
    co_await sessions_.cancel_and_join(why);
  }

 private:
  static quell::task<> session(std::string client) {
    auto goodbye = [client]() -> quell::task<> {
      note(client + ": " + quell::this_task::cancel_reason()->describe() + ", saying goodbye");
      co_await quell::sleep_for(2ms);
      note(client + ": closed");
    };
    co_await quell::on_cancel(quell::pending(), goodbye);
  }

  quell::task_group sessions_;
};

quell::task<> server() {
  session_table table;
  table.accept("alice");
  co_await quell::sleep_for(10ms);
  table.accept("bob");
  note(std::to_string(table.open()) + " sessions open");
  co_await table.stop();
  note(std::to_string(table.open()) + " sessions open");
}
// [/guide:task-group]

}  // namespace

int main() {
  quell::virtual_clock clock;
  quell::executor{server(), clock}.run();
}
