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
// Which library computes it (AeadLibrary): OpenSSL's libcrypto by default,
// libsodium on request. Both implement the same standard constructions
// (AES-256-GCM, and ChaCha20-Poly1305 of RFC 8439 with a 96-bit nonce), so
// the bytes on the wire are the same whichever each end uses
// (FrameCipher.BothLibrariesSealTheSameBytes). OpenSSL because it is the
// faster of the two by a wide margin where it matters: libsodium 1.0.18's
// AES-256-GCM (Debian 12's) runs at about 1 GB/s a core, and a node of an
// int8 ring seals and opens about twice the bytes it sends, which made the
// AEAD itself most of what sealing cost (docs/PERFORMANCE.md, "Where the
// sealed path spent its time"). libsodium stays for the handshake
// (handshake.h), for the choice of suite (aes256gcm_available: AES-NI and
// CLMUL, so AES never runs on a table-based software fallback) and as the
// second implementation the tests check the first against.
//
// Thread-safety: a FrameCipher is logically immutable after construction;
// seal() and open() may run on any thread, any number at once (the caller
// supplies the position). With OpenSSL each call borrows a keyed cipher
// context from the cipher's own small pool (a mutex held only to take or
// give back one; as many contexts as calls ever ran at once on this cipher,
// freed, their key schedules wiped, with it).
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

enum class AeadLibrary : uint8_t { openssl = 1, libsodium = 2 };
const char* aead_library_name(AeadLibrary l);

class FrameCipher {
 public:
  FrameCipher(CipherSuite suite, const AeadKey& key, AeadLibrary library = AeadLibrary::openssl);
  ~FrameCipher();
  FrameCipher(const FrameCipher&) = delete;
  FrameCipher& operator=(const FrameCipher&) = delete;

  CipherSuite suite() const { return suite_; }
  AeadLibrary library() const { return library_; }
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
  AeadLibrary library_;
  // The key, wiped on destruction; libsodium's AES key schedule; OpenSSL's
  // pools of keyed contexts (one for sealing, one for opening).
  struct State;
  std::unique_ptr<State> st_;
};

}  // namespace intellect
