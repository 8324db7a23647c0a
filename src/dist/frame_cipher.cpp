#include "dist/frame_cipher.h"

#include <sodium.h>

#include <cstring>

#include "util/error.h"

namespace intellect {

const char* cipher_suite_name(CipherSuite s) {
  switch (s) {
    case CipherSuite::chacha20_poly1305: return "chacha20-poly1305";
    case CipherSuite::aes256_gcm: return "aes-256-gcm";
  }
  return "unknown";
}

bool aes256gcm_available() {
  static const bool available = [] {
    if (sodium_init() < 0) return false;
    return crypto_aead_aes256gcm_is_available() == 1;
  }();
  return available;
}

struct FrameCipher::State {
  AeadKey key{};
  // libsodium requires this state 16-byte aligned; new of an over-aligned
  // type honours alignas.
  alignas(16) crypto_aead_aes256gcm_state aes;
  ~State() { sodium_memzero(this, sizeof *this); }
};

static_assert(crypto_aead_aes256gcm_KEYBYTES == kAeadKeyBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kAeadKeyBytes);
static_assert(crypto_aead_aes256gcm_ABYTES == kAeadTagBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kAeadTagBytes);
static_assert(crypto_aead_aes256gcm_NPUBBYTES == 12 && crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);

FrameCipher::FrameCipher(CipherSuite suite, const AeadKey& key) : suite_(suite), st_(new State) {
  if (sodium_init() < 0) fail("libsodium failed to initialise; cannot encrypt the mesh's links");
  st_->key = key;
  if (suite == CipherSuite::aes256_gcm) {
    if (!aes256gcm_available())
      fail("AES-256-GCM was chosen for a connection but this CPU lacks AES-NI/CLMUL (a bug in the suite negotiation)");
    crypto_aead_aes256gcm_beforenm(&st_->aes, key.data());
  } else if (suite != CipherSuite::chacha20_poly1305) {
    fail("unknown cipher suite ", static_cast<unsigned>(suite));
  }
}

FrameCipher::~FrameCipher() = default;

// The frame's position, little-endian, in the first 8 of the 12 nonce bytes.
static std::array<uint8_t, 12> nonce_of(uint64_t position) {
  std::array<uint8_t, 12> n{};
  for (int i = 0; i < 8; ++i) n[i] = static_cast<uint8_t>(position >> (8 * i));
  return n;
}

void FrameCipher::seal(uint64_t position, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n,
                       uint8_t tag[kAeadTagBytes]) const {
  const auto nonce = nonce_of(position);
  // An empty payload's buffer may be null, which libsodium declares nonnull
  // (UBSan reports it) even when it reads nothing.
  uint8_t nothing = 0;
  if (n == 0) data = &nothing;
  unsigned long long tag_len = 0;
  int rc;
  if (suite_ == CipherSuite::aes256_gcm)
    rc = crypto_aead_aes256gcm_encrypt_detached_afternm(data, tag, &tag_len, data, n, ad, ad_len, nullptr,
                                                        nonce.data(), &st_->aes);
  else
    rc = crypto_aead_chacha20poly1305_ietf_encrypt_detached(data, tag, &tag_len, data, n, ad, ad_len, nullptr,
                                                            nonce.data(), st_->key.data());
  if (rc != 0 || tag_len != kAeadTagBytes) fail("encrypting a frame failed (libsodium returned ", rc, ")");
}

bool FrameCipher::open(uint64_t position, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n,
                       const uint8_t tag[kAeadTagBytes]) const {
  const auto nonce = nonce_of(position);
  uint8_t nothing = 0;
  if (n == 0) data = &nothing;  // as in seal()
  int rc;
  if (suite_ == CipherSuite::aes256_gcm)
    rc = crypto_aead_aes256gcm_decrypt_detached_afternm(data, nullptr, data, n, tag, ad, ad_len, nonce.data(),
                                                        &st_->aes);
  else
    rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(data, nullptr, data, n, tag, ad, ad_len, nonce.data(),
                                                            st_->key.data());
  return rc == 0;
}

}  // namespace intellect
