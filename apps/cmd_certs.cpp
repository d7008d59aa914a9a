// `asteroid certs init|issue|show`: a cluster's certificate authority and
// its devices' certificates (apps/security/certificates.h,
// docs/security.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "apps/security/certificates.h"

namespace asteroid::apps {
namespace {

void print(const std::string& path, const security::CertificateInfo& c) {
  std::printf("%s\n  subject:  %s\n  issuer:   %s\n  expires:  %s\n  sha256:   %s\n", path.c_str(), c.subject.c_str(),
              c.issuer.c_str(), c.not_after.c_str(), c.sha256_fingerprint.c_str());
}

}  // namespace

void add_certs_command(CLI::App& app) {
  struct Cli {
    std::string dir, id;
    int days = 825;
  };
  auto c = std::make_shared<Cli>();
  CLI::App* cmd = app.add_subcommand(
      "certs", "a cluster's certificate authority and device certificates for mutual TLS (docs/security.md)");
  cmd->require_subcommand(1);
  CLI::App* init = cmd->add_subcommand("init", "create the cluster's authority (ca.pem, ca.key) and the coordinator's certificate");
  init->add_option("--dir", c->dir, "the cluster's TLS directory")->required();
  init->add_option("--days", c->days, "validity")->capture_default_str()->check(CLI::Range(1, 36500));
  init->callback([c] {
    security::init_authority(c->dir, c->days);
    print(c->dir + "/ca.pem", security::read_certificate(c->dir + "/ca.pem"));
    print(c->dir + "/coordinator.pem", security::read_certificate(c->dir + "/coordinator.pem"));
  });
  CLI::App* issue = cmd->add_subcommand("issue", "issue (or re-issue) a device's key and certificate, its id as the name");
  issue->add_option("--dir", c->dir, "the cluster's TLS directory")->required();
  issue->add_option("--id", c->id, "the device id")->required();
  issue->add_option("--days", c->days, "validity")->capture_default_str()->check(CLI::Range(1, 36500));
  issue->callback([c] { print(c->dir + "/" + c->id + ".pem", security::issue_certificate(c->dir, c->id, c->days)); });
  CLI::App* show = cmd->add_subcommand("show", "print a certificate's subject, issuer, expiry and SHA-256 fingerprint");
  show->add_option("--dir", c->dir, "the cluster's TLS directory")->required();
  show->add_option("--id", c->id, "the device id (ca for the authority)")->required();
  show->callback([c] { print(c->dir + "/" + c->id + ".pem", security::read_certificate(c->dir + "/" + c->id + ".pem")); });
}

}  // namespace asteroid::apps
