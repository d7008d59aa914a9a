#include "apps/service/http.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <optional>
#include <stdexcept>

namespace asteroid::apps::service {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

HttpResponse json_error(int status, const std::string& message, const std::string& field) {
  nlohmann::json body = {{"error", message}};
  if (!field.empty()) body["field"] = field;
  return {status, "application/json", body.dump() + "\n"};
}

namespace {

struct Shared {
  HttpServer::Handler handler;
  HttpServer::Limits limits;
  std::atomic<size_t> connections{0};
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Shared> shared) : stream_(std::move(socket)), shared_(std::move(shared)) {
    ++shared_->connections;
  }
  ~Session() { --shared_->connections; }

  void start() { read(); }

  // Answers at once and closes: the server is at its connection limit.
  void refuse() {
    respond(json_error(503, "too many connections"), 11, /*keep_alive=*/false);
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(shared_->limits.max_body);
    parser_->header_limit(8 * 1024);
    stream_.expires_after(shared_->limits.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset) {
      return close();
    }
    if (ec == http::error::body_limit) {
      return respond(json_error(413, "request body over " + std::to_string(shared_->limits.max_body) + " bytes"), 11,
                     false);
    }
    if (ec == http::error::header_limit) return respond(json_error(431, "request headers over 8 KiB"), 11, false);
    if (ec) return respond(json_error(400, "malformed HTTP request: " + ec.message()), 11, false);
    const auto& req = parser_->get();
    HttpRequest request{std::string(req.method_string()), std::string(req.target()), req.body(),
                        std::string(req[http::field::authorization])};
    HttpResponse response;
    try {
      response = shared_->handler(request);
    } catch (const std::exception& e) {
      response = json_error(500, e.what());
    }
    respond(response, req.version(), req.keep_alive());
  }

  void respond(const HttpResponse& r, unsigned version, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version);
    res->set(http::field::server, "asteroid");
    res->set(http::field::content_type, r.content_type);
    res->set(http::field::cache_control, "no-store");
    res->keep_alive(keep_alive);
    res->body() = r.body;
    res->prepare_payload();
    stream_.expires_after(shared_->limits.idle_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, std::shared_ptr<Shared> s) : acceptor(io), shared(std::move(s)) {}
  tcp::acceptor acceptor;
  std::shared_ptr<Shared> shared;

  void accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      if (!ec) {
        auto session = std::make_shared<Session>(std::move(socket), self->shared);
        if (self->shared->connections > self->shared->limits.max_connections) {
          session->refuse();
        } else {
          session->start();
        }
      }
      self->accept();
    });
  }
};

HttpServer::HttpServer(asio::io_context& io, const std::string& host, uint16_t port, Handler handler, Limits limits) {
  auto shared = std::make_shared<Shared>();
  shared->handler = std::move(handler);
  shared->limits = limits;
  impl_ = std::make_shared<Impl>(io, shared);
  beast::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("cannot listen on '" + host + "': not an IP address");
  const tcp::endpoint endpoint(address, port);
  auto& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  impl_->accept();
}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void HttpServer::stop() {
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
}

HttpResult http_call(const std::string& server, const std::string& method, const std::string& target,
                     const std::string& body, std::chrono::milliseconds timeout, const std::string& token) {
  std::string hostport = server;
  if (hostport.rfind("http://", 0) == 0) hostport = hostport.substr(7);
  while (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw std::runtime_error("server '" + server + "' is not http://HOST:PORT");
  const std::string host = hostport.substr(0, colon), port = hostport.substr(colon + 1);
  asio::io_context io;
  beast::tcp_stream stream(io);
  tcp::resolver resolver(io);
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "asteroid");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  beast::error_code failed;
  bool answered = false;
  // Asynchronous steps so that the deadline covers each of them.
  stream.expires_after(timeout);
  resolver.async_resolve(host, port, [&](beast::error_code ec, tcp::resolver::results_type endpoints) {
    if (ec) return void(failed = ec);
    stream.async_connect(endpoints, [&](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return void(failed = ec);
      http::async_write(stream, req, [&](beast::error_code ec, size_t) {
        if (ec) return void(failed = ec);
        http::async_read(stream, buffer, parser, [&](beast::error_code ec, size_t) {
          if (ec) return void(failed = ec);
          answered = true;
        });
      });
    });
  });
  io.run_for(timeout + std::chrono::milliseconds(100));
  if (failed) throw std::runtime_error("server " + server + ": " + failed.message());
  if (!answered) throw std::runtime_error("server " + server + ": no answer within " + std::to_string(timeout.count()) + " ms");
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return {static_cast<int>(parser.get().result_int()), parser.get().body()};
}

}  // namespace asteroid::apps::service
