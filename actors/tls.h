// Mutual TLS between Asteroid processes, in front of CAF: Boost.Asio's SSL
// streams (OpenSSL underneath), because CAF 0.17.6's own OpenSSL module
// lost remote spawns and could not show the peer's certificate
// (docs/security.md).
//
// A node's CAF listens on the loopback only; its public port is a gateway
// that accepts a peer only after a mutual TLS handshake whose certificate
// chains to the cluster's authority and names an id on the allow-list, and
// then forwards the decrypted stream to CAF. A process that connects out
// (the coordinator, a node reaching its pipeline peers) gets, per remote
// endpoint, a loopback port of its own: CAF connects there, and each such
// connection becomes a TLS connection to the endpoint, whose certificate
// must name the device expected there. Every refusal is logged with the
// peer's address and the reason, and counted.
//
// Control: a gateway gives a peer whose certificate is the coordinator's
// ("coordinator", made by `asteroid certs init`) the node's control token,
// 32 random bytes made at the node's start, in the first bytes after the
// handshake; other peers get zeros. The coordinator's process then puts it
// in the authorization of every envelope it sends that node and in its
// remote spawns (actors/transport.h); the node refuses control messages and
// spawns without it (actors/node.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asteroid::actors {

// The certificate id of coordinators: the one that gets control tokens.
inline const std::string kCoordinatorId = "coordinator";

// One allowed identity: an id and, optionally, the SHA-256 fingerprint its
// certificate must have (hex, colons optional, any case).
struct AllowEntry {
  std::string id;
  std::string sha256;  // empty: any certificate of the authority for this id
};

// "ID[=SHA256],ID..." (the --allow flag's and cluster.json's syntax).
// Throws std::invalid_argument naming a bad entry.
std::vector<AllowEntry> parse_allow_list(const std::string& text);

// Why `id` with `sha256` (as certificate_sha256 prints it) may not connect,
// or empty when the list allows it; nullopt list: everyone the authority
// certified.
std::string allow_list_refusal(const std::optional<std::vector<AllowEntry>>& allow, const std::string& id,
                               const std::string& sha256);

// What a process presents and whom it trusts: DIR/ca.pem, DIR/ID.pem and
// DIR/ID.key (`asteroid certs`).
struct TlsIdentity {
  std::string dir;
  std::string id;
  std::optional<std::vector<AllowEntry>> allow;  // nullopt: everyone the authority certified
};

struct TlsCounters {
  uint64_t accepted = 0;  // connections through a gateway or route
  uint64_t refused = 0;   // handshakes refused or failed
};

class TlsTransport {
 public:
  // Loads the identity's files and starts the I/O thread. Throws
  // std::runtime_error naming a file that is missing or does not load.
  explicit TlsTransport(TlsIdentity identity);
  ~TlsTransport();
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  // Gateway: accepts TLS on host:port (0: any free port) and forwards each
  // accepted peer to 127.0.0.1:local_port. The bound port; throws
  // std::runtime_error when it cannot listen.
  uint16_t serve(const std::string& host, uint16_t port, uint16_t local_port);
  void stop_serving(uint16_t port);
  // This process's control token (what its gateway gives coordinators).
  const std::string& control_token() const;

  // Route: the loopback port where a plain connection becomes a TLS
  // connection to host:port, where `expected_id` must answer (empty: any
  // allowed id); the same port for the same endpoint. Each call dials one
  // connection ahead for the next plain one (CAF 0.17.6 drops a connection
  // whose peer does not speak at once): `ready` is set when it is
  // established, or failed.
  struct Route {
    uint16_t port = 0;
    std::shared_future<void> ready;
  };
  Route route(const std::string& host, uint16_t port, const std::string& expected_id);
  // Why the last connection to host:port failed (empty: it did not).
  std::string last_failure(const std::string& host, uint16_t port) const;
  // Remembers that host:port is the process `node` (a key of the caller's
  // choosing), so that authorization_for(node) is the control token its
  // gateway gave this process (empty: none, or not connected yet).
  void remember_node(const std::string& node, const std::string& host, uint16_t port);
  std::string authorization_for(const std::string& node) const;

  TlsCounters counters() const;  // both sides, since the start

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// `n` random bytes from OpenSSL's generator (keys and tokens). Throws
// std::runtime_error when it has none.
std::string random_bytes(size_t n);

// The SHA-256 fingerprint of a PEM certificate file, as `asteroid certs
// show` prints it.
std::string certificate_sha256(const std::string& pem_path);

}  // namespace asteroid::actors
