#include "apps/testbed/relay.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace asteroid::testbed {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;

// ---- LinkShaper ------------------------------------------------------------------

LinkShaper::LinkShaper(double mbps, double latency_ms)
    : mbps_(mbps),
      latency_(std::chrono::nanoseconds(static_cast<long long>(latency_ms * 1e6))),
      ns_per_byte_(8e3 / mbps) {
  if (!(mbps > 0)) throw std::invalid_argument("LinkShaper: bandwidth must be > 0");
  if (latency_ms < 0) throw std::invalid_argument("LinkShaper: latency must be >= 0");
}

LinkShaper::Clock::time_point LinkShaper::reserve(std::size_t bytes, Clock::time_point now) {
  // An idle link starts sending at once; a busy one after what is queued.
  if (next_free_ < now) next_free_ = now;
  next_free_ += std::chrono::nanoseconds(static_cast<long long>(bytes * ns_per_byte_));
  return next_free_ + latency_;
}

// ---- ShapingRelay ---------------------------------------------------------------

namespace {

struct Shared {
  RelayRoute route;
  LinkShaper to_node, from_node;  // the device's ingress and egress
  bool cut = false;
  std::size_t chunk, max_queue;
  Shared(const RelayRoute& r)
      : route(r), to_node(r.bandwidth_mbps, r.latency_ms), from_node(r.bandwidth_mbps, r.latency_ms) {
    double bytes_per_s = r.bandwidth_mbps * 1e6 / 8;
    // About 1 ms of data per read; a queue of the link's bandwidth-delay
    // product plus 10 ms (the link's buffer), never below 64 KiB.
    chunk = static_cast<std::size_t>(std::clamp(bytes_per_s / 1000, 4096.0, 65536.0));
    max_queue = static_cast<std::size_t>(std::max(65536.0, bytes_per_s * (r.latency_ms / 1e3 + 0.010)));
  }
};

class Connection;

// One direction of a connection: read, stamp with the delivery time, queue,
// write at that time.
class Pump {
 public:
  Pump(Connection& c, tcp::socket& from, tcp::socket& to, LinkShaper& shaper, Shared& sh)
      : conn_(c), from_(from), to_(to), shaper_(shaper), sh_(sh), timer_(from.get_executor()), buf_(sh.chunk) {}
  void start_read();
  void start_write();
  bool done() const { return shut_; }
  void cancel() { timer_.cancel(); }

 private:
  struct Chunk {
    LinkShaper::Clock::time_point deliver;
    std::vector<char> data;
  };
  Connection& conn_;
  tcp::socket& from_;
  tcp::socket& to_;
  LinkShaper& shaper_;
  Shared& sh_;
  asio::steady_timer timer_;
  std::vector<char> buf_;
  std::deque<Chunk> queue_;
  std::size_t queued_ = 0;
  bool reading_ = false, writing_ = false, eof_ = false, shut_ = false;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::io_context& io, std::shared_ptr<Shared> sh)
      : sh_(std::move(sh)),
        client(io),
        node(io),
        up(*this, client, node, sh_->to_node, *sh_),
        down(*this, node, client, sh_->from_node, *sh_) {}
  void start(std::vector<std::weak_ptr<Connection>>& registry) {
    registry.push_back(shared_from_this());
    auto self = shared_from_this();
    tcp::endpoint target(asio::ip::make_address(sh_->route.target_host), sh_->route.target_port);
    node.async_connect(target, [self](const boost::system::error_code& ec) {
      if (ec) return self->close();
      boost::system::error_code ignore;
      self->client.set_option(tcp::no_delay(true), ignore);
      self->node.set_option(tcp::no_delay(true), ignore);
      self->up.start_read();
      self->down.start_read();
    });
  }
  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignore;
    up.cancel();
    down.cancel();
    client.close(ignore);
    node.close(ignore);
  }
  void maybe_finish() {
    if (up.done() && down.done()) close();
  }
  bool closed() const { return closed_; }
  std::shared_ptr<Shared> sh_;
  tcp::socket client, node;
  Pump up, down;

 private:
  bool closed_ = false;
};

void Pump::start_read() {
  if (reading_ || eof_ || conn_.closed() || queued_ >= sh_.max_queue) return;
  reading_ = true;
  auto self = conn_.shared_from_this();
  from_.async_read_some(asio::buffer(buf_), [this, self](const boost::system::error_code& ec, std::size_t n) {
    reading_ = false;
    if (conn_.closed()) return;
    if (ec) {
      if (ec != asio::error::eof) return conn_.close();
      eof_ = true;
    } else {
      auto deliver = shaper_.reserve(n, LinkShaper::Clock::now());
      queue_.push_back({deliver, std::vector<char>(buf_.begin(), buf_.begin() + static_cast<long>(n))});
      queued_ += n;
    }
    start_write();
    start_read();
  });
}

void Pump::start_write() {
  if (writing_ || conn_.closed()) return;
  auto self = conn_.shared_from_this();
  if (queue_.empty()) {
    if (eof_ && !shut_) {
      shut_ = true;
      boost::system::error_code ignore;
      to_.shutdown(tcp::socket::shutdown_send, ignore);
      conn_.maybe_finish();
    }
    return;
  }
  writing_ = true;
  // While the link is cut, look again every 20 ms.
  if (sh_.cut)
    timer_.expires_after(std::chrono::milliseconds(20));
  else
    timer_.expires_at(queue_.front().deliver);
  timer_.async_wait([this, self](const boost::system::error_code& ec) {
    if (ec || conn_.closed()) return;
    if (sh_.cut) {
      writing_ = false;
      return start_write();
    }
    asio::async_write(to_, asio::buffer(queue_.front().data),
                      [this, self](const boost::system::error_code& ec2, std::size_t) {
                        writing_ = false;
                        if (ec2 || conn_.closed()) return conn_.close();
                        queued_ -= queue_.front().data.size();
                        queue_.pop_front();
                        start_write();
                        start_read();
                      });
  });
}

}  // namespace

struct ShapingRelay::Impl : std::enable_shared_from_this<ShapingRelay::Impl> {
  asio::io_context& io;
  std::shared_ptr<Shared> sh;
  tcp::acceptor acceptor;
  std::vector<std::weak_ptr<Connection>> conns;
  // Heartbeat datagrams (UDP, same port number): forwarded at once, never
  // behind the link's FIFO, like their class of their own under netns-tc;
  // dropped while the link is cut. One socket towards the node per client,
  // so each reply goes back to whoever asked.
  udp::socket datagrams;
  std::map<udp::endpoint, std::shared_ptr<udp::socket>> upstream;
  std::array<char, 2048> datagram{};
  udp::endpoint datagram_from;
  Impl(asio::io_context& i, const RelayRoute& r)
      : io(i), sh(std::make_shared<Shared>(r)), acceptor(i), datagrams(i) {}

  void receive_datagrams() {
    auto self = shared_from_this();
    datagrams.async_receive_from(asio::buffer(datagram), datagram_from,
                                 [self](const boost::system::error_code& ec, std::size_t n) {
                                   if (!self->datagrams.is_open()) return;  // stopped
                                   if (!ec && !self->sh->cut) self->forward_to_node(n);
                                   self->receive_datagrams();
                                 });
  }

  void forward_to_node(std::size_t n) {
    auto found = upstream.find(datagram_from);
    if (found == upstream.end()) {
      if (upstream.size() >= 64) {  // a bound on clients; the heartbeat monitor is one
        boost::system::error_code ignore;
        for (auto& [client, socket] : upstream) socket->close(ignore);
        upstream.clear();
      }
      udp::endpoint node(asio::ip::make_address(sh->route.target_host), sh->route.target_port);
      auto socket = std::make_shared<udp::socket>(io);
      boost::system::error_code ec;
      socket->open(node.protocol(), ec);
      if (!ec) socket->connect(node, ec);
      if (ec) return;
      found = upstream.emplace(datagram_from, socket).first;
      receive_replies(socket, datagram_from, std::make_shared<std::array<char, 2048>>());
    }
    boost::system::error_code ignore;
    found->second->send(asio::buffer(datagram.data(), n), 0, ignore);
  }

  void receive_replies(std::shared_ptr<udp::socket> socket, udp::endpoint client,
                       std::shared_ptr<std::array<char, 2048>> buffer) {
    auto self = shared_from_this();
    socket->async_receive(asio::buffer(*buffer), [self, socket, client, buffer](const boost::system::error_code& ec,
                                                                                  std::size_t n) {
      if (!socket->is_open() || !self->datagrams.is_open()) return;
      // An error here is an ICMP report of an earlier send (the node not
      // listening yet): keep listening.
      boost::system::error_code ignore;
      if (!ec && !self->sh->cut) self->datagrams.send_to(asio::buffer(buffer->data(), n), client, 0, ignore);
      self->receive_replies(socket, client, buffer);
    });
  }

  void accept() {
    auto self = shared_from_this();
    auto c = std::make_shared<Connection>(io, sh);
    acceptor.async_accept(c->client, [self, c](const boost::system::error_code& ec) {
      if (ec) return;  // acceptor closed
      // Forget connections that ended.
      self->conns.erase(std::remove_if(self->conns.begin(), self->conns.end(),
                                       [](const std::weak_ptr<Connection>& w) { return w.expired(); }),
                        self->conns.end());
      c->start(self->conns);
      self->accept();
    });
  }
};

ShapingRelay::ShapingRelay(asio::io_context& io, const RelayRoute& r) : impl_(std::make_shared<Impl>(io, r)) {
  try {
    tcp::endpoint ep(asio::ip::make_address(r.listen_host), r.listen_port);
    impl_->acceptor.open(ep.protocol());
    impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    impl_->acceptor.bind(ep);
    impl_->acceptor.listen();
  } catch (const std::exception& e) {
    throw std::runtime_error("relay for " + r.id + ": cannot listen on " + r.listen_host + ":" +
                             std::to_string(r.listen_port) + ": " + e.what());
  }
  try {
    udp::endpoint ep(asio::ip::make_address(r.listen_host), port());
    impl_->datagrams.open(ep.protocol());
    impl_->datagrams.bind(ep);
  } catch (const std::exception& e) {
    throw std::runtime_error("relay for " + r.id + ": cannot receive heartbeats on UDP " + r.listen_host + ":" +
                             std::to_string(port()) + ": " + e.what());
  }
}

ShapingRelay::~ShapingRelay() { stop(); }

uint16_t ShapingRelay::port() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void ShapingRelay::start() {
  impl_->accept();
  impl_->receive_datagrams();
}

void ShapingRelay::stop() {
  boost::system::error_code ignore;
  impl_->acceptor.close(ignore);
  impl_->datagrams.close(ignore);
  for (auto& [client, socket] : impl_->upstream) socket->close(ignore);
  impl_->upstream.clear();
  for (auto& w : impl_->conns)
    if (auto c = w.lock()) c->close();
  impl_->conns.clear();
}

void ShapingRelay::set_cut(bool cut) { impl_->sh->cut = cut; }

const RelayRoute& ShapingRelay::route() const { return impl_->sh->route; }

// ---- the relay process ----------------------------------------------------------

int run_relay_daemon(const std::string& config_path) {
  nlohmann::json cfg;
  try {
    std::ifstream in(config_path);
    if (!in) throw std::runtime_error("cannot open");
    in >> cfg;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relay: %s: %s\n", config_path.c_str(), e.what());
    return 2;
  }
  asio::io_context io;
  std::vector<std::unique_ptr<ShapingRelay>> relays;
  try {
    for (const auto& r : cfg.at("routes")) {
      RelayRoute route;
      route.id = r.at("id").get<std::string>();
      route.listen_host = r.value("listen_host", std::string("127.0.0.1"));
      route.listen_port = r.at("listen_port").get<uint16_t>();
      route.target_host = r.value("target_host", std::string("127.0.0.1"));
      route.target_port = r.at("target_port").get<uint16_t>();
      route.bandwidth_mbps = r.at("bandwidth_mbps").get<double>();
      route.latency_ms = r.value("latency_ms", 0.0);
      route.cut_file = r.value("cut_file", std::string());
      relays.push_back(std::make_unique<ShapingRelay>(io, route));
      relays.back()->start();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relay: %s: %s\n", config_path.c_str(), e.what());
    return 2;
  }
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code&, int) {
    for (auto& r : relays) r->stop();
    io.stop();
  });
  asio::steady_timer poll(io);
  std::function<void()> watch = [&] {
    for (auto& r : relays) {
      struct stat sb;
      const auto& f = r->route().cut_file;
      r->set_cut(!f.empty() && ::stat(f.c_str(), &sb) == 0);
    }
    poll.expires_after(std::chrono::milliseconds(20));
    poll.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) watch();
    });
  };
  watch();
  std::printf("ready\n");
  std::fflush(stdout);
  io.run();
  return 0;
}

}  // namespace asteroid::testbed
