#include "actors/connect.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <set>

#include "actors/atoms.h"

namespace asteroid::actors {

std::optional<NodeHandle> connect_node(caf::actor_system& system, caf::scoped_actor& self, const std::string& host,
                                       uint16_t port, std::chrono::milliseconds timeout, std::string& failure) {
  NodeHandle node;
  failure.clear();
  self->request(system.middleman().actor_handle(), timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id& id, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            node.id = id;
            node.actor = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!node.actor) failure = "nothing is published there";
          },
          [&](caf::error& e) { failure = system.render(e); });
  if (!failure.empty()) return std::nullopt;
  return node;
}

namespace {

caf::behavior reaching(caf::event_based_actor* self, std::string host, uint16_t port, std::chrono::milliseconds timeout,
                       messages::WireMessage first, caf::actor asker, std::string tag) {
  auto fail = [=](const std::string& why) {
    self->send(asker, reached_atom::value, tag, why);
    self->quit();
  };
  auto render = [self](const caf::error& e) { return self->home_system().render(e); };
  self->request(self->home_system().middleman().actor_handle(), timeout, caf::connect_atom::value, host, port)
      .then(
          [=](const caf::node_id& id, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            auto node = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!node) return fail("nothing is published there");
            self->request(node, timeout, first)
                .then(
                    [=](messages::WireMessage& reply) {
                      self->send(asker, reached_atom::value, tag, id, node, std::move(reply));
                      self->quit();
                    },
                    [=](caf::error& e) { fail(render(e)); });
          },
          [=](caf::error& e) { fail(render(e)); });
  return {[](reached_atom) {}};  // answers come from the requests above
}

}  // namespace

void reach_node(caf::actor_system& system, const std::string& host, uint16_t port, std::chrono::milliseconds timeout,
                const messages::WireMessage& first, const caf::actor& asker, const std::string& tag) {
  system.spawn(reaching, host, port, timeout, first, asker, tag);
}

}  // namespace asteroid::actors
