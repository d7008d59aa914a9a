// What the runtime does about trust today (docs/security.md): a cluster's
// certificates from `asteroid certs` (libcrypto), and the rule that
// nothing listens beyond the loopback unless told --insecure.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "actors/transport.h"
#include "apps/security/certificates.h"
#include "apps/testbed/process.h"
#include "tests/support/temp_dir.h"

namespace asteroid {
namespace {

namespace fs = std::filesystem;
using test_support::TempDir;

X509* load(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return x;
}

// Whether `cert` chains to `ca` (OpenSSL's own verification).
bool verifies(const std::string& ca, const std::string& cert) {
  X509* root = load(ca);
  X509* leaf = load(cert);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, root);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  const bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(leaf);
  X509_free(root);
  return ok;
}

TEST(Certificates, AClusterAuthorityIssuesDeviceCertificatesThatChainToItAndOnlyToIt) {
  TempDir dir("asteroid-certs");
  const std::string ours = dir.file("cluster"), theirs = dir.file("other");
  apps::security::init_authority(ours);
  apps::security::init_authority(theirs);
  const auto nx = apps::security::issue_certificate(ours, "nx-0");
  apps::security::issue_certificate(theirs, "nx-0");

  EXPECT_NE(nx.subject.find("CN=nx-0"), std::string::npos) << nx.subject;
  EXPECT_NE(nx.issuer.find("CN=Asteroid cluster CA"), std::string::npos) << nx.issuer;
  EXPECT_FALSE(nx.authority);
  EXPECT_TRUE(apps::security::read_certificate(ours + "/ca.pem").authority);
  EXPECT_EQ(nx.sha256_fingerprint.size(), 32u * 3 - 1);

  EXPECT_TRUE(verifies(ours + "/ca.pem", ours + "/nx-0.pem"));
  EXPECT_TRUE(verifies(ours + "/ca.pem", ours + "/coordinator.pem")) << "init issues the coordinator's";
  EXPECT_FALSE(verifies(ours + "/ca.pem", theirs + "/nx-0.pem")) << "another cluster's device";

  for (const char* key : {"ca.key", "nx-0.key", "coordinator.key"}) {
    struct stat st {};
    ASSERT_EQ(::stat((ours + "/" + key).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  // Re-issuing rotates: a new key and certificate, still from the authority.
  const auto again = apps::security::issue_certificate(ours, "nx-0");
  EXPECT_NE(again.sha256_fingerprint, nx.sha256_fingerprint);
  EXPECT_TRUE(verifies(ours + "/ca.pem", ours + "/nx-0.pem"));

  EXPECT_THROW(apps::security::init_authority(ours), std::runtime_error) << "one authority per cluster";
  EXPECT_THROW(apps::security::issue_certificate(ours, "../evil"), std::invalid_argument);
  EXPECT_THROW(apps::security::issue_certificate(ours, "ca"), std::invalid_argument);
  EXPECT_THROW(apps::security::issue_certificate(dir.file("none"), "a"), std::runtime_error);
}

TEST(Listening, BeyondTheLoopbackOnlyWhenToldInsecure) {
  EXPECT_NO_THROW(actors::check_plain_listening("node a", "127.0.0.1", false));
  EXPECT_NO_THROW(actors::check_plain_listening("node a", "localhost", false));
  try {
    actors::check_plain_listening("node a", "0.0.0.0", false);
    ADD_FAILURE() << "0.0.0.0 without --insecure";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("node a would listen on 0.0.0.0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(actors::check_plain_listening("node a", "10.0.0.7", true));
}

TEST(Listening, ANodeRefusesAnOpenAddressWithoutTlsOrInsecure) {
  const auto node = testbed::run_command({ASTEROID_BIN, "node", "--host", "0.0.0.0", "--port", "0", "--id", "a"},
                                         testbed::Millis(30000));
  EXPECT_NE(node.status, 0);
  EXPECT_NE(node.err.find("node a would listen on 0.0.0.0"), std::string::npos) << node.err;
  const auto both = testbed::run_command(
      {ASTEROID_BIN, "node", "--host", "0.0.0.0", "--port", "0", "--id", "a", "--insecure", "--tls-dir", "/tmp"},
      testbed::Millis(30000));
  EXPECT_NE(both.status, 0) << "--insecure and --tls-dir exclude each other";
}

}  // namespace
}  // namespace asteroid
