// Storage for "how did it end": nothing yet, a value, an exception, or cancelled.
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace quell::detail {

template <class T>
struct stored {
  using type = T;
  static T&& get(T& v) noexcept { return std::move(v); }
};
template <class T>
struct stored<T&> {
  using type = T*;
  static T& get(T* p) noexcept { return *p; }
};
template <>
struct stored<void> {
  struct unit {};
  using type = unit;
  static void get(unit) noexcept {}
};

template <class T>
class outcome {
 public:
  enum class kind : unsigned char { empty, value, error, cancelled };

  outcome() noexcept {}
  outcome(const outcome&) = delete;
  outcome& operator=(const outcome&) = delete;
  ~outcome() { reset(); }

  kind state() const noexcept { return kind_; }
  bool empty() const noexcept { return kind_ == kind::empty; }
  bool has_value() const noexcept { return kind_ == kind::value; }
  bool has_error() const noexcept { return kind_ == kind::error; }
  bool cancelled() const noexcept { return kind_ == kind::cancelled; }

  template <class... Args>
  void set_value(Args&&... args) {
    reset();
    if constexpr (std::is_void_v<T>) {
      ::new (&value_) typename stored<T>::type{};
    } else if constexpr (std::is_reference_v<T>) {
      ::new (&value_) typename stored<T>::type(std::addressof(args)...);
    } else {
      ::new (&value_) typename stored<T>::type(std::forward<Args>(args)...);
    }
    kind_ = kind::value;
  }
  void set_error(std::exception_ptr e) noexcept {
    reset();
    ::new (&error_) std::exception_ptr(std::move(e));
    kind_ = kind::error;
  }
  void set_cancelled() noexcept {
    reset();
    kind_ = kind::cancelled;
  }
  const std::exception_ptr& error() const noexcept { return error_; }

  // Rethrows a stored exception; otherwise moves the value out. Precondition: value or error.
  T take() {
    if (kind_ == kind::error) std::rethrow_exception(error_);
    return stored<T>::get(value_);
  }

  void reset() noexcept {
    if (kind_ == kind::value) {
      value_.~stored_t();
    } else if (kind_ == kind::error) {
      error_.~exception_ptr();
    }
    kind_ = kind::empty;
  }

 private:
  using stored_t = typename stored<T>::type;
  union {
    stored_t value_;
    std::exception_ptr error_;
  };
  kind kind_ = kind::empty;
};

}  // namespace quell::detail
