#include "actors/tls.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

namespace asteroid::actors {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// What a gateway sends right after the handshake: a magic and a version,
// then the control token (coordinators) or zeros (everyone else).
constexpr std::array<char, 4> kPreambleMagic = {'A', 'S', 'T', '1'};
constexpr size_t kTokenBytes = 32;
constexpr size_t kPreambleBytes = kPreambleMagic.size() + kTokenBytes;
// A peer that has not finished its handshake (and preamble) by then is
// dropped, so silent connections hold nothing for long.
constexpr auto kHandshakeDeadline = std::chrono::seconds(10);
// Handshakes in progress per gateway beyond which new connections are
// closed at once.
constexpr int kMaxPendingHandshakes = 64;
constexpr size_t kPumpBytes = 256 * 1024;
constexpr size_t kMaxPendingBytes = 1024 * 1024;
// Established TLS connections a route keeps ready for CAF at most.
constexpr size_t kMaxSpares = 2;

std::string normalized_fingerprint(std::string text) {
  std::string out;
  for (char c : text) {
    if (c == ':') continue;
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

bool valid_id(const std::string& id) {
  return !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

std::string x509_sha256(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert, EVP_sha256(), md, &n);
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    char hex[4];
    std::snprintf(hex, sizeof hex, i ? ":%02X" : "%02X", md[i]);
    out += hex;
  }
  return out;
}

std::string x509_common_name(X509* cert) {
  char cn[256] = {0};
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : std::string();
}

std::string endpoint_key(const std::string& host, uint16_t port) { return host + ":" + std::to_string(port); }

std::string describe(const error_code& ec) {
  // OpenSSL's reason ("certificate verify failed", "peer did not return a
  // certificate", "wrong version number") is the useful part.
  if (ec.category() == asio::error::get_ssl_category()) {
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason) return reason;
  }
  return ec.message();
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("TLS: cannot read " + what + " " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

std::vector<AllowEntry> parse_allow_list(const std::string& text) {
  std::vector<AllowEntry> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    std::string entry = text.substr(begin, end - begin);
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (!entry.empty()) {
      AllowEntry e;
      const auto eq = entry.find('=');
      e.id = entry.substr(0, eq);
      if (!valid_id(e.id)) throw std::invalid_argument("allow-list entry \"" + entry + "\": the id must be [A-Za-z0-9._-]+");
      if (eq != std::string::npos) {
        e.sha256 = normalized_fingerprint(entry.substr(eq + 1));
        if (e.sha256.size() != 64 ||
            e.sha256.find_first_not_of("0123456789ABCDEF") != std::string::npos) {
          throw std::invalid_argument("allow-list entry \"" + entry +
                                      "\": a fingerprint is 32 bytes of SHA-256 in hex (asteroid certs show)");
        }
      }
      out.push_back(std::move(e));
    }
    begin = end + 1;
  }
  return out;
}

std::string allow_list_refusal(const std::optional<std::vector<AllowEntry>>& allow, const std::string& id,
                               const std::string& sha256) {
  if (!allow) return {};
  bool id_listed = false;
  for (const auto& e : *allow) {
    if (e.id != id) continue;
    id_listed = true;
    if (e.sha256.empty() || e.sha256 == normalized_fingerprint(sha256)) return {};
  }
  if (id_listed) return "the certificate of \"" + id + "\" (SHA-256 " + sha256 + ") is not the one the allow-list names";
  return "\"" + id + "\" is not on the allow-list";
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    throw std::runtime_error("TLS: OpenSSL has no random bytes");
  }
  return out;
}

std::string certificate_sha256(const std::string& pem_path) {
  const std::string pem = read_file(pem_path, "certificate");
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!cert) throw std::runtime_error("TLS: " + pem_path + " holds no PEM certificate");
  std::string out = x509_sha256(cert);
  X509_free(cert);
  return out;
}

class TlsTransport::Impl {
 public:
  explicit Impl(TlsIdentity identity)
      : identity_(std::move(identity)),
        server_context_(ssl::context::tls_server),
        client_context_(ssl::context::tls_client),
        work_(asio::make_work_guard(io_)) {
    namespace fs = std::filesystem;
    const std::string ca = (fs::path(identity_.dir) / "ca.pem").string();
    const std::string cert = (fs::path(identity_.dir) / (identity_.id + ".pem")).string();
    const std::string key = (fs::path(identity_.dir) / (identity_.id + ".key")).string();
    for (auto* context : {&server_context_, &client_context_}) {
      SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
      load(*context, ca, "the cluster's authority", [&](ssl::context& c, error_code& ec) { c.load_verify_file(ca, ec); });
      load(*context, cert, "certificate", [&](ssl::context& c, error_code& ec) { c.use_certificate_chain_file(cert, ec); });
      load(*context, key, "key", [&](ssl::context& c, error_code& ec) { c.use_private_key_file(key, ssl::context::pem, ec); });
      context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
    if (SSL_CTX_check_private_key(server_context_.native_handle()) != 1) {
      throw std::runtime_error("TLS: " + key + " is not the key of " + cert);
    }
    token_ = random_bytes(kTokenBytes);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Impl() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  template <class Load>
  static void load(ssl::context& context, const std::string& path, const std::string& what, Load&& how) {
    if (!std::filesystem::exists(path)) throw std::runtime_error("TLS: no " + what + " at " + path + " (asteroid certs)");
    error_code ec;
    how(context, ec);
    if (ec) throw std::runtime_error("TLS: cannot load " + what + " " + path + ": " + describe(ec));
  }

  uint16_t serve(const std::string& host, uint16_t port, uint16_t local_port) {
    error_code ec;
    auto address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) throw std::runtime_error("TLS gateway: " + host + " is not an address");
    auto acceptor = std::make_shared<Acceptor>(io_);
    tcp::endpoint endpoint(address, port);
    acceptor->socket.open(endpoint.protocol(), ec);
    if (!ec) acceptor->socket.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->socket.bind(endpoint, ec);
    if (!ec) acceptor->socket.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("TLS gateway: cannot listen on " + endpoint_key(host, port) + ": " + ec.message());
    const uint16_t bound = acceptor->socket.local_endpoint().port();
    acceptor->forward_port = local_port;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gateways_[bound] = acceptor;
    }
    asio::post(io_, [this, acceptor] { accept_peer(acceptor); });
    return bound;
  }

  void stop_serving(uint16_t port) {
    std::shared_ptr<Acceptor> acceptor;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = gateways_.find(port);
      if (it == gateways_.end()) return;
      acceptor = it->second;
      gateways_.erase(it);
    }
    asio::post(io_, [acceptor] {
      error_code ignored;
      acceptor->socket.close(ignored);
    });
  }

  TlsTransport::Route route(const std::string& host, uint16_t port, const std::string& expected_id) {
    const std::string key = endpoint_key(host, port);
    std::shared_ptr<Acceptor> acceptor;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& slot = routes_[key];
      if (!slot) {
        slot = std::make_shared<Acceptor>(io_);
        tcp::endpoint local(asio::ip::address_v4::loopback(), 0);
        slot->socket.open(local.protocol());
        slot->socket.bind(local);
        slot->socket.listen();
        slot->port = slot->socket.local_endpoint().port();
        slot->remote_host = host;
        slot->remote_port = port;
        slot->expected_id = expected_id;
        asio::post(io_, [this, a = slot] { accept_local(a); });
      }
      acceptor = slot;
    }
    auto done = std::make_shared<std::promise<void>>();
    TlsTransport::Route out{acceptor->port, done->get_future().share()};
    asio::post(io_, [this, acceptor, done] { add_spare(acceptor, [done] { done->set_value(); }); });
    return out;
  }

  std::string last_failure(const std::string& host, uint16_t port) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = failures_.find(endpoint_key(host, port));
    return it == failures_.end() ? std::string() : it->second;
  }

  void remember_node(const std::string& node, const std::string& host, uint16_t port) {
    std::lock_guard<std::mutex> lock(mutex_);
    nodes_[node] = endpoint_key(host, port);
  }

  std::string authorization_for(const std::string& node) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return {};
    auto token = tokens_.find(it->second);
    return token == tokens_.end() ? std::string() : token->second;
  }

  TlsCounters counters() const { return {accepted_.load(), refused_.load()}; }
  const std::string& token() const { return token_; }

 private:
  struct Session;
  struct Acceptor {
    explicit Acceptor(asio::io_context& io) : socket(io) {}
    tcp::acceptor socket;
    uint16_t port = 0;                         // route: the loopback port CAF connects to
    uint16_t forward_port = 0;                 // gateway: CAF's loopback port
    std::string remote_host;                   // route: where to
    uint16_t remote_port = 0;
    std::string expected_id;
    int pending = 0;                           // gateway: handshakes in progress
    // Route: connections to the remote, established and holding the first
    // bytes of its CAF (the server handshake), that CAF's next connects
    // take (TlsTransport::route says why).
    std::deque<std::shared_ptr<Session>> spares;
  };

  // One direction of a session: what was read and not yet written. It
  // buffers until it is attached (a route's spare before CAF connects) and
  // stops reading while kMaxPendingBytes wait.
  struct Pipe {
    std::vector<char> chunk = std::vector<char>(kPumpBytes);
    std::string pending, writing;
    bool attached = true, reading = false, write_busy = false;
    bool ended = false;  // its source ended: the session closes once `pending` is written
  };

  // One forwarded connection: the TLS side and the plain side, piped both
  // ways until either ends.
  struct Session {
    Session(asio::io_context& io, ssl::context& context) : tls(io, context), plain(io), deadline(io) {}
    ssl::stream<tcp::socket> tls;
    tcp::socket plain;
    asio::steady_timer deadline;
    std::string peer;        // address, for logs
    std::string peer_id;     // from its certificate
    std::string refusal;     // the verify callback's reason
    std::array<char, kPreambleBytes> preamble{};
    Pipe up, down;           // plain -> TLS, TLS -> plain
    bool closed = false;
    std::function<void()> on_ready;  // a route's spare: the remote sent its first bytes

    void close() {
      if (closed) return;
      closed = true;
      error_code ignored;
      deadline.cancel(ignored);
      tls.lowest_layer().close(ignored);
      plain.close(ignored);
      if (on_ready) std::exchange(on_ready, nullptr)();
    }
  };

  // Checks the peer's certificate: the chain (OpenSSL, `preverified`), then
  // at the peer's own certificate the allow-list and the expected id.
  void verify_with(const std::shared_ptr<Session>& session, const std::string& expected_id) {
    std::weak_ptr<Session> weak = session;
    session->tls.set_verify_callback([this, weak, expected_id](bool preverified, ssl::verify_context& context) {
      auto s = weak.lock();
      if (!s) return false;
      X509_STORE_CTX* store = context.native_handle();
      X509* cert = X509_STORE_CTX_get_current_cert(store);
      if (!preverified) {
        const int error = X509_STORE_CTX_get_error(store);
        s->refusal = "its certificate" + (cert ? " (" + x509_common_name(cert) + ")" : std::string()) +
                     " is not from this cluster's authority: " + X509_verify_cert_error_string(error);
        return false;
      }
      if (X509_STORE_CTX_get_error_depth(store) > 0) return true;
      s->peer_id = x509_common_name(cert);
      if (!expected_id.empty() && s->peer_id != expected_id) {
        s->refusal = "it is \"" + s->peer_id + "\", not \"" + expected_id + "\" as expected there";
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);  // the peer sees "certificate unknown"
        return false;
      }
      s->refusal = allow_list_refusal(identity_.allow, s->peer_id, x509_sha256(cert));
      if (!s->refusal.empty()) X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
      return s->refusal.empty();
    });
  }

  void arm_deadline(const std::shared_ptr<Session>& session) {
    session->deadline.expires_after(kHandshakeDeadline);
    session->deadline.async_wait([session](const error_code& ec) {
      if (ec) return;
      if (session->refusal.empty()) session->refusal = "no handshake within " + std::to_string(kHandshakeDeadline.count()) + " s";
      session->close();
    });
  }

  // `what`: "a connection from" (gateway) or "the connection to" (route).
  // A TLS alert from the peer means the peer refused this process.
  void refuse(const std::shared_ptr<Session>& session, const std::string& what, const error_code& ec) {
    ++refused_;
    const std::string reason = session->refusal.empty() ? describe(ec) : session->refusal;
    if (session->refusal.empty() && reason.find("alert") != std::string::npos) {
      spdlog::warn("{} (TLS): the peer at {} ended the handshake ({}): it does not accept this certificate", identity_.id,
                   session->peer, reason);
    } else {
      spdlog::warn("{} (TLS): refused {} {}: {}", identity_.id, what, session->peer, reason);
    }
    session->close();
  }

  // After a failed accept (out of descriptors, say), the next one waits a
  // little instead of failing in a loop.
  template <class Next>
  void accept_again(const error_code& ec, Next next) {
    if (!ec) return next();
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    timer->async_wait([timer, next](const error_code&) { next(); });
    spdlog::warn("{} (TLS): accept failed: {}", identity_.id, ec.message());
  }

  // Gateway side.
  void accept_peer(std::shared_ptr<Acceptor> acceptor) {
    auto session = std::make_shared<Session>(io_, server_context_);
    acceptor->socket.async_accept(session->tls.lowest_layer(), [this, acceptor, session](const error_code& ec) {
      if (ec == asio::error::operation_aborted || !acceptor->socket.is_open()) return;
      if (!ec) handshake_peer(acceptor, session);
      accept_again(ec, [this, acceptor] { accept_peer(acceptor); });
    });
  }

  void handshake_peer(const std::shared_ptr<Acceptor>& acceptor, const std::shared_ptr<Session>& session) {
    error_code ignored;
    const auto remote = session->tls.lowest_layer().remote_endpoint(ignored);
    session->peer = endpoint_key(remote.address().to_string(), remote.port());
    if (acceptor->pending >= kMaxPendingHandshakes) {
      session->refusal = "too many handshakes in progress";
      refuse(session, "a connection from", {});
      return;
    }
    ++acceptor->pending;
    session->tls.lowest_layer().set_option(tcp::no_delay(true), ignored);
    verify_with(session, "");
    arm_deadline(session);
    session->tls.async_handshake(ssl::stream_base::server, [this, acceptor, session](const error_code& ec) {
      --acceptor->pending;
      if ((ec == asio::error::eof || ec == ssl::error::stream_truncated) && session->refusal.empty()) {
        // Closed before a handshake began: a port probe (the test bed's
        // readiness check, the service's node check), not an attempt.
        spdlog::debug("{} (TLS): {} connected and closed", identity_.id, session->peer);
        return session->close();
      }
      if (ec || session->closed) return refuse(session, "a connection from", ec);
      std::copy(kPreambleMagic.begin(), kPreambleMagic.end(), session->preamble.begin());
      if (session->peer_id == kCoordinatorId) {
        std::copy(token_.begin(), token_.end(), session->preamble.begin() + kPreambleMagic.size());
      }
      asio::async_write(session->tls, asio::buffer(session->preamble), [this, acceptor, session](const error_code& ec, size_t) {
        if (ec) return session->close();
        tcp::endpoint local(asio::ip::address_v4::loopback(), acceptor->forward_port);
        session->plain.async_connect(local, [this, session](const error_code& ec) {
          if (ec) {
            spdlog::warn("{}: cannot forward {} to its local port: {}", identity_.id, session->peer, ec.message());
            return session->close();
          }
          error_code ignored;
          session->plain.set_option(tcp::no_delay(true), ignored);
          start_pumps(session);
        });
      });
    });
  }

  // Route side. CAF 0.17.6 drops a connection it opened when no message
  // came on it by its next heartbeat tick (its last-seen time starts at 0),
  // which a TLS handshake and a forward to the remote CAF easily outlast. So
  // a route dials ahead: a spare is a TLS connection whose remote CAF has
  // already sent its server handshake, and a CAF connect that takes one
  // gets that handshake at once.
  // A route is ready for CAF when a spare is: one already there makes it
  // ready at once (CAF mostly reuses its connection to the peer and takes
  // none: waiting for a new handshake each time cost every redeploy about
  // 0.1 s on the emulated Nanos), and the spares are topped up beside.
  void add_spare(const std::shared_ptr<Acceptor>& acceptor, std::function<void()> ready) {
    auto& spares = acceptor->spares;
    spares.erase(std::remove_if(spares.begin(), spares.end(), [](const auto& s) { return s->closed; }), spares.end());
    if (!spares.empty()) std::exchange(ready, nullptr)();
    if (spares.size() >= kMaxSpares) return;
    auto session = std::make_shared<Session>(io_, client_context_);
    session->down.attached = false;
    session->on_ready = std::move(ready);
    dial(acceptor, session, [this, acceptor, session] {
      if (session->closed) return;
      acceptor->spares.push_back(session);
      read_into(session, session->tls, session->plain, session->down);
    });
  }

  void accept_local(std::shared_ptr<Acceptor> acceptor) {
    auto socket = std::make_shared<tcp::socket>(io_);
    acceptor->socket.async_accept(*socket, [this, acceptor, socket](const error_code& ec) {
      if (ec == asio::error::operation_aborted || !acceptor->socket.is_open()) return;
      if (!ec) {
        error_code ignored;
        socket->set_option(tcp::no_delay(true), ignored);  // Nagle would hold small messages for the peer's ACK
        attach_local(acceptor, std::move(*socket));
      }
      accept_again(ec, [this, acceptor] { accept_local(acceptor); });
    });
  }

  // CAF connected: the oldest ready spare takes it; without one, a new
  // connection is dialled for it (and CAF may drop it, see above).
  void attach_local(const std::shared_ptr<Acceptor>& acceptor, tcp::socket plain) {
    auto& spares = acceptor->spares;
    // A spare still waiting for the remote's first bytes is taken as well:
    // they are on their way.
    while (!spares.empty() && spares.front()->closed) spares.pop_front();
    std::shared_ptr<Session> session;
    if (!spares.empty()) {
      session = spares.front();
      spares.pop_front();
    }
    if (session) {
      session->plain = std::move(plain);
      attach(session);
      return;
    }
    session = std::make_shared<Session>(io_, client_context_);
    session->plain = std::move(plain);
    dial(acceptor, session, [this, session] {
      read_into(session, session->tls, session->plain, session->down);
      attach(session);
    });
  }

  void attach(const std::shared_ptr<Session>& session) {
    ++accepted_;
    if (session->on_ready) std::exchange(session->on_ready, nullptr)();
    session->down.attached = true;
    flush(session, session->tls, session->plain, session->down);
    read_into(session, session->plain, session->tls, session->up);
  }

  // Connects, handshakes and reads the gateway's preamble, then `then`.
  void dial(const std::shared_ptr<Acceptor>& acceptor, const std::shared_ptr<Session>& session,
            std::function<void()> then) {
    session->peer = (acceptor->expected_id.empty() ? std::string() : acceptor->expected_id + " at ") +
                    endpoint_key(acceptor->remote_host, acceptor->remote_port);
    const std::string key = endpoint_key(acceptor->remote_host, acceptor->remote_port);
    auto resolver = std::make_shared<tcp::resolver>(io_);
    arm_deadline(session);
    verify_with(session, acceptor->expected_id);
    auto fail = [this, session, key](const error_code& ec) {
      const std::string reason = session->refusal.empty() ? describe(ec) : session->refusal;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        failures_[key] = reason;
      }
      if (!session->refusal.empty()) refuse(session, "the connection to", ec);
      session->close();
    };
    resolver->async_resolve(
        acceptor->remote_host, std::to_string(acceptor->remote_port),
        [this, session, resolver, key, fail, then](const error_code& ec, tcp::resolver::results_type results) {
          if (ec || session->closed) return fail(ec);
          asio::async_connect(session->tls.lowest_layer(), results, [this, session, key, fail, then](const error_code& ec, const tcp::endpoint&) {
            if (ec || session->closed) return fail(ec);
            error_code ignored;
            session->tls.lowest_layer().set_option(tcp::no_delay(true), ignored);
            session->tls.async_handshake(ssl::stream_base::client, [this, session, key, fail, then](const error_code& ec) {
              if (ec || session->closed) return fail(ec);
              asio::async_read(session->tls, asio::buffer(session->preamble), [this, session, key, fail, then](const error_code& ec, size_t) {
                if (ec || session->closed) return fail(ec);
                if (!std::equal(kPreambleMagic.begin(), kPreambleMagic.end(), session->preamble.begin())) {
                  session->refusal = "it does not speak Asteroid's TLS preamble";
                  return fail(ec);
                }
                const std::string token(session->preamble.begin() + kPreambleMagic.size(), session->preamble.end());
                {
                  std::lock_guard<std::mutex> lock(mutex_);
                  if (token != std::string(kTokenBytes, '\0')) tokens_[key] = token;
                  failures_.erase(key);
                }
                error_code ignored;
                session->deadline.cancel(ignored);
                then();
              });
            });
          });
        });
  }

  // Reads `from` into `pipe` and writes it on to `to`, until either ends.
  template <class From, class To>
  void read_into(std::shared_ptr<Session> session, From& from, To& to, Pipe& pipe) {
    pipe.reading = true;
    from.async_read_some(asio::buffer(pipe.chunk), [this, session, &from, &to, &pipe](const error_code& ec, size_t n) {
      pipe.reading = false;
      if (session->closed) return;
      if (ec) {
        // The source ended: what was read still goes on (the last message
        // before a peer closes), then the whole session closes.
        pipe.ended = true;
        if (pipe.write_busy || (pipe.attached && !pipe.pending.empty())) return flush(session, from, to, pipe);
        return session->close();
      }
      pipe.pending.append(pipe.chunk.data(), n);
      if (session->on_ready && !pipe.attached) std::exchange(session->on_ready, nullptr)();
      flush(session, from, to, pipe);
      if (pipe.pending.size() < kMaxPendingBytes) read_into(session, from, to, pipe);
    });
  }

  template <class From, class To>
  void flush(std::shared_ptr<Session> session, From& from, To& to, Pipe& pipe) {
    if (!pipe.attached || pipe.write_busy || pipe.pending.empty() || session->closed) return;
    pipe.write_busy = true;
    pipe.writing.swap(pipe.pending);
    asio::async_write(to, asio::buffer(pipe.writing), [this, session, &from, &to, &pipe](const error_code& ec, size_t) {
      pipe.write_busy = false;
      pipe.writing.clear();
      if (ec || session->closed || (pipe.ended && pipe.pending.empty())) return session->close();
      if (!pipe.reading && !pipe.ended) read_into(session, from, to, pipe);  // it stopped while too much was pending
      flush(session, from, to, pipe);
    });
  }

  void start_pumps(const std::shared_ptr<Session>& session) {
    error_code ignored;
    session->deadline.cancel(ignored);
    ++accepted_;
    read_into(session, session->tls, session->plain, session->down);
    read_into(session, session->plain, session->tls, session->up);
  }

  TlsIdentity identity_;
  asio::io_context io_;
  ssl::context server_context_, client_context_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::string token_;
  mutable std::mutex mutex_;
  std::map<uint16_t, std::shared_ptr<Acceptor>> gateways_;
  std::map<std::string, std::shared_ptr<Acceptor>> routes_;
  std::map<std::string, std::string> tokens_, failures_;  // by endpoint
  std::map<std::string, std::string> nodes_;              // node -> endpoint
  std::atomic<uint64_t> accepted_{0}, refused_{0};
  std::thread thread_;
};

TlsTransport::TlsTransport(TlsIdentity identity) : impl_(std::make_unique<Impl>(std::move(identity))) {}
TlsTransport::~TlsTransport() = default;
uint16_t TlsTransport::serve(const std::string& host, uint16_t port, uint16_t local_port) {
  return impl_->serve(host, port, local_port);
}
void TlsTransport::stop_serving(uint16_t port) { impl_->stop_serving(port); }
const std::string& TlsTransport::control_token() const { return impl_->token(); }
TlsTransport::Route TlsTransport::route(const std::string& host, uint16_t port, const std::string& expected_id) {
  return impl_->route(host, port, expected_id);
}
std::string TlsTransport::last_failure(const std::string& host, uint16_t port) const {
  return impl_->last_failure(host, port);
}
void TlsTransport::remember_node(const std::string& node, const std::string& host, uint16_t port) {
  impl_->remember_node(node, host, port);
}
std::string TlsTransport::authorization_for(const std::string& node) const { return impl_->authorization_for(node); }
TlsCounters TlsTransport::counters() const { return impl_->counters(); }

}  // namespace asteroid::actors
