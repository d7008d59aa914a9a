// HTTP for the training service, on Boost.Beast: an asynchronous server
// whose handler runs on the io_context's thread (so it may touch the
// service's state without locks, and must not block), and a small
// synchronous client for `asteroid submit|jobs|cancel` and the tests.
//
// The server bounds what a client can make it hold: a request body over
// Limits::max_body gets 413, headers over 8 KiB 431, a connection beyond
// max_connections 503 (and is closed); an idle or slow connection is
// closed after idle_timeout. Errors are JSON: {"error": "..."}.
#pragma once

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace asteroid::apps::service {

struct HttpRequest {
  std::string method;  // GET, POST, DELETE, ...
  std::string target;  // path and query
  std::string body;
  std::string authorization;  // the Authorization header, empty if none
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// {"error": message} with the status.
HttpResponse json_error(int status, const std::string& message, const std::string& field = "");

class HttpServer {
 public:
  struct Limits {
    size_t max_body = 1 << 20;
    size_t max_connections = 64;
    std::chrono::seconds idle_timeout{30};
  };
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Listens on host:port (port 0: one the system picks; port() tells).
  // Throws std::runtime_error naming the address when it cannot listen.
  HttpServer(boost::asio::io_context& io, const std::string& host, uint16_t port, Handler handler, Limits limits);
  ~HttpServer();
  uint16_t port() const;
  // Stops accepting; open connections end with their current exchange.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

struct HttpResult {
  int status = 0;
  std::string body;
};

// One request to `server` ("http://HOST:PORT" or "HOST:PORT"). Throws
// std::runtime_error naming the server when it cannot connect, or no
// answer comes within `timeout`.
// `token`: sent as "Authorization: Bearer TOKEN" when not empty.
HttpResult http_call(const std::string& server, const std::string& method, const std::string& target,
                     const std::string& body = "", std::chrono::milliseconds timeout = std::chrono::seconds(10),
                     const std::string& token = "");

}  // namespace asteroid::apps::service
