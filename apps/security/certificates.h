// A cluster's certificates, made with OpenSSL's libcrypto (no hand-written
// crypto): `asteroid certs init` creates the cluster's certificate
// authority (ca.pem, ca.key) and the coordinator's certificate; `asteroid
// certs issue --id ID` a device's (ID.pem, ID.key). Keys are EC P-256,
// written 0600; certificates are X.509 v3 signed with SHA-256, the id as
// the common name and as a DNS subject alternative name. The layout is
// what actors/tls.h reads (docs/security.md).
#pragma once

#include <string>

namespace asteroid::apps::security {

struct CertificateInfo {
  std::string subject, issuer;
  std::string sha256_fingerprint;  // hex, colon-separated
  std::string not_after;           // as OpenSSL prints it
  bool authority = false;          // basicConstraints CA:TRUE
};

// Creates DIR (if needed) with a new authority and the "coordinator"'s
// certificate. Throws std::runtime_error naming what failed; refuses to
// overwrite an existing ca.key.
void init_authority(const std::string& dir, int days = 825);
// Issues ID's key and certificate, signed by DIR's authority (replacing an
// earlier pair: re-issue to rotate). Throws std::invalid_argument for an
// id that is empty or not [A-Za-z0-9._-]+.
CertificateInfo issue_certificate(const std::string& dir, const std::string& id, int days = 825);
// Reads a certificate (PEM).
CertificateInfo read_certificate(const std::string& path);

}  // namespace asteroid::apps::security
