#include "actors/heartbeat_datagram.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "messages/codec.h"

namespace asteroid::actors {
namespace {

using messages::now_us;

std::string errno_text() { return std::strerror(errno); }

// Marks a socket's datagrams EF. A socket that refuses still works, unmarked.
void mark_expedited(int fd, int family) {
  const int tos = kHeartbeatTos;
  const int rc = family == AF_INET6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos)
                                    : ::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
  if (rc != 0) spdlog::debug("heartbeats: cannot mark a socket DSCP EF: {}", errno_text());
}

int make_wake() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw std::runtime_error("heartbeats: eventfd: " + errno_text());
  return fd;
}

void wake(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Waits until one of `fds` is readable; false once `wake_fd` is (stop).
bool wait_readable(std::vector<pollfd>& fds, int wake_fd) {
  for (auto& p : fds) p.revents = 0;
  while (::poll(fds.data(), fds.size(), -1) < 0) {
    if (errno != EINTR) return false;
  }
  for (const auto& p : fds) {
    if (p.fd == wake_fd && p.revents != 0) return false;
  }
  return true;
}

}  // namespace

std::optional<messages::Heartbeat> read_heartbeat(const void* data, size_t size, std::string* why, std::string* mac) {
  auto fail = [&](std::string reason) -> std::optional<messages::Heartbeat> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (size > kMaxHeartbeatBytes) {
    return fail("datagram of " + std::to_string(size) + " bytes exceeds the heartbeat limit of " +
                std::to_string(kMaxHeartbeatBytes));
  }
  messages::DecodeLimits limits;
  limits.max_message_bytes = kMaxHeartbeatBytes;
  limits.max_text_bytes = 256;
  limits.max_list_length = kMaxUnreachableListed;
  messages::Decoded decoded = messages::decode_copy(data, size, limits);
  if (!decoded.ok()) return fail(decoded.error);
  if (mac) *mac = decoded.authorization;
  if (auto* heartbeat = std::get_if<messages::Heartbeat>(&*decoded.message)) return std::move(*heartbeat);
  return fail(std::string("a ") + messages::kind_name(*decoded.message) + " message, not a heartbeat");
}

std::string heartbeat_mac(const std::string& key, const messages::Heartbeat& heartbeat) {
  std::string data = heartbeat.node_id;
  data.push_back('\0');
  for (int i = 0; i < 8; ++i) data.push_back(static_cast<char>((heartbeat.sequence >> (8 * i)) & 0xff));
  for (const auto& peer : heartbeat.unreachable) {
    data += peer;
    data.push_back('\0');
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac, &length);
  return std::string(reinterpret_cast<const char*>(mac), length);
}

bool heartbeat_mac_matches(const std::string& key, const messages::Heartbeat& heartbeat, const std::string& mac) {
  const std::string expected = heartbeat_mac(key, heartbeat);
  return mac.size() == expected.size() && CRYPTO_memcmp(mac.data(), expected.data(), mac.size()) == 0;
}

std::optional<std::vector<char>> answer_heartbeat(const void* data, size_t size, const std::string& node_id,
                                                  std::string* why, std::vector<std::string> unreachable,
                                                  const std::vector<std::string>& keys) {
  std::string mac;
  auto heartbeat = read_heartbeat(data, size, why, &mac);
  if (!heartbeat) return std::nullopt;
  std::string key;  // the one the request's MAC was made with
  if (!mac.empty()) {
    for (const auto& k : keys)
      if (!k.empty() && heartbeat_mac_matches(k, *heartbeat, mac)) key = k;
    if (key.empty()) {
      if (why) *why = "a heartbeat with a MAC under no key of this node";
      return std::nullopt;
    }
  }
  const bool signed_request = !key.empty();
  if (unreachable.size() > kMaxUnreachableListed) unreachable.resize(kMaxUnreachableListed);
  messages::Heartbeat reply{node_id, heartbeat->sequence, now_us(), std::move(unreachable)};
  auto encode = [&] { return messages::encode(reply, signed_request ? heartbeat_mac(key, reply) : std::string()); };
  auto bytes = encode();
  while (bytes.size() > kMaxHeartbeatBytes && !reply.unreachable.empty()) {  // the monitor would drop it
    reply.unreachable.pop_back();
    bytes = encode();
  }
  return bytes;
}

std::optional<DatagramEndpoint> resolve_datagram_endpoint(const std::string& host, uint16_t port, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0 || !found) {
    if (why) *why = "cannot resolve " + host + ": " + (rc != 0 ? ::gai_strerror(rc) : "no address");
    return std::nullopt;
  }
  DatagramEndpoint endpoint;
  std::memcpy(&endpoint.address, found->ai_addr, found->ai_addrlen);
  endpoint.length = found->ai_addrlen;
  endpoint.text = host + ":" + service;
  ::freeaddrinfo(found);
  return endpoint;
}

// ---- HeartbeatResponder -------------------------------------------------------------

HeartbeatResponder::HeartbeatResponder(const std::string& host, uint16_t port, std::string node_id,
                                       std::function<std::vector<std::string>()> unreachable_peers,
                                       std::function<std::vector<std::string>()> keys)
    : node_id_(std::move(node_id)), unreachable_peers_(std::move(unreachable_peers)), keys_(std::move(keys)) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0 || !found) {
    throw std::runtime_error("cannot listen for heartbeats on UDP " + where + ": " +
                             (rc != 0 ? ::gai_strerror(rc) : "no address"));
  }
  socket_ = ::socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (socket_ < 0 || ::bind(socket_, found->ai_addr, found->ai_addrlen) != 0) {
    const std::string reason = errno_text();
    ::freeaddrinfo(found);
    close_fd(socket_);
    throw std::runtime_error("cannot listen for heartbeats on UDP " + where + ": " + reason);
  }
  mark_expedited(socket_, found->ai_family);
  ::freeaddrinfo(found);
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(socket_, reinterpret_cast<sockaddr*>(&bound), &length);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  try {
    wake_ = make_wake();
  } catch (...) {
    close_fd(socket_);
    throw;
  }
  thread_ = std::thread([this] { run(); });
}

HeartbeatResponder::~HeartbeatResponder() {
  wake(wake_);
  if (thread_.joinable()) thread_.join();
  close_fd(socket_);
  close_fd(wake_);
}

void HeartbeatResponder::run() {
  std::vector<pollfd> fds{{socket_, POLLIN, 0}, {wake_, POLLIN, 0}};
  std::vector<char> buffer(kMaxHeartbeatBytes);
  while (wait_readable(fds, wake_)) {
    for (;;) {  // everything queued, then wait again
      sockaddr_storage from{};
      socklen_t length = sizeof from;
      // MSG_TRUNC: the datagram's real length, so an oversized one is seen as such.
      const ssize_t n = ::recvfrom(socket_, buffer.data(), buffer.size(), MSG_TRUNC,
                                   reinterpret_cast<sockaddr*>(&from), &length);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
          spdlog::debug("node {}: heartbeat socket: {}", node_id_, errno_text());
        break;
      }
      std::string why;
      auto reply = answer_heartbeat(buffer.data(), static_cast<size_t>(n), node_id_, &why,
                                    unreachable_peers_ ? unreachable_peers_() : std::vector<std::string>{},
                                    keys_ ? keys_() : std::vector<std::string>{});
      if (!reply) {
        ++dropped_;
        spdlog::debug("node {}: dropped a heartbeat datagram of {} bytes: {}", node_id_, n, why);
        continue;
      }
      if (::sendto(socket_, reply->data(), reply->size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from),
                   length) < 0) {
        spdlog::debug("node {}: cannot answer a heartbeat: {}", node_id_, errno_text());
        continue;
      }
      ++answered_;
    }
  }
}

// ---- HeartbeatPinger ----------------------------------------------------------------

HeartbeatPinger::HeartbeatPinger(OnReply on_reply) : on_reply_(std::move(on_reply)) {
  // Bound at once (to any port), so replies have somewhere to arrive from the start.
  v4_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in any4{};
  any4.sin_family = AF_INET;
  if (v4_ < 0 || ::bind(v4_, reinterpret_cast<sockaddr*>(&any4), sizeof any4) != 0) {
    const std::string reason = errno_text();
    close_fd(v4_);
    throw std::runtime_error("heartbeats: cannot open a UDP socket: " + reason);
  }
  mark_expedited(v4_, AF_INET);
  v6_ = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (v6_ >= 0) {
    const int only = 1;
    ::setsockopt(v6_, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    if (::bind(v6_, reinterpret_cast<sockaddr*>(&any6), sizeof any6) != 0) close_fd(v6_);  // no IPv6 here
  }
  if (v6_ >= 0) mark_expedited(v6_, AF_INET6);
  try {
    wake_ = make_wake();
  } catch (...) {
    close_fd(v4_);
    close_fd(v6_);
    throw;
  }
  thread_ = std::thread([this] { run(); });
}

HeartbeatPinger::~HeartbeatPinger() {
  wake(wake_);
  if (thread_.joinable()) thread_.join();
  close_fd(v4_);
  close_fd(v6_);
  close_fd(wake_);
}

bool HeartbeatPinger::send(const DatagramEndpoint& to, const messages::Heartbeat& heartbeat, std::string* why,
                           const std::string& key) {
  const int fd = to.address.ss_family == AF_INET6 ? v6_ : v4_;
  if (fd < 0) {
    if (why) *why = "no IPv6 socket for " + to.text;
    return false;
  }
  const std::vector<char> bytes = messages::encode(heartbeat, key.empty() ? std::string() : heartbeat_mac(key, heartbeat));
  if (::sendto(fd, bytes.data(), bytes.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&to.address),
               to.length) < 0) {
    if (why) *why = "cannot send a heartbeat to " + to.text + ": " + errno_text();
    return false;
  }
  return true;
}

void HeartbeatPinger::run() {
  std::vector<pollfd> fds{{v4_, POLLIN, 0}, {wake_, POLLIN, 0}};
  if (v6_ >= 0) fds.push_back({v6_, POLLIN, 0});
  std::vector<char> buffer(kMaxHeartbeatBytes);
  while (wait_readable(fds, wake_)) {
    for (const auto& p : fds) {
      if (p.fd == wake_ || p.revents == 0) continue;
      for (;;) {
        const ssize_t n = ::recv(p.fd, buffer.data(), buffer.size(), MSG_TRUNC);
        if (n < 0) {
          // ECONNREFUSED & co.: an ICMP error of an earlier send (a node
          // not listening), reported once; silence is for the deadline.
          if (errno == EINTR || errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) continue;
          break;
        }
        const auto received = Clock::now();
        std::string why;
        std::string mac;
        auto reply = read_heartbeat(buffer.data(), static_cast<size_t>(n), &why, &mac);
        if (!reply) {
          spdlog::debug("heartbeat monitor: dropped a reply datagram of {} bytes: {}", n, why);
          continue;
        }
        on_reply_(*reply, mac, received);
      }
    }
  }
}

}  // namespace asteroid::actors
