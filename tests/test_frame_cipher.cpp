// Sealed frames' AEAD (frame_cipher.h): each library refuses what was
// altered, replayed or reordered; OpenSSL and libsodium seal the very same
// bytes (so either end of a link may use either, and each implementation
// checks the other); one cipher sealed and opened on many threads at once
// gives what it gives on one.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "util/error.h"
#include "test_util.h"

using namespace intellect;

namespace {

std::vector<uint8_t> pattern(size_t n, uint32_t seed) { return test::random_bytes(n, seed); }

std::vector<CipherSuite> suites_here() {
  std::vector<CipherSuite> s = {CipherSuite::chacha20_poly1305};
  if (aes256gcm_available()) s.push_back(CipherSuite::aes256_gcm);
  return s;
}

constexpr AeadLibrary kLibraries[] = {AeadLibrary::openssl, AeadLibrary::libsodium};

AeadKey key_of(uint8_t seed) {
  AeadKey k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed + 31 * i);
  return k;
}

// The payload sealed at `position`, followed by its tag, as on the wire.
std::vector<uint8_t> seal(const FrameCipher& c, uint64_t position, const std::vector<uint8_t>& plain,
                          FrameType type = FrameType::data) {
  const FrameHeader ad = encode_frame_header(type, plain.size() + kAeadTagBytes, kAeadTagBytes);
  std::vector<uint8_t> out = plain;
  std::array<uint8_t, kAeadTagBytes> tag;
  c.seal(position, ad.data(), ad.size(), out.data(), out.size(), tag.data());
  out.insert(out.end(), tag.begin(), tag.end());
  return out;
}

// Opens a sealed payload + tag as if it came at `position` with a header of
// `type`; the plaintext, or nothing when it does not authenticate.
std::optional<std::vector<uint8_t>> open(const FrameCipher& c, uint64_t position, std::vector<uint8_t> sealed,
                                         FrameType type = FrameType::data) {
  if (sealed.size() < kAeadTagBytes) return std::nullopt;
  const size_t n = sealed.size() - kAeadTagBytes;
  const FrameHeader ad = encode_frame_header(type, sealed.size(), kAeadTagBytes);
  if (!c.open(position, ad.data(), ad.size(), sealed.data(), n, sealed.data() + n)) return std::nullopt;
  sealed.resize(n);
  return sealed;
}

}  // namespace

TEST(FrameCipher, SealsAndRefusesAlteredReplayedOrReorderedFrames) {
  const AeadKey key = key_of(7);
  for (CipherSuite suite : suites_here())
    for (AeadLibrary lib : kLibraries) {
      SCOPED_TRACE(str(cipher_suite_name(suite), ", ", aead_library_name(lib)));
      FrameCipher tx(suite, key, lib), rx(suite, key, lib);
      EXPECT_EQ(tx.library(), lib);
      const auto plain = pattern(1000, 5);
      auto c0 = seal(tx, 0, plain), c1 = seal(tx, 1, plain);
      EXPECT_NE(c0, c1);  // the position is the nonce
      EXPECT_NE(std::vector<uint8_t>(c0.begin(), c0.begin() + 1000), plain);
      EXPECT_EQ(open(rx, 0, c0), plain);
      EXPECT_EQ(open(rx, 1, c1), plain);
      EXPECT_FALSE(open(rx, 1, c0));  // replayed or reordered
      EXPECT_FALSE(open(rx, 0, c1));
      auto bad = c0;
      bad[500] ^= 0x80;
      EXPECT_FALSE(open(rx, 0, bad));  // altered payload
      bad = c0;
      bad.back() ^= 1;
      EXPECT_FALSE(open(rx, 0, bad));  // altered tag
      bad = c0;
      bad.erase(bad.begin() + 100);
      EXPECT_FALSE(open(rx, 0, bad));  // cut short (its header says so too)
      EXPECT_FALSE(open(rx, 0, c0, FrameType::control));  // header (type) altered
      FrameCipher wrong(suite, AeadKey{}, lib);
      EXPECT_FALSE(open(wrong, 0, c0));
      // An empty payload is sealed too: its tag still binds header and position.
      const auto e0 = seal(tx, 2, {});
      ASSERT_EQ(e0.size(), kAeadTagBytes);
      EXPECT_EQ(open(rx, 2, e0), std::vector<uint8_t>{});
      EXPECT_FALSE(open(rx, 3, e0));
      EXPECT_FALSE(open(rx, 2, e0, FrameType::control));
    }
}

// The two libraries implement the same standard constructions: for every
// size (empty, under a block, across GCM's and ChaCha20's block boundaries,
// a ring message) they seal to the same bytes and tag, and each opens the
// other's. This is also what checks the OpenSSL code against an
// independent implementation (nonce layout, header as additional data,
// tag after the payload).
TEST(FrameCipher, BothLibrariesSealTheSameBytes) {
  const AeadKey key = key_of(42);
  for (CipherSuite suite : suites_here()) {
    SCOPED_TRACE(cipher_suite_name(suite));
    FrameCipher ossl(suite, key, AeadLibrary::openssl), sodium(suite, key, AeadLibrary::libsodium);
    for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{63}, size_t{64}, size_t{65},
                     size_t{1000}, size_t{65536 + 3}, size_t{266304}}) {
      for (uint64_t position : {uint64_t{0}, uint64_t{1}, uint64_t{0x0102030405060708}}) {
        SCOPED_TRACE(str(n, " bytes at position ", position));
        const auto plain = pattern(n, static_cast<uint32_t>(n + position));
        const auto a = seal(ossl, position, plain), b = seal(sodium, position, plain);
        EXPECT_EQ(a, b);
        EXPECT_EQ(open(sodium, position, a), plain);
        EXPECT_EQ(open(ossl, position, b), plain);
        if (n > 0) {
          auto bad = a;
          bad[n / 2] ^= 4;
          EXPECT_FALSE(open(ossl, position, bad));
          EXPECT_FALSE(open(sodium, position, bad));
        }
      }
    }
  }
}

// A transport seals on every sending thread and opens on every opener at
// once with one cipher per direction: many threads sharing one FrameCipher
// get, frame by frame, the bytes one thread gets, and open them (and
// refuse a tampered one) while the others work.
TEST(FrameCipher, SealsAndOpensOnManyThreadsAtOnce) {
  const AeadKey key = key_of(3);
  constexpr int kThreads = 8, kPerThread = 40;
  for (CipherSuite suite : suites_here())
    for (AeadLibrary lib : kLibraries) {
      SCOPED_TRACE(str(cipher_suite_name(suite), ", ", aead_library_name(lib)));
      const FrameCipher shared(suite, key, lib);
      const FrameCipher reference(suite, key, AeadLibrary::libsodium);
      std::vector<std::vector<uint8_t>> got(kThreads * kPerThread);
      std::atomic<int> refused{0}, wrong{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
          for (int i = 0; i < kPerThread; ++i) {
            const uint64_t pos = static_cast<uint64_t>(i * kThreads + t);  // interleaved positions
            const auto plain = pattern(4096 + 97 * static_cast<size_t>(pos), static_cast<uint32_t>(pos));
            got[pos] = seal(shared, pos, plain);
            if (open(shared, pos, got[pos]) != plain) ++wrong;
            auto bad = got[pos];
            bad[pos % bad.size()] ^= 1;
            if (!open(shared, pos, bad)) ++refused;
          }
        });
      for (auto& th : threads) th.join();
      EXPECT_EQ(wrong.load(), 0);
      EXPECT_EQ(refused.load(), kThreads * kPerThread);
      for (uint64_t pos = 0; pos < got.size(); ++pos) {
        const auto plain = pattern(4096 + 97 * static_cast<size_t>(pos), static_cast<uint32_t>(pos));
        ASSERT_EQ(got[pos], seal(reference, pos, plain)) << "frame " << pos;
      }
    }
}
