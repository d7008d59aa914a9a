#include "apps/security/certificates.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

namespace asteroid::apps::security {
namespace fs = std::filesystem;

namespace {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using File = std::unique_ptr<FILE, int (*)(FILE*)>;

void fail_if(bool failed, const std::string& what) {
  if (failed) throw std::runtime_error("certificates: " + what + " failed");
}

Key new_key() {
  Key key(EVP_EC_gen("P-256"));
  fail_if(!key, "generating an EC P-256 key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  fail_if(!ext, std::string("extension ") + OBJ_nid2sn(nid));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `cn` with `key`, signed by (issuer, issuer_key), or
// self-signed when issuer is null.
Cert make_certificate(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, bool authority,
                      int days) {
  Cert cert(X509_new());
  fail_if(!cert, "X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  fail_if(RAND_bytes(serial, sizeof serial) != 1, "random serial");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Asteroid cluster"), -1,
                             -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : cert.get();
  add_extension(cert.get(), signer, NID_basic_constraints, authority ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_extension(cert.get(), signer, NID_key_usage,
                authority ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyAgreement");
  add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (!authority) {
    add_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth");
    add_extension(cert.get(), signer, NID_subject_alt_name, ("DNS:" + cn).c_str());
    add_extension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  }
  fail_if(X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0, "signing the certificate of " + cn);
  return cert;
}

File open_file(const fs::path& path, bool secret) {
  if (secret) {
    // Created 0600 before anything is written into it.
    const mode_t old = ::umask(077);
    File f(std::fopen(path.c_str(), "w"), &std::fclose);
    ::umask(old);
    fail_if(!f, "writing " + path.string());
    return f;
  }
  File f(std::fopen(path.c_str(), "w"), &std::fclose);
  fail_if(!f, "writing " + path.string());
  return f;
}

void write_pair(const fs::path& dir, const std::string& name, EVP_PKEY* key, X509* cert) {
  {
    File f = open_file(dir / (name + ".key"), true);
    fail_if(PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1, "writing the key of " + name);
  }
  File f = open_file(dir / (name + ".pem"), false);
  fail_if(PEM_write_X509(f.get(), cert) != 1, "writing the certificate of " + name);
}

template <class T>
T read_pem(const fs::path& path, T (*reader)(FILE*, T*, pem_password_cb*, void*), const char* what) {
  File f(std::fopen(path.c_str(), "r"), &std::fclose);
  if (!f) throw std::runtime_error("certificates: cannot read " + std::string(what) + " " + path.string());
  T value = reader(f.get(), nullptr, nullptr, nullptr);
  if (!value) throw std::runtime_error("certificates: " + path.string() + " is not a PEM " + what);
  return value;
}

std::string name_text(X509_NAME* name) {
  char buf[512];
  X509_NAME_oneline(name, buf, sizeof buf);
  return buf;
}

void check_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (!ok || id == "ca") throw std::invalid_argument("certificates: a device id is 1-64 of [A-Za-z0-9._-] and not 'ca', got '" + id + "'");
}

CertificateInfo info_of(X509* cert) {
  CertificateInfo info;
  info.subject = name_text(X509_get_subject_name(cert));
  info.issuer = name_text(X509_get_issuer_name(cert));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert, EVP_sha256(), md, &n);
  for (unsigned int i = 0; i < n; ++i) {
    char hex[4];
    std::snprintf(hex, sizeof hex, i ? ":%02X" : "%02X", md[i]);
    info.sha256_fingerprint += hex;
  }
  BIO* bio = BIO_new(BIO_s_mem());
  ASN1_TIME_print(bio, X509_get0_notAfter(cert));
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  info.not_after.assign(data, static_cast<size_t>(len));
  BIO_free(bio);
  info.authority = X509_check_ca(cert) > 0;
  return info;
}

}  // namespace

void init_authority(const std::string& dir, int days) {
  const fs::path d(dir);
  fs::create_directories(d);
  if (fs::exists(d / "ca.key"))
    throw std::runtime_error("certificates: " + (d / "ca.key").string() + " exists: a cluster has one authority "
                             "(remove the directory to start a new cluster)");
  Key key = new_key();
  Cert cert = make_certificate("Asteroid cluster CA", key.get(), nullptr, nullptr, true, days);
  write_pair(d, "ca", key.get(), cert.get());
  issue_certificate(dir, "coordinator", days);
}

CertificateInfo issue_certificate(const std::string& dir, const std::string& id, int days) {
  check_id(id);
  const fs::path d(dir);
  Cert ca(read_pem<X509*>(d / "ca.pem", PEM_read_X509, "certificate"));
  Key ca_key(read_pem<EVP_PKEY*>(d / "ca.key", PEM_read_PrivateKey, "private key"));
  Key key = new_key();
  Cert cert = make_certificate(id, key.get(), ca.get(), ca_key.get(), false, days);
  write_pair(d, id, key.get(), cert.get());
  return info_of(cert.get());
}

CertificateInfo read_certificate(const std::string& path) {
  Cert cert(read_pem<X509*>(path, PEM_read_X509, "certificate"));
  return info_of(cert.get());
}

}  // namespace asteroid::apps::security
