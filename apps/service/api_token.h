// The bearer token of a service that listens beyond the loopback
// (docs/security.md): made once in its state directory, 0600, and checked
// on every request but /healthz and the dashboard's page.
#pragma once

#include <string>

namespace asteroid::apps::service {

constexpr const char* kTokenFile = "api-token";

// STATE/api-token's token, made (64 hex digits from /dev/urandom) when the
// file does not exist yet. Throws std::runtime_error naming the file when
// it cannot be read or written, or holds no token.
std::string api_token(const std::string& state_dir);
// Reads a token file (a client's --token-file): its first line.
std::string read_token_file(const std::string& path);
// Whether an Authorization header is "Bearer TOKEN" (compared in constant
// time).
bool bearer_matches(const std::string& authorization, const std::string& token);

}  // namespace asteroid::apps::service
