#include "actors/transport.h"

#include "actors/atoms.h"
#include "actors/system_config.h"
#include "actors/tls.h"

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>

namespace asteroid::actors {

bool is_loopback(const std::string& host) {
  return host.rfind("127.", 0) == 0 || host == "::1" || host == "localhost";
}

void check_plain_listening(const std::string& what, const std::string& host, bool insecure) {
  if (is_loopback(host)) return;
  if (!insecure) {
    throw std::invalid_argument(what + " would listen on " + host +
                                " without encryption or authentication: anyone who reaches it could use it "
                                "(docs/security.md); listen on 127.0.0.1, or say --insecure on a network you trust");
  }
  spdlog::warn("{} listens on {} without encryption or authentication (--insecure): anyone who reaches it can use it",
               what, host);
}

caf::io::middleman_actor connection_manager(caf::actor_system& system) { return system.middleman().actor_handle(); }

TlsTransport* tls_of(caf::actor_system& system) {
  const auto* config = dynamic_cast<const AsteroidConfig*>(&system.config());
  return config ? config->tls().get() : nullptr;
}

Endpoint caf_endpoint(caf::actor_system& system, const std::string& host, uint16_t port, const std::string& device_id) {
  TlsTransport* tls = tls_of(system);
  if (!tls) return {host, port, {}};
  auto route = tls->route(host, port, device_id);
  return {"127.0.0.1", route.port, route.ready};
}

void wait_ready(const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline) {
  if (endpoint.ready.valid()) endpoint.ready.wait_until(deadline);
}

void wait_ready(Mailbox& self, const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline) {
  if (!endpoint.ready.valid()) return;
  caf::message_handler nothing;  // every message stays for later waits
  while (endpoint.ready.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
         std::chrono::steady_clock::now() < deadline) {
    self.receive(nothing, std::chrono::milliseconds(2));
  }
}

bool retry_connect(const caf::error& error) { return error == caf::sec::connection_timeout; }

void remember_node(caf::actor_system& system, const caf::node_id& node, const std::string& host, uint16_t port) {
  if (TlsTransport* tls = tls_of(system)) tls->remember_node(caf::to_string(node), host, port);
}

std::string authorization_for(caf::actor_system& system, const caf::node_id& node) {
  TlsTransport* tls = tls_of(system);
  return tls ? tls->authorization_for(caf::to_string(node)) : std::string();
}

messages::WireMessage wire_for(caf::actor_system& system, const caf::actor& to, const messages::Message& message) {
  return messages::to_wire(message, to ? authorization_for(system, to.node()) : std::string());
}

std::string connect_failure(caf::actor_system& system, const std::string& host, uint16_t port,
                            const std::string& caf_error) {
  TlsTransport* tls = tls_of(system);
  const std::string refusal = tls ? tls->last_failure(host, port) : std::string();
  return refusal.empty() ? caf_error : "TLS: " + refusal + " (" + caf_error + ")";
}

Published publish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port, const std::string& host) {
  Published out;
  auto published = system.middleman().publish(handle, port, host.c_str(), true);
  if (published) {
    out.port = *published;
  } else {
    out.error = system.render(published.error());
  }
  return out;
}

void unpublish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port) {
  system.middleman().unpublish(handle, port);
}

namespace {

std::atomic<uint64_t> next_ticket{1};

// What a helper does with the connection manager's answer: hands it over.
using Answer = std::function<void(caf::expected<caf::message>)>;
// Makes one request of the connection manager from `helper`, then answers.
using ManagerRequest = std::function<void(caf::event_based_actor* helper, const Answer& answer)>;

// Runs `request` in a helper actor and waits in `self` for what it answers
// (its request has a deadline, so it always answers).
caf::expected<caf::message> ask_manager(Mailbox& self, ManagerRequest request) {
  const uint64_t ticket = next_ticket++;
  const caf::actor asker = self.handle();
  self.system().spawn([asker, ticket, request](caf::event_based_actor* helper) -> caf::behavior {
    request(helper, [helper, asker, ticket](caf::expected<caf::message> answer) {
      if (answer) {
        helper->send(asker, manager_reply_atom::value, ticket, std::move(*answer));
      } else {
        helper->send(asker, manager_reply_atom::value, ticket, answer.error());
      }
      helper->quit();
    });
    return {[](manager_reply_atom) {}};  // the answer comes from the request
  });
  std::optional<caf::expected<caf::message>> out;
  caf::message_handler handler{
      [&](manager_reply_atom, uint64_t of, caf::message& answer) {
        if (of == ticket) out = std::move(answer);
      },
      [&](manager_reply_atom, uint64_t of, caf::error& e) {
        if (of == ticket) out = caf::expected<caf::message>(std::move(e));
      }};
  while (!out) self.receive(handler, std::chrono::hours(24));
  return std::move(*out);
}

}  // namespace

caf::expected<NodeHandle> connect_to(Mailbox& self, const Endpoint& to, std::chrono::milliseconds timeout) {
  auto answer = ask_manager(self, [host = to.host, port = to.port, timeout](caf::event_based_actor* helper,
                                                                             const Answer& answer) {
    helper->request(connection_manager(helper->home_system()), timeout, caf::connect_atom::value, host, port)
        .then([answer](caf::node_id& id, caf::strong_actor_ptr& ptr,
                       const std::set<std::string>&) { answer(caf::make_message(id, ptr)); },
              [answer](caf::error& e) { answer(std::move(e)); });
  });
  if (!answer) return std::move(answer.error());
  NodeHandle out;
  out.id = answer->get_as<caf::node_id>(0);
  out.actor = caf::actor_cast<caf::actor>(answer->get_as<caf::strong_actor_ptr>(1));
  return out;
}

Spawned remote_spawn_actor(Mailbox& self, const caf::node_id& node, const std::string& type,
                           std::chrono::milliseconds timeout) {
  auto& system = self.system();
  auto answer = ask_manager(self, [node, type, timeout, authorization = authorization_for(system, node)](
                                      caf::event_based_actor* helper, const Answer& answer) {
    helper->request(connection_manager(helper->home_system()), timeout, caf::spawn_atom::value, node, type,
                    caf::make_message(authorization), std::set<std::string>{})
        .then([answer](caf::strong_actor_ptr& ptr) { answer(caf::make_message(ptr)); },
              [answer](caf::error& e) { answer(std::move(e)); });
  });
  Spawned out;
  if (!answer) {
    out.error = system.render(answer.error());
  } else {
    out.actor = caf::actor_cast<caf::actor>(answer->get_as<caf::strong_actor_ptr>(0));
    if (!out.actor) out.error = "the node spawned nothing";
  }
  return out;
}

}  // namespace asteroid::actors
