#include "core/snapshot_signing.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/text_proto.h"

namespace consent::snapshot {
namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;

// The PEM key in `pem` (from `source`, for errors): a private key when
// `is_private`, else a public one; Ed25519 only.
absl::StatusOr<PkeyPtr> ParsePemKey(absl::string_view pem, absl::string_view source,
                                    bool is_private) {
  std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                          &BIO_free);
  PkeyPtr key(is_private ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                         : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr),
              &EVP_PKEY_free);
  if (key == nullptr || EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " holds no Ed25519 ", is_private ? "private key" : "public key",
                     " in PEM format (make one with: openssl genpkey -algorithm ed25519",
                     is_private ? "" : "; then openssl pkey -in KEY -pubout", ")"));
  }
  return key;
}

absl::StatusOr<PkeyPtr> ReadPemKey(const std::string& path, bool is_private) {
  absl::StatusOr<std::string> text = ReadTextFile(path, is_private ? "signing key" : "public key");
  if (!text.ok()) return text.status();
  return ParsePemKey(*text, path, is_private);
}

absl::StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  std::string raw(kPublicKeySize, '\0');
  size_t size = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &size) != 1 ||
      size != kPublicKeySize) {
    return absl::InternalError("cannot read the Ed25519 public key");
  }
  return raw;
}

}  // namespace

struct Sha256::Context {
  MdCtxPtr ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  EVP_DigestInit_ex(context_->ctx.get(), EVP_sha256(), nullptr);
}
Sha256::~Sha256() = default;

void Sha256::Update(absl::string_view bytes) {
  EVP_DigestUpdate(context_->ctx.get(), bytes.data(), bytes.size());
}

std::string Sha256::Finish() {
  std::string digest(kDigestSize, '\0');
  unsigned int size = 0;
  EVP_DigestFinal_ex(context_->ctx.get(), reinterpret_cast<unsigned char*>(digest.data()), &size);
  return digest;
}

struct SigningKey::Key {
  PkeyPtr pkey{nullptr, &EVP_PKEY_free};
};

absl::StatusOr<SigningKey> SigningKey::FromPemFile(const std::string& path) {
  absl::StatusOr<PkeyPtr> pkey = ReadPemKey(path, /*is_private=*/true);
  if (!pkey.ok()) return pkey.status();
  absl::StatusOr<std::string> raw = RawPublicKey(pkey->get());
  if (!raw.ok()) return raw.status();
  SigningKey key;
  key.key_ = std::make_shared<Key>();
  key.key_->pkey = *std::move(pkey);
  key.public_key_ = *std::move(raw);
  return key;
}

absl::StatusOr<std::string> SigningKey::Trailer(absl::string_view digest) const {
  if (digest.size() != kDigestSize) return absl::InvalidArgumentError("digest is not SHA-256");
  MdCtxPtr ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::string signature(kSignatureSize, '\0');
  size_t size = signature.size();
  // Ed25519 signs in one shot, with no digest of its own.
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(digest.data()), digest.size()) != 1 ||
      size != kSignatureSize) {
    return absl::InternalError("Ed25519 signing failed");
  }
  return absl::StrCat(kTrailerMagic, digest, public_key_, signature);
}

absl::StatusOr<std::string> ReadPublicKeyFile(const std::string& path) {
  absl::StatusOr<PkeyPtr> pkey = ReadPemKey(path, /*is_private=*/false);
  if (!pkey.ok()) return pkey.status();
  return RawPublicKey(pkey->get());
}

absl::StatusOr<std::string> ParsePublicKeyPem(absl::string_view pem) {
  absl::StatusOr<PkeyPtr> pkey = ParsePemKey(pem, "the text", /*is_private=*/false);
  if (!pkey.ok()) return pkey.status();
  return RawPublicKey(pkey->get());
}

absl::StatusOr<absl::string_view> VerifySigned(absl::string_view bytes,
                                               absl::string_view public_key) {
  if (bytes.size() < kTrailerSize ||
      bytes.substr(bytes.size() - kTrailerSize, kTrailerMagic.size()) != kTrailerMagic) {
    return absl::InvalidArgumentError("the file has no signature trailer (unsigned or truncated)");
  }
  const absl::string_view body = bytes.substr(0, bytes.size() - kTrailerSize);
  absl::string_view trailer = bytes.substr(body.size() + kTrailerMagic.size());
  const absl::string_view digest = trailer.substr(0, kDigestSize);
  const absl::string_view signer = trailer.substr(kDigestSize, kPublicKeySize);
  const absl::string_view signature = trailer.substr(kDigestSize + kPublicKeySize);
  Sha256 sha;
  sha.Update(body);
  if (sha.Finish() != digest) {
    return absl::InvalidArgumentError(
        "the file's SHA-256 does not match its signed digest: it was changed after signing");
  }
  if (signer != public_key) {
    return absl::InvalidArgumentError(absl::StrCat("signed by another key (public key ",
                                                   Hex(signer), "), not by ", Hex(public_key)));
  }
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                          reinterpret_cast<const unsigned char*>(public_key.data()),
                                          public_key.size()),
              &EVP_PKEY_free);
  MdCtxPtr ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (key == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(digest.data()),
                       digest.size()) != 1) {
    return absl::InvalidArgumentError("the signature does not verify");
  }
  return body;
}

absl::StatusOr<std::string> ReadPseudonymKeyFile(const std::string& path) {
  absl::StatusOr<std::string> key = ReadTextFile(path, "pseudonymization key");
  if (!key.ok()) return key.status();
  if (key->size() < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("pseudonymization key ", path, " has ", key->size(),
                     " bytes; at least 16 (make one with: head -c 32 /dev/urandom > FILE)"));
  }
  return key;
}

std::string Pseudonym(absl::string_view key, absl::string_view user_id) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(user_id.data()), user_id.size(), mac, &size);
  return Hex(absl::string_view(reinterpret_cast<const char*>(mac), size));
}

std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

}  // namespace consent::snapshot
