// Signing and verifying snapshots, and the keyed hashes of pseudonymized
// ones (docs/offline.md), on OpenSSL 3.
//
// A signed snapshot is the snapshot's bytes (snapshot_format.h) followed
// by a trailer of kTrailerSize bytes: "CRSIG001", the SHA-256 of every
// byte before the trailer, the signer's Ed25519 public key (32 bytes, raw)
// and the Ed25519 signature of the digest (64 bytes).
#ifndef CONSENT_CORE_SNAPSHOT_SIGNING_H_
#define CONSENT_CORE_SNAPSHOT_SIGNING_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace consent::snapshot {

inline constexpr absl::string_view kTrailerMagic = "CRSIG001";
inline constexpr size_t kDigestSize = 32;
inline constexpr size_t kPublicKeySize = 32;
inline constexpr size_t kSignatureSize = 64;
inline constexpr size_t kTrailerSize =
    kTrailerMagic.size() + kDigestSize + kPublicKeySize + kSignatureSize;

// SHA-256 over bytes given in pieces. Not thread safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view bytes);
  // The 32-byte digest; the object is done.
  std::string Finish();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

// An Ed25519 private key, loaded from a PEM file (`openssl genpkey
// -algorithm ed25519`). Thread safe once loaded.
class SigningKey {
 public:
  // kNotFound when `path` cannot be read; kInvalidArgument, naming it,
  // when it holds no Ed25519 private key.
  static absl::StatusOr<SigningKey> FromPemFile(const std::string& path);
  // The trailer for a file whose bytes before it have SHA-256 `digest`.
  absl::StatusOr<std::string> Trailer(absl::string_view digest) const;
  // The raw 32-byte public key.
  const std::string& public_key() const { return public_key_; }

 private:
  struct Key;
  std::shared_ptr<Key> key_;
  std::string public_key_;
};

// Loads an Ed25519 public key from a PEM file (`openssl pkey -pubout`) and
// returns it raw (32 bytes). kNotFound when `path` cannot be read;
// kInvalidArgument when it holds no Ed25519 public key.
absl::StatusOr<std::string> ReadPublicKeyFile(const std::string& path);
// The same from the PEM text itself.
absl::StatusOr<std::string> ParsePublicKeyPem(absl::string_view pem);

// Checks a signed snapshot's trailer: `bytes` is the whole file. Returns
// the snapshot's bytes (the file without its trailer) when the digest
// matches them and the signature is `public_key`'s; kInvalidArgument
// otherwise, saying which check failed (unsigned or truncated file, digest
// mismatch: the file was changed; signed by another key; bad signature).
absl::StatusOr<absl::string_view> VerifySigned(absl::string_view bytes,
                                               absl::string_view public_key);

// A pseudonymization key: at least 16 bytes, read raw from a file.
// kNotFound when `path` cannot be read; kInvalidArgument when shorter.
absl::StatusOr<std::string> ReadPseudonymKeyFile(const std::string& path);

// The pseudonym of `user_id` under `key`: HMAC-SHA256, 64 lowercase hex
// digits (a valid user id). Thread safe.
std::string Pseudonym(absl::string_view key, absl::string_view user_id);

// Lowercase hex of `bytes`.
std::string Hex(absl::string_view bytes);

}  // namespace consent::snapshot

#endif  // CONSENT_CORE_SNAPSHOT_SIGNING_H_
