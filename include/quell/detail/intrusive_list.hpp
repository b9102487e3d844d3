// A circular doubly-linked intrusive list: O(1) push, pop and self-unlink, no allocation.
#pragma once

namespace quell::detail {

struct list_node {
  list_node* prev = nullptr;
  list_node* next = nullptr;

  bool linked() const noexcept { return next != nullptr; }
  // Links this (unlinked) node right after `pos`.
  void link_after(list_node* pos) noexcept {
    prev = pos;
    next = pos->next;
    pos->next->prev = this;
    pos->next = this;
  }
  void unlink() noexcept {
    if (next) {
      prev->next = next;
      next->prev = prev;
      prev = next = nullptr;
    }
  }
};

class node_list {
 public:
  node_list() noexcept { head_.prev = head_.next = &head_; }
  node_list(const node_list&) = delete;
  node_list& operator=(const node_list&) = delete;
  ~node_list() { clear(); }

  bool empty() const noexcept { return head_.next == &head_; }
  void push_back(list_node* n) noexcept {
    n->prev = head_.prev;
    n->next = &head_;
    head_.prev->next = n;
    head_.prev = n;
  }
  list_node* front() const noexcept { return empty() ? nullptr : head_.next; }
  void push_front(list_node* n) noexcept { n->link_after(&head_); }
  list_node* pop_front() noexcept {
    if (empty()) return nullptr;
    list_node* n = head_.next;
    n->unlink();
    return n;
  }
  // Moves every node of `other` to the end of this list.
  void splice(node_list& other) noexcept {
    if (other.empty()) return;
    list_node* first = other.head_.next;
    list_node* last = other.head_.prev;
    first->prev = head_.prev;
    head_.prev->next = first;
    last->next = &head_;
    head_.prev = last;
    other.head_.prev = other.head_.next = &other.head_;
  }
  void clear() noexcept {
    while (pop_front()) {
    }
  }
  template <class F>
  void for_each(F&& f) const {
    for (list_node* n = head_.next; n != &head_; n = n->next) f(n);
  }

 private:
  list_node head_;
};

}  // namespace quell::detail
