#include "actors/mailbox.h"

#include <caf/all.hpp>

#include <algorithm>

#include "actors/atoms.h"

namespace asteroid::actors {

bool Mailbox::receive(caf::message_handler& handler, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + std::max(wait, std::chrono::milliseconds(0));
  size_t tried = 0;  // kept_[0, tried) did not match
  for (;;) {
    while (tried < kept_.size()) {
      Letter letter = std::move(kept_[tried]);
      kept_.erase(kept_.begin() + static_cast<std::ptrdiff_t>(tried));
      sender_ = letter.sender;
      if (handler(letter.content)) {
        sender_ = nullptr;
        return true;
      }
      sender_ = nullptr;
      kept_.insert(kept_.begin() + static_cast<std::ptrdiff_t>(tried), std::move(letter));
      ++tried;
    }
    if (!await(deadline)) return false;
  }
}

bool ScopedMailbox::await(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    bool got = false, answered = false;
    const auto left = std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    self_->receive(
        [&](status_atom) -> std::string {
          answered = true;
          return status();
        },
        caf::others >> [&](caf::message_view& x) -> caf::result<caf::message> {
          kept_.push_back({x.move_content_to_message(), caf::actor_cast<caf::actor_addr>(self_->current_sender())});
          got = true;
          return caf::message{};
        },
        caf::after(left) >> [] {});
    if (got) return true;
    if (!answered) return false;  // the deadline passed
  }
}

}  // namespace asteroid::actors
