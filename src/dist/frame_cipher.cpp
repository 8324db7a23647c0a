#include "dist/frame_cipher.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#include "util/error.h"

namespace intellect {

const char* cipher_suite_name(CipherSuite s) {
  switch (s) {
    case CipherSuite::chacha20_poly1305: return "chacha20-poly1305";
    case CipherSuite::aes256_gcm: return "aes-256-gcm";
  }
  return "unknown";
}

const char* aead_library_name(AeadLibrary l) {
  switch (l) {
    case AeadLibrary::openssl: return "openssl";
    case AeadLibrary::libsodium: return "libsodium";
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

namespace {

// OpenSSL's implementation of a suite, fetched once per process (an
// implicit fetch on every context would take a global lock each time).
const EVP_CIPHER* openssl_cipher(CipherSuite s) {
  static const EVP_CIPHER* aes = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  static const EVP_CIPHER* chacha = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  const EVP_CIPHER* c = s == CipherSuite::aes256_gcm ? aes : chacha;
  if (!c) fail("OpenSSL has no ", cipher_suite_name(s), " (libcrypto without its default provider?); cannot seal frames");
  return c;
}

// Contexts keyed for one direction of one cipher, lent to one call at a
// time. EVP_CIPHER_CTX_free wipes a context's key schedule.
class ContextPool {
 public:
  ContextPool(CipherSuite suite, bool encrypt) : suite_(suite), encrypt_(encrypt) {}
  ~ContextPool() {
    for (EVP_CIPHER_CTX* c : free_) EVP_CIPHER_CTX_free(c);
  }
  EVP_CIPHER_CTX* take(const AeadKey& key) {
    {
      std::lock_guard lk(mu_);
      if (!free_.empty()) {
        EVP_CIPHER_CTX* c = free_.back();
        free_.pop_back();
        return c;
      }
    }
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    // Both suites' default nonce is the 12 bytes nonce_of() gives.
    if (!c || EVP_CipherInit_ex(c, openssl_cipher(suite_), nullptr, key.data(), nullptr, encrypt_ ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_get_iv_length(c) != 12) {
      EVP_CIPHER_CTX_free(c);
      fail("OpenSSL could not set up ", cipher_suite_name(suite_), " for ", encrypt_ ? "sealing" : "opening",
           " frames");
    }
    return c;
  }
  void give_back(EVP_CIPHER_CTX* c) {
    std::lock_guard lk(mu_);
    free_.push_back(c);
  }

 private:
  const CipherSuite suite_;
  const bool encrypt_;
  std::mutex mu_;
  std::vector<EVP_CIPHER_CTX*> free_;
};

// One borrowed context, given back at scope exit.
struct Borrowed {
  ContextPool& pool;
  EVP_CIPHER_CTX* ctx;
  Borrowed(ContextPool& p, const AeadKey& key) : pool(p), ctx(p.take(key)) {}
  ~Borrowed() { pool.give_back(ctx); }
};

// The frame's position, little-endian, in the first 8 of the 12 nonce bytes.
std::array<uint8_t, 12> nonce_of(uint64_t position) {
  std::array<uint8_t, 12> n{};
  for (int i = 0; i < 8; ++i) n[i] = static_cast<uint8_t>(position >> (8 * i));
  return n;
}

// EVP's lengths are ints: a frame's payload goes through in pieces of at
// most 1 GiB (frames are smaller; this keeps the arithmetic honest).
constexpr size_t kEvpPiece = size_t{1} << 30;

// Feeds the additional data, then data[0, n) in place; false on an EVP error.
bool evp_update(EVP_CIPHER_CTX* c, bool encrypt, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n) {
  auto update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  int out = 0;
  if (ad_len > 0 && (ad_len > INT_MAX || update(c, nullptr, &out, ad, static_cast<int>(ad_len)) != 1)) return false;
  for (size_t done = 0; done < n;) {
    const size_t k = std::min(kEvpPiece, n - done);
    if (update(c, data + done, &out, data + done, static_cast<int>(k)) != 1 || out != static_cast<int>(k)) return false;
    done += k;
  }
  return true;
}

}  // namespace

struct FrameCipher::State {
  AeadKey key{};
  // libsodium requires this state 16-byte aligned; new of an over-aligned
  // type honours alignas.
  alignas(16) crypto_aead_aes256gcm_state aes;
  std::unique_ptr<ContextPool> seal_pool, open_pool;  // OpenSSL only
  ~State() {
    seal_pool.reset();
    open_pool.reset();
    sodium_memzero(key.data(), key.size());
    sodium_memzero(&aes, sizeof aes);
  }
};

static_assert(crypto_aead_aes256gcm_KEYBYTES == kAeadKeyBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kAeadKeyBytes);
static_assert(crypto_aead_aes256gcm_ABYTES == kAeadTagBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kAeadTagBytes);
static_assert(crypto_aead_aes256gcm_NPUBBYTES == 12 && crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);

FrameCipher::FrameCipher(CipherSuite suite, const AeadKey& key, AeadLibrary library)
    : suite_(suite), library_(library), st_(new State) {
  if (sodium_init() < 0) fail("libsodium failed to initialise; cannot encrypt the mesh's links");
  if (suite != CipherSuite::aes256_gcm && suite != CipherSuite::chacha20_poly1305)
    fail("unknown cipher suite ", static_cast<unsigned>(suite));
  if (suite == CipherSuite::aes256_gcm && !aes256gcm_available())
    fail("AES-256-GCM was chosen for a connection but this CPU lacks AES-NI/CLMUL (a bug in the suite negotiation)");
  st_->key = key;
  if (library == AeadLibrary::openssl) {
    st_->seal_pool = std::make_unique<ContextPool>(suite, true);
    st_->open_pool = std::make_unique<ContextPool>(suite, false);
    // One context each now, so a library that cannot do the suite fails
    // here, at the handshake, not at the first frame.
    Borrowed s(*st_->seal_pool, st_->key), o(*st_->open_pool, st_->key);
  } else if (library != AeadLibrary::libsodium) {
    fail("unknown AEAD library ", static_cast<unsigned>(library));
  } else if (suite == CipherSuite::aes256_gcm) {
    crypto_aead_aes256gcm_beforenm(&st_->aes, key.data());
  }
}

FrameCipher::~FrameCipher() = default;

void FrameCipher::seal(uint64_t position, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n,
                       uint8_t tag[kAeadTagBytes]) const {
  const auto nonce = nonce_of(position);
  if (library_ == AeadLibrary::openssl) {
    Borrowed b(*st_->seal_pool, st_->key);
    int out = 0;
    uint8_t none[kAeadTagBytes];  // an AEAD's final step writes no bytes
    if (EVP_EncryptInit_ex(b.ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
        !evp_update(b.ctx, true, ad, ad_len, data, n) || EVP_EncryptFinal_ex(b.ctx, none, &out) != 1 ||
        out != 0 || EVP_CIPHER_CTX_ctrl(b.ctx, EVP_CTRL_AEAD_GET_TAG, kAeadTagBytes, tag) != 1)
      fail("encrypting frame ", position, " (", cipher_suite_name(suite_), ", OpenSSL) failed");
    return;
  }
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
  if (library_ == AeadLibrary::openssl) {
    Borrowed b(*st_->open_pool, st_->key);
    // The expected tag goes in before the data; EVP copies it.
    if (EVP_DecryptInit_ex(b.ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
        EVP_CIPHER_CTX_ctrl(b.ctx, EVP_CTRL_AEAD_SET_TAG, kAeadTagBytes, const_cast<uint8_t*>(tag)) != 1)
      fail("setting up the opening of frame ", position, " (", cipher_suite_name(suite_), ", OpenSSL) failed");
    int out = 0;
    uint8_t none[kAeadTagBytes];
    // Final checks the tag: only then is the plaintext good.
    return evp_update(b.ctx, false, ad, ad_len, data, n) && EVP_DecryptFinal_ex(b.ctx, none, &out) == 1 && out == 0;
  }
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
