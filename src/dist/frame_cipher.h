// Authenticated encryption of one direction of one connection, after the
// handshake (handshake.h) agreed on its key.
//
// Each frame's payload is sealed with an AEAD (AES-256-GCM where the CPUs of
// both ends have AES-NI and CLMUL, ChaCha20-Poly1305 otherwise; libsodium
// does both) under a 96-bit nonce that is the frame's position in its
// direction (0, 1, 2, ...), with the frame's 12-byte header as additional
// data. The receiver opens frame n with nonce n, so a frame that was altered
// (payload, type or length), replayed, reordered, dropped or cut short does
// not open, and the connection closes. The tag adds kAeadTagBytes per frame.
//
// Thread-safety: a FrameCipher is immutable after construction; seal() and
// open() may run on any thread, any number at once (the caller supplies the
// position).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace intellect {

constexpr size_t kAeadKeyBytes = 32;
constexpr size_t kAeadTagBytes = 16;
using AeadKey = std::array<uint8_t, kAeadKeyBytes>;

enum class CipherSuite : uint8_t { chacha20_poly1305 = 1, aes256_gcm = 2 };
const char* cipher_suite_name(CipherSuite s);
// Whether this machine can run AES-256-GCM in libsodium (AES-NI + CLMUL).
bool aes256gcm_available();

class FrameCipher {
 public:
  FrameCipher(CipherSuite suite, const AeadKey& key);
  ~FrameCipher();
  FrameCipher(const FrameCipher&) = delete;
  FrameCipher& operator=(const FrameCipher&) = delete;

  CipherSuite suite() const { return suite_; }
  // Encrypts data[0, n) in place and writes the tag to `tag` (sent after
  // the ciphertext: the payload's buffer never has to grow).
  void seal(uint64_t position, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n,
            uint8_t tag[kAeadTagBytes]) const;
  // Verifies and decrypts data[0, n) in place against `tag`. False when the
  // frame does not authenticate; the buffer's contents are then unspecified.
  bool open(uint64_t position, const uint8_t* ad, size_t ad_len, uint8_t* data, size_t n,
            const uint8_t tag[kAeadTagBytes]) const;

 private:
  CipherSuite suite_;
  struct State;  // the key, wiped on destruction; AES's expanded key schedule
  std::unique_ptr<State> st_;
};

}  // namespace intellect
