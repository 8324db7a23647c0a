// The mesh's first layer: frames, the handshake, and the libuv transport on
// loopback. Every wait is bounded; the suite runs in a few seconds.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "dist/auth.h"
#include "dist/bytes.h"
#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "dist/frame_openers.h"
#include "dist/handshake.h"
#include "dist/identity.h"
#include "dist/transport.h"
#include "util/error.h"
#include "test_util.h"

using namespace intellect;
using namespace std::chrono_literals;

namespace {

std::vector<uint8_t> pattern(size_t n, uint32_t seed) { return test::random_bytes(n, seed); }

// The acceptor's challenge on the wire: header, mode, suites, X25519 key.
constexpr size_t kChallengeFrameBytes = kFrameHeaderSize + 2 + kEphemeralBytes;

RunSecret secret_a() { return RunSecret(std::vector<uint8_t>(32, 0xa5)); }
RunSecret secret_b() { return RunSecret(std::vector<uint8_t>(40, 0x5a)); }

// Decodes a whole stream, fed in pieces of the sizes `split` returns.
template <class Split>
std::vector<Frame> decode_all(const std::vector<uint8_t>& stream, Split split,
                              FrameDecoder::Phase phase = FrameDecoder::Phase::established) {
  FrameDecoder dec(phase);
  std::vector<Frame> out;
  size_t off = 0;
  while (off < stream.size()) {
    size_t piece = std::min(split(), stream.size() - off);
    size_t at = 0;
    while (at < piece) {
      size_t k = dec.feed(stream.data() + off + at, piece - at);
      EXPECT_FALSE(dec.failed()) << dec.error_message();
      at += k;
      if (dec.ready()) out.push_back(dec.take());
    }
    off += piece;
  }
  EXPECT_FALSE(dec.mid_frame());
  return out;
}

std::vector<Frame> sample_frames() {
  return {{FrameType::control, {}},
          {FrameType::control, pattern(1, 1)},
          {FrameType::data, pattern(100000, 2)},
          {FrameType::control, pattern(64 << 10, 3)},
          {FrameType::data, pattern(13, 4)}};
}

std::vector<uint8_t> concat(const std::vector<Frame>& frames) {
  std::vector<uint8_t> s;
  for (const auto& f : frames) {
    auto e = encode_frame(f);
    s.insert(s.end(), e.begin(), e.end());
  }
  return s;
}

void expect_same(const std::vector<Frame>& a, const std::vector<Frame>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].type, b[i].type) << i;
    EXPECT_EQ(a[i].payload, b[i].payload) << i;
  }
}

std::vector<uint8_t> header(uint32_t magic, uint16_t version, uint16_t type, uint32_t len) {
  ByteWriter w;
  w.u32(magic);
  w.u16(version);
  w.u16(type);
  w.u32(len);
  return w.take();
}

DecodeError decode_error_of(const std::vector<uint8_t>& bytes, FrameDecoder::Phase phase) {
  FrameDecoder dec(phase);
  size_t k = dec.feed(bytes.data(), bytes.size());
  EXPECT_LE(k, kFrameHeaderSize);  // nothing past the bad header is consumed
  if (dec.failed()) {
    EXPECT_FALSE(dec.error_message().empty());
    EXPECT_EQ(dec.feed(bytes.data(), bytes.size()), 0u);  // a failed stream stays failed
  }
  return dec.error();
}

}  // namespace

// --- frames ---------------------------------------------------------------

TEST(DistFrame, RoundTripWhole) {
  auto frames = sample_frames();
  auto stream = concat(frames);
  expect_same(decode_all(stream, [] { return SIZE_MAX; }), frames);
}

TEST(DistFrame, ByteByByte) {
  auto frames = sample_frames();
  frames.resize(3);
  frames[2].payload.resize(3000);
  expect_same(decode_all(concat(frames), [] { return size_t{1}; }), frames);
}

TEST(DistFrame, RandomSplits) {
  auto frames = sample_frames();
  auto stream = concat(frames);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<size_t> d(1, 20000);
    expect_same(decode_all(stream, [&] { return d(rng); }), frames);
  }
}

TEST(DistFrame, HeaderLayoutIsLittleEndian) {
  auto h = encode_frame_header(FrameType::data, 0x01020304);
  const uint8_t want[] = {'I', 'N', 'T', 'L', static_cast<uint8_t>(kProtocolVersion), 0, 17, 0, 4, 3, 2, 1};
  EXPECT_EQ(std::memcmp(h.data(), want, 12), 0);
}

TEST(DistFrame, EveryDecoderError) {
  using P = FrameDecoder::Phase;
  EXPECT_EQ(decode_error_of(header(0xdeadbeef, kProtocolVersion, 16, 0), P::established), DecodeError::bad_magic);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion + 1, 16, 0), P::established),
            DecodeError::unsupported_version);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 999, 0), P::established), DecodeError::unknown_type);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 16, 0), P::handshake), DecodeError::type_not_allowed);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 1, 32), P::established),
            DecodeError::type_not_allowed);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 16, (64 << 10) + 17), P::established),
            DecodeError::oversize);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 17, 0xffffffffu), P::established), DecodeError::oversize);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 1, 257), P::handshake), DecodeError::oversize);
  // At the limit (the type's, plus the sealed frame's tag) is fine.
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 16, (64 << 10) + 16), P::established), DecodeError::none);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, kProtocolVersion, 17, 64u << 20), P::established), DecodeError::none);
}

TEST(DistFrame, ErrorDetectedAfterSplitHeader) {
  auto h = header(kFrameMagic, 7, 16, 0);
  FrameDecoder dec;
  EXPECT_EQ(dec.feed(h.data(), 5), 5u);
  EXPECT_TRUE(dec.mid_frame());
  EXPECT_FALSE(dec.failed());
  dec.feed(h.data() + 5, 7);
  EXPECT_EQ(dec.error(), DecodeError::unsupported_version);
  EXPECT_NE(dec.error_message().find("version 7"), std::string::npos) << dec.error_message();
}

TEST(DistFrame, EncoderRefusesOversizeAndUnknown) {
  EXPECT_THROW(encode_frame_header(FrameType::control, (64 << 10) + 1), Error);
  EXPECT_THROW(encode_frame_header(FrameType::auth_challenge, 257), Error);
  EXPECT_THROW(encode_frame_header(static_cast<FrameType>(999), 0), Error);
}

TEST(DistFrame, StopsAtFrameBoundary) {
  // Feeding two frames at once yields the first and leaves the second's bytes
  // to the caller, so it can switch phase in between.
  auto stream = concat({{FrameType::auth_confirm, pattern(32, 9)}, {FrameType::control, pattern(5, 8)}});
  FrameDecoder dec(FrameDecoder::Phase::handshake);
  size_t k = dec.feed(stream.data(), stream.size());
  EXPECT_EQ(k, kFrameHeaderSize + 32);
  ASSERT_TRUE(dec.ready());
  EXPECT_EQ(dec.take().type, FrameType::auth_confirm);
  dec.set_phase(FrameDecoder::Phase::established);
  EXPECT_EQ(dec.feed(stream.data() + k, stream.size() - k), stream.size() - k);
  ASSERT_TRUE(dec.ready());
  EXPECT_EQ(dec.take().payload, pattern(5, 8));
}

// --- byte reader / writer ----------------------------------------------------

TEST(DistBytes, RoundTrip) {
  ByteWriter w;
  w.u8(7);
  w.u16(0xbeef);
  w.u32(0xdeadbeef);
  w.u64(0x0123456789abcdefull);
  w.f32(-1.5f);
  w.str("node-3");
  w.bytes("xyz", 3);
  auto buf = w.take();
  ByteReader r(buf, "test message");
  EXPECT_EQ(r.u8("a"), 7);
  EXPECT_EQ(r.u16("b"), 0xbeef);
  EXPECT_EQ(r.u32("c"), 0xdeadbeefu);
  EXPECT_EQ(r.u64("d"), 0x0123456789abcdefull);
  EXPECT_EQ(r.f32("e"), -1.5f);
  EXPECT_EQ(r.str("f", 100), "node-3");
  char out[3];
  r.bytes("g", out, 3);
  EXPECT_EQ(std::string(out, 3), "xyz");
  EXPECT_NO_THROW(r.expect_end());
}

TEST(DistBytes, BoundsChecked) {
  ByteWriter w;
  w.u16(1);
  auto buf = w.take();
  {
    ByteReader r(buf, "hello message");
    try {
      r.u32("world_size");
      FAIL() << "read past the end";
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("world_size"), std::string::npos) << m;
      EXPECT_NE(m.find("hello message"), std::string::npos) << m;
    }
    EXPECT_EQ(r.offset(), 0u);  // a failed read consumes nothing
  }
  {
    ByteReader r(buf);
    r.u8("x");
    EXPECT_THROW(r.expect_end(), Error);
    EXPECT_THROW(r.u64("y"), Error);
    EXPECT_THROW(r.view("z", SIZE_MAX), Error);  // no wrap-around on huge lengths
  }
  {
    ByteWriter s;
    s.u32(1000);  // declares 1000 bytes, has none
    auto b = s.take();
    ByteReader r(b);
    EXPECT_THROW(r.str("name", 100), Error);  // over max_len
    ByteReader r2(b);
    EXPECT_THROW(r2.str("name", 5000), Error);  // truncated
  }
}

// --- authentication ----------------------------------------------------------

namespace {

struct Keys {
  NodeKey key = NodeKey::generate();
  PublicKey pk() const { return key.public_key(); }
};

// Admits exactly these keys.
PeerAdmission admit_only(std::vector<PublicKey> keys) {
  return [keys](const PublicKey& pk) -> std::string {
    for (const auto& k : keys)
      if (k == pk) return "";
    return "not on the test's allowlist";
  };
}

struct HandshakeRun {
  bool initiator_ok = false, acceptor_ok = false;
  bool confirm_sent = false;
  std::string initiator_failure, acceptor_failure;
};

// The three messages between two fresh handshakes; `tamper` may change each
// message on the way (0 challenge, 1 response, 2 confirm).
HandshakeRun run_handshake(Handshake& ini, Handshake& acc,
                           const std::function<void(int, Frame&)>& tamper = {}) {
  HandshakeRun r;
  EXPECT_FALSE(ini.start().has_value());
  auto challenge = acc.start();
  EXPECT_TRUE(challenge.has_value());
  if (tamper) tamper(0, *challenge);
  auto response = ini.on_frame(*challenge);
  if (response) {
    if (tamper) tamper(1, *response);
    auto confirm = acc.on_frame(*response);
    r.confirm_sent = confirm.has_value();
    if (confirm) {
      if (tamper) tamper(2, *confirm);
      ini.on_frame(*confirm);
    }
  }
  r.initiator_ok = ini.done();
  r.acceptor_ok = acc.done();
  r.initiator_failure = ini.failure();
  r.acceptor_failure = acc.failure();
  return r;
}

HandshakeRun run_handshake(const PeerCredentials& init, const PeerCredentials& accept,
                           const std::function<void(int, Frame&)>& tamper = {}) {
  Handshake acc(AuthRole::acceptor, accept), ini(AuthRole::initiator, init);
  return run_handshake(ini, acc, tamper);
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST(DistAuth, SharedSecretAgreesOnKeys) {
  Handshake acc(AuthRole::acceptor, secret_a()), ini(AuthRole::initiator, secret_a());
  auto r = run_handshake(ini, acc);
  ASSERT_TRUE(r.initiator_ok) << r.initiator_failure;
  ASSERT_TRUE(r.acceptor_ok) << r.acceptor_failure;
  EXPECT_EQ(ini.session().send, acc.session().recv);
  EXPECT_EQ(ini.session().recv, acc.session().send);
  EXPECT_NE(ini.session().send, ini.session().recv);  // one key per direction
  EXPECT_EQ(ini.session().suite, acc.session().suite);
  EXPECT_FALSE(ini.peer_key().has_value());
}

TEST(DistAuth, WrongSecretInitiatorLearnsNothing) {
  auto r = run_handshake(secret_b(), secret_a());
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_FALSE(r.confirm_sent);  // the acceptor's proof is withheld
  EXPECT_TRUE(has(r.acceptor_failure, "does not hold this run's secret")) << r.acceptor_failure;
}

TEST(DistAuth, NodeKeysAuthenticateBothWays) {
  Keys a, b;
  auto ca = PeerCredentials::keyed(a.key, admit_only({b.pk()}));
  auto cb = PeerCredentials::keyed(b.key, admit_only({a.pk()}));
  Handshake acc(AuthRole::acceptor, ca), ini(AuthRole::initiator, cb);
  auto r = run_handshake(ini, acc);
  ASSERT_TRUE(r.acceptor_ok) << r.acceptor_failure;
  ASSERT_TRUE(r.initiator_ok) << r.initiator_failure;
  EXPECT_EQ(acc.peer_key(), b.pk());
  EXPECT_EQ(ini.peer_key(), a.pk());
  EXPECT_EQ(ini.session().send, acc.session().recv);
  // Fresh keys per connection.
  Handshake acc2(AuthRole::acceptor, ca), ini2(AuthRole::initiator, cb);
  ASSERT_TRUE(run_handshake(ini2, acc2).initiator_ok);
  EXPECT_NE(ini.session().send, ini2.session().send);
}

TEST(DistAuth, UnknownKeysAreRefusedOnEitherSide) {
  Keys a, b, stranger;
  // The acceptor does not know the initiator: it never confirms.
  auto r = run_handshake(PeerCredentials::keyed(stranger.key, admit_only({a.pk()})),
                         PeerCredentials::keyed(a.key, admit_only({b.pk()})));
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_FALSE(r.confirm_sent);
  EXPECT_TRUE(has(r.acceptor_failure, "not admitted")) << r.acceptor_failure;
  EXPECT_TRUE(has(r.acceptor_failure, fingerprint(stranger.pk()))) << r.acceptor_failure;
  // The initiator does not know the acceptor (an impostor listening at a member's address).
  r = run_handshake(PeerCredentials::keyed(b.key, admit_only({a.pk()})),
                    PeerCredentials::keyed(stranger.key, admit_only({b.pk()})));
  EXPECT_TRUE(r.acceptor_ok);  // it admitted us, but we do not admit it
  EXPECT_FALSE(r.initiator_ok);
  EXPECT_TRUE(has(r.initiator_failure, "acceptor " + fingerprint(stranger.pk()) + " is not admitted"))
      << r.initiator_failure;
}

// In the node-keys mode the handshake keys need no secret, so an outsider
// can run the key exchange honestly and seal any proof it likes: what the
// receiver checks after opening it must hold on its own.
TEST(DistAuth, AnOutsiderWhoCompletesTheKeyExchangeCannotProveAnAdmittedKey) {
  Keys a, b, stranger;
  auto accept = PeerCredentials::keyed(a.key, admit_only({b.pk()}));
  // Claims b's key under its own signature.
  {
    Handshake acc(AuthRole::acceptor, accept), ini(AuthRole::initiator, PeerCredentials::keyed(stranger.key, admit_only({a.pk()})));
    const PublicKey claimed = b.pk();
    ini.set_proof_transform_for_testing([&](std::vector<uint8_t> proof) {
      std::copy(claimed.begin(), claimed.end(), proof.begin());
      return proof;
    });
    auto r = run_handshake(ini, acc);
    EXPECT_FALSE(r.acceptor_ok);
    EXPECT_FALSE(r.confirm_sent);
    EXPECT_TRUE(has(r.acceptor_failure, "signature by " + fingerprint(b.pk()) + " does not verify"))
        << r.acceptor_failure;
  }
  // A proof of the wrong size: refused by its size, before any copy out of it.
  for (size_t n : {size_t{0}, size_t{31}, kPublicKeyBytes + kSignatureBytes - 1, kPublicKeyBytes + kSignatureBytes + 1}) {
    Handshake acc(AuthRole::acceptor, accept), ini(AuthRole::initiator, PeerCredentials::keyed(b.key, admit_only({a.pk()})));
    ini.set_proof_transform_for_testing([n](std::vector<uint8_t> proof) {
      proof.resize(n, 0x5A);
      return proof;
    });
    auto r = run_handshake(ini, acc);
    EXPECT_FALSE(r.acceptor_ok) << n;
    EXPECT_TRUE(has(r.acceptor_failure, "identity proof is " + std::to_string(n) + " bytes")) << r.acceptor_failure;
  }
  // The acceptor's side: an impostor that flips one bit of its signature.
  {
    Handshake acc(AuthRole::acceptor, accept), ini(AuthRole::initiator, PeerCredentials::keyed(b.key, admit_only({a.pk()})));
    acc.set_proof_transform_for_testing([](std::vector<uint8_t> proof) {
      proof.back() ^= 1;
      return proof;
    });
    auto r = run_handshake(ini, acc);
    EXPECT_TRUE(r.confirm_sent);
    EXPECT_FALSE(r.initiator_ok);
    EXPECT_TRUE(has(r.initiator_failure, "does not verify")) << r.initiator_failure;
  }
  // Unchanged, the same pair completes: the refusals above are the changes'.
  Handshake acc(AuthRole::acceptor, accept), ini(AuthRole::initiator, PeerCredentials::keyed(b.key, admit_only({a.pk()})));
  ini.set_proof_transform_for_testing([](std::vector<uint8_t> proof) { return proof; });
  auto r = run_handshake(ini, acc);
  EXPECT_TRUE(r.acceptor_ok && r.initiator_ok) << r.acceptor_failure << r.initiator_failure;
}

TEST(DistAuth, ModesRefuseEachOtherAndDowngradesFail) {
  Keys a, b;
  auto keyed_a = PeerCredentials::keyed(a.key, admit_only({b.pk()}));
  auto keyed_b = PeerCredentials::keyed(b.key, admit_only({a.pk()}));
  // A keyed node dialling a shared-secret node, and the reverse.
  auto r = run_handshake(keyed_b, secret_a());
  EXPECT_FALSE(r.initiator_ok);
  EXPECT_TRUE(has(r.initiator_failure, "downgrade")) << r.initiator_failure;
  r = run_handshake(secret_a(), keyed_a);
  EXPECT_FALSE(r.initiator_ok);
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_TRUE(has(r.initiator_failure, "mesh.node_key_file")) << r.initiator_failure;
  // An on-path attacker rewrites the challenge's mode byte to the shared-secret mode.
  r = run_handshake(keyed_b, keyed_a, [](int i, Frame& f) {
    if (i == 0) f.payload[0] = static_cast<uint8_t>(AuthMode::shared_secret);
  });
  EXPECT_FALSE(r.initiator_ok);
  EXPECT_TRUE(has(r.initiator_failure, "downgrade")) << r.initiator_failure;
  // ... or strips AES from the offered suites: the transcripts differ, so the proofs do not open.
  r = run_handshake(keyed_b, keyed_a, [](int i, Frame& f) {
    if (i == 0) f.payload[1] = 1u << static_cast<unsigned>(CipherSuite::chacha20_poly1305);
  });
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_FALSE(r.initiator_ok);
  EXPECT_TRUE(has(r.acceptor_failure, "altered")) << r.acceptor_failure;
}

// bench_allreduce --plaintext's handshakes: both ends unsealed agree (and
// say so in their session); a sealed node and an unsealed one refuse each
// other whichever dials, naming the mode; an attacker who sets or clears
// the flag on the way breaks the handshake like any other byte.
TEST(DistAuth, UnsealedFramesForBenchmarksMustBeSetAlikeOnBothEnds) {
  Keys a, b;
  auto keyed_a = PeerCredentials::keyed(a.key, admit_only({b.pk()}));
  auto keyed_b = PeerCredentials::keyed(b.key, admit_only({a.pk()}));
  for (const bool keyed : {true, false}) {
    SCOPED_TRACE(keyed ? "node keys" : "shared secret");
    const PeerCredentials ci = keyed ? keyed_b : PeerCredentials(secret_a());
    const PeerCredentials ca = keyed ? keyed_a : PeerCredentials(secret_a());
    auto run = [&](bool ini_unsealed, bool acc_unsealed, const std::function<void(int, Frame&)>& tamper = {}) {
      Handshake acc(AuthRole::acceptor, ca), ini(AuthRole::initiator, ci);
      acc.set_unsealed_frames_for_benchmarks(acc_unsealed);
      ini.set_unsealed_frames_for_benchmarks(ini_unsealed);
      HandshakeRun r = run_handshake(ini, acc, tamper);
      if (r.initiator_ok && r.acceptor_ok) {
        EXPECT_EQ(ini.session().unsealed_for_benchmarks, ini_unsealed);
        EXPECT_EQ(acc.session().unsealed_for_benchmarks, acc_unsealed);
        EXPECT_EQ(ini.session().send, acc.session().recv);  // keys are derived as ever
      }
      return r;
    };
    HandshakeRun r = run(true, true);
    EXPECT_TRUE(r.initiator_ok && r.acceptor_ok) << r.initiator_failure << r.acceptor_failure;
    r = run(false, false);
    EXPECT_TRUE(r.initiator_ok && r.acceptor_ok) << r.initiator_failure << r.acceptor_failure;
    // A sealed initiator refuses an unsealed acceptor, and the reverse: at
    // the challenge, before either side has proven anything.
    r = run(false, true);
    EXPECT_FALSE(r.initiator_ok);
    EXPECT_FALSE(r.acceptor_ok);
    EXPECT_TRUE(has(r.initiator_failure, "the peer declares unsealed frames")) << r.initiator_failure;
    EXPECT_TRUE(has(r.initiator_failure, "no node of a run ever talks plaintext")) << r.initiator_failure;
    r = run(true, false);
    EXPECT_FALSE(r.initiator_ok);
    EXPECT_FALSE(r.acceptor_ok);
    EXPECT_TRUE(has(r.initiator_failure, "this node sends unsealed frames")) << r.initiator_failure;
    EXPECT_TRUE(has(r.initiator_failure, "but the peer seals every frame")) << r.initiator_failure;
    // An initiator that does not check (another build, or a hostile one)
    // answering a sealed acceptor with the flag set: the acceptor refuses it.
    r = run(false, false, [](int i, Frame& f) {
      if (i == 1) f.payload[1] |= kUnsealedFramesFlag;
    });
    EXPECT_FALSE(r.acceptor_ok);
    EXPECT_TRUE(has(r.acceptor_failure, "the peer declares unsealed frames")) << r.acceptor_failure;
    // An on-path attacker who clears the flag in both directions between two
    // unsealed ends (or sets it between two sealed ones) changes the
    // transcript: nobody finishes, so neither end is led into the other mode.
    r = run(true, true, [](int i, Frame& f) {
      if (i < 2) f.payload[1] &= static_cast<uint8_t>(~kUnsealedFramesFlag);
    });
    EXPECT_FALSE(r.initiator_ok || r.acceptor_ok);
    r = run(false, false, [](int i, Frame& f) {
      if (i < 2) f.payload[1] |= kUnsealedFramesFlag;
    });
    EXPECT_FALSE(r.initiator_ok || r.acceptor_ok);
  }
}

TEST(DistAuth, EveryAlteredHandshakeByteFails) {
  Keys a, b;
  auto keyed_a = PeerCredentials::keyed(a.key, admit_only({b.pk()}));
  auto keyed_b = PeerCredentials::keyed(b.key, admit_only({a.pk()}));
  size_t sizes[3] = {0, 0, 0};
  run_handshake(keyed_b, keyed_a, [&](int i, Frame& f) { sizes[i] = f.payload.size(); });
  ASSERT_GT(sizes[2], 0u);
  for (int msg = 0; msg < 3; ++msg)
    for (size_t at = 0; at < sizes[msg]; ++at) {
      auto r = run_handshake(keyed_b, keyed_a, [&](int i, Frame& f) {
        if (i == msg) f.payload[at] ^= 0x01;
      });
      EXPECT_FALSE(r.initiator_ok && r.acceptor_ok) << "message " << msg << " byte " << at;
      EXPECT_FALSE(r.initiator_ok) << "message " << msg << " byte " << at;
    }
}

TEST(DistAuth, ReplayedAndReflectedHandshakesFail) {
  Keys a, b;
  auto keyed_a = PeerCredentials::keyed(a.key, admit_only({b.pk(), a.pk()}));
  auto keyed_b = PeerCredentials::keyed(b.key, admit_only({a.pk()}));
  // A recorded response replayed to a new connection (a fresh challenge).
  Handshake acc1(AuthRole::acceptor, keyed_a), ini(AuthRole::initiator, keyed_b);
  ini.start();
  auto response = ini.on_frame(*acc1.start());
  ASSERT_TRUE(acc1.on_frame(*response).has_value());
  Handshake acc2(AuthRole::acceptor, keyed_a);
  acc2.start();
  EXPECT_FALSE(acc2.on_frame(*response).has_value());
  EXPECT_TRUE(acc2.failed());
  // A node's own handshake reflected back to it: its own key (even when listed).
  auto r = run_handshake(keyed_a, keyed_a);
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_TRUE(has(r.acceptor_failure, "own key")) << r.acceptor_failure;
  // Shared secret: a challenge carrying an ephemeral this process issued.
  Handshake acc3(AuthRole::acceptor, secret_a());
  auto ch3 = acc3.start();
  EphemeralKey mine = acc3.own_ephemeral();
  Handshake ini3(AuthRole::initiator, secret_a(), [&](const EphemeralKey& e) { return e == mine; });
  ini3.start();
  EXPECT_FALSE(ini3.on_frame(*ch3).has_value());
  EXPECT_TRUE(has(ini3.failure(), "relaying")) << ini3.failure();
}

TEST(DistAuth, GarbageAndOutOfOrderFramesFail) {
  RunSecret s = secret_a();
  Handshake acc(AuthRole::acceptor, s);
  acc.start();
  acc.on_frame({FrameType::auth_confirm, pattern(32, 1)});
  EXPECT_TRUE(acc.failed());
  Handshake ini(AuthRole::initiator, s);
  ini.start();
  ini.on_frame({FrameType::auth_challenge, pattern(31, 1)});
  EXPECT_TRUE(ini.failed());
  Handshake acc2(AuthRole::acceptor, s);
  acc2.start();
  acc2.on_frame({FrameType::auth_response, pattern(20, 1)});
  EXPECT_TRUE(acc2.failed());
  // A low-order X25519 point as the peer's ephemeral.
  Handshake ini4(AuthRole::initiator, s);
  ini4.start();
  Frame ch{FrameType::auth_challenge, std::vector<uint8_t>(34, 0)};
  ch.payload[0] = static_cast<uint8_t>(AuthMode::shared_secret);
  ch.payload[1] = static_cast<uint8_t>(0xff & ~kUnsealedFramesFlag);
  ini4.on_frame(ch);
  EXPECT_TRUE(ini4.failed());
  EXPECT_TRUE(has(ini4.failure(), "low-order")) << ini4.failure();
}

TEST(DistAuth, SecretFile) {
  auto dir = std::filesystem::temp_directory_path() / ("intellect_secret_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& body, mode_t mode) {
    auto p = (dir / name).string();
    FILE* f = std::fopen(p.c_str(), "wb");
    std::fwrite(body.data(), 1, body.size(), f);
    std::fclose(f);
    ::chmod(p.c_str(), mode);
    return p;
  };
  std::string hex64(64, 'f');
  auto good = write("good", hex64 + "\n", 0600);
  EXPECT_EQ(load_run_secret(good).bytes().size(), 64u);  // newline dropped
  EXPECT_THROW(load_run_secret(write("short", "0123456789\n", 0600)), Error);
  EXPECT_THROW(load_run_secret(write("empty", "", 0600)), Error);
  try {
    load_run_secret(write("world", hex64, 0644));
    FAIL() << "a world-readable secret was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
  std::string warned;
  load_run_secret(write("group", hex64, 0640), [&](const std::string& m) { warned = m; });
  EXPECT_NE(warned.find("group"), std::string::npos);
  EXPECT_THROW(load_run_secret((dir / "missing").string()), Error);
  std::filesystem::remove_all(dir);
}

// --- transport on loopback -----------------------------------------------------

namespace {

struct LogSink {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> fn() {
    return [this](const std::string& m) {
      std::lock_guard lk(mu);
      lines.push_back(m);
    };
  }
  bool contains(const std::string& s) {
    std::lock_guard lk(mu);
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

TransportOptions options(PeerCredentials s, LogSink* sink = nullptr) {
  TransportOptions o;
  o.credentials = std::move(s);
  o.handshake_timeout = 3000ms;
  o.io_timeout = 3000ms;
  if (sink) o.log = sink->fn();
  return o;
}

ConnId wait_authenticated(Transport& t) {
  auto e = t.next_event(deadline_in(3000ms));
  EXPECT_TRUE(e.has_value());
  if (!e) return 0;
  EXPECT_EQ(e->kind, TransportEvent::Kind::authenticated);
  EXPECT_TRUE(e->inbound);
  return e->conn;
}

// A blocking client socket with bounded reads, for playing a misbehaving peer.
struct RawSocket {
  int fd = -1;
  explicit RawSocket(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  ~RawSocket() { ::close(fd); }
  void send_all(const std::vector<uint8_t>& b) {
    ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  }
  // Everything until EOF (or a 5 s silence).
  std::vector<uint8_t> read_until_eof() {
    std::vector<uint8_t> all;
    uint8_t buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      all.insert(all.end(), buf, buf + n);
    }
    return all;
  }
  std::vector<uint8_t> read_exact(size_t n) {
    std::vector<uint8_t> out(n);
    size_t got = 0;
    while (got < n) {
      ssize_t k = ::recv(fd, out.data() + got, n - got, 0);
      if (k <= 0) break;
      got += static_cast<size_t>(k);
    }
    out.resize(got);
    return out;
  }
};

}  // namespace

TEST(DistTransport, ExchangeBothWays) {
  Transport a(options(secret_a())), b(options(secret_a()));
  uint16_t port = a.listen("127.0.0.1", 0);
  ASSERT_NE(port, 0);
  ConnId ab = b.connect("127.0.0.1", port, deadline_in(3000ms));
  ConnId ba = wait_authenticated(a);
  ASSERT_TRUE(b.is_open(ab));
  ASSERT_TRUE(a.is_open(ba));

  auto big = pattern(32 << 20, 77);
  b.send(ab, {FrameType::control, pattern(100, 1)}, deadline_in(3000ms));
  b.send(ab, {FrameType::data, big}, deadline_in(3000ms));
  b.send(ab, {FrameType::control, {}}, deadline_in(3000ms));
  a.send(ba, {FrameType::data, pattern(5000, 2)}, deadline_in(3000ms));

  auto m1 = a.recv(ba, deadline_in(3000ms));
  ASSERT_TRUE(m1);
  EXPECT_EQ(m1->frame.payload, pattern(100, 1));
  auto m2 = a.recv(kAnyConn, deadline_in(5000ms));
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->conn, ba);
  EXPECT_EQ(m2->frame.type, FrameType::data);
  EXPECT_TRUE(m2->frame.payload == big);
  auto m3 = a.recv(ba, deadline_in(3000ms));
  ASSERT_TRUE(m3);
  EXPECT_TRUE(m3->frame.payload.empty());
  auto r = b.recv(ab, deadline_in(3000ms));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->frame.payload, pattern(5000, 2));
  EXPECT_FALSE(a.recv(ba, deadline_in(20ms)).has_value());  // nothing more: times out

  // Handshake types and oversize frames are refused at send().
  EXPECT_THROW(b.send(ab, {FrameType::auth_confirm, {}}, deadline_in(100ms)), Error);
  EXPECT_THROW(b.send(ab, {FrameType::control, pattern((64 << 10) + 1, 3)}, deadline_in(100ms)), Error);

  // A graceful close delivers what was sent before it.
  a.send(ba, {FrameType::control, pattern(10, 4)}, deadline_in(1000ms));
  a.close(ba, "test done");
  EXPECT_THROW(a.send(ba, {FrameType::control, {}}, deadline_in(100ms)), Error);
  auto last = b.recv(ab, deadline_in(3000ms));
  ASSERT_TRUE(last);
  EXPECT_EQ(last->frame.payload, pattern(10, 4));
  EXPECT_THROW(b.recv(ab, deadline_in(3000ms)), Error);
  EXPECT_FALSE(b.is_open(ab));
  auto e = b.next_event(deadline_in(1000ms));  // b's own dial, announced too
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, TransportEvent::Kind::authenticated);
  EXPECT_FALSE(e->inbound);
  e = b.next_event(deadline_in(1000ms));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, TransportEvent::Kind::closed);
  EXPECT_EQ(e->conn, ab);
  EXPECT_NE(e->reason.find("peer closed"), std::string::npos) << e->reason;
  EXPECT_THROW(b.send(ab, {FrameType::control, {}}, deadline_in(100ms)), Error);
}

TEST(DistTransport, WrongSecretIsRefused) {
  LogSink log;
  Transport a(options(secret_a(), &log)), b(options(secret_b()));
  uint16_t port = a.listen("127.0.0.1", 0);
  try {
    b.connect("127.0.0.1", port, deadline_in(3000ms));
    FAIL() << "connected with the wrong secret";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("during the handshake"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(a.next_event(deadline_in(50ms)).has_value());  // never announced
  for (int i = 0; i < 100 && !log.contains("authentication failed"); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(log.contains("authentication failed"));

  // What the refused side sees on the wire: the acceptor's ephemeral key, then EOF.
  RawSocket raw(port);
  auto challenge = raw.read_exact(kChallengeFrameBytes);
  ASSERT_EQ(challenge.size(), kChallengeFrameBytes);
  FrameDecoder dec(FrameDecoder::Phase::handshake);
  ASSERT_EQ(dec.feed(challenge.data(), challenge.size()), challenge.size());
  ASSERT_TRUE(dec.ready());
  Frame ch = dec.take();
  Handshake impostor(AuthRole::initiator, secret_b());
  impostor.start();
  raw.send_all(encode_frame(*impostor.on_frame(ch)));
  EXPECT_TRUE(raw.read_until_eof().empty());  // no proof, no frame: closed
}

// A listener that answers the handshake with a proof made from another
// secret (an impostor, or another run's node): the dialer detects it, and
// connect() says so with AuthenticationFailed, which callers do not retry.
TEST(DistTransport, ImpostorAcceptorIsAnAuthenticationFailure) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const uint16_t port = ntohs(a.sin_port);
  std::thread impostor([lfd] {
    const int fd = ::accept(lfd, nullptr, nullptr);
    if (fd < 0) return;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Handshake acc(AuthRole::acceptor, secret_b());
    const std::vector<uint8_t> challenge = encode_frame(*acc.start());
    ::send(fd, challenge.data(), challenge.size(), MSG_NOSIGNAL);
    FrameDecoder dec(FrameDecoder::Phase::handshake);
    uint8_t byte = 0;
    while (!dec.ready() && ::recv(fd, &byte, 1, 0) == 1) dec.feed(&byte, 1);
    if (dec.ready()) {
      // It cannot open the initiator's proof (another secret) and answers
      // with a confirmation it made up.
      EXPECT_FALSE(acc.on_frame(dec.take()).has_value());
      const std::vector<uint8_t> confirm = encode_frame({FrameType::auth_confirm, pattern(32 + kAeadTagBytes, 3)});
      ::send(fd, confirm.data(), confirm.size(), MSG_NOSIGNAL);
      while (::recv(fd, &byte, 1, 0) == 1) {
      }
    }
    ::close(fd);
  });
  Transport t(options(secret_a()));
  try {
    t.connect("127.0.0.1", port, deadline_in(3000ms));
    ADD_FAILURE() << "connected to an impostor";
  } catch (const AuthenticationFailed& e) {
    EXPECT_NE(std::string(e.what()).find("authentication failed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("run secret"), std::string::npos) << e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << "an impostor's bad proof was reported as an ordinary failure: " << e.what();
  }
  impostor.join();
  ::close(lfd);
}

TEST(DistTransport, StalledPeersAreDropped) {
  LogSink log;
  auto o = options(secret_a(), &log);
  o.handshake_timeout = 5000ms;
  o.io_timeout = 200ms;
  Transport a(std::move(o));
  uint16_t port = a.listen("127.0.0.1", 0);

  auto t0 = MeshClock::now();
  {  // half a header before authenticating
    RawSocket raw(port);
    raw.read_exact(kChallengeFrameBytes);
    auto h = encode_frame_header(FrameType::auth_response, 64);
    raw.send_all(std::vector<uint8_t>(h.begin(), h.begin() + 6));
    raw.read_until_eof();
  }
  auto waited = MeshClock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 2000ms);
  EXPECT_TRUE(log.contains("stalled in the middle of a frame"));

  {  // authenticates properly, then stalls mid-frame
    RawSocket raw(port);
    auto bytes = raw.read_exact(kChallengeFrameBytes);
    FrameDecoder dec(FrameDecoder::Phase::handshake);
    dec.feed(bytes.data(), bytes.size());
    ASSERT_TRUE(dec.ready());
    Handshake me(AuthRole::initiator, secret_a());
    me.start();
    raw.send_all(encode_frame(*me.on_frame(dec.take())));
    auto confirm = raw.read_exact(kFrameHeaderSize + 32 + kAeadTagBytes);
    dec.feed(confirm.data(), confirm.size());
    ASSERT_TRUE(dec.ready());
    me.on_frame(dec.take());
    ASSERT_TRUE(me.done());
    ConnId id = wait_authenticated(a);
    auto frame = encode_frame({FrameType::control, pattern(1000, 5)});
    frame.resize(500);
    raw.send_all(frame);
    auto e = a.next_event(deadline_in(2000ms));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind, TransportEvent::Kind::closed);
    EXPECT_EQ(e->conn, id);
    EXPECT_NE(e->reason.find("stalled"), std::string::npos) << e->reason;
  }
  {  // never finishes the handshake at all (silent): the handshake timeout
    auto o2 = options(secret_a(), &log);
    o2.handshake_timeout = 150ms;
    Transport c(std::move(o2));
    uint16_t p2 = c.listen("127.0.0.1", 0);
    RawSocket raw(p2);
    auto start = MeshClock::now();
    raw.read_until_eof();
    EXPECT_LT(MeshClock::now() - start, 2000ms);
    EXPECT_TRUE(log.contains("no completed handshake"));
  }
}

TEST(DistTransport, BackpressureBlocksThenTimesOut) {
  auto ro = options(secret_a());
  ro.max_inbox_bytes = 256 << 10;
  auto so = options(secret_a());
  so.max_queued_bytes = 512 << 10;
  so.io_timeout = 10000ms;  // the send deadline, not the stall detector, must fire
  Transport receiver(std::move(ro)), sender(std::move(so));
  uint16_t port = receiver.listen("127.0.0.1", 0);
  ConnId c = sender.connect("127.0.0.1", port, deadline_in(3000ms));
  ConnId rc = wait_authenticated(receiver);

  const size_t frame_bytes = 256 << 10;
  int sent = 0;
  bool timed_out = false;
  auto start = MeshClock::now();
  for (int i = 0; i < 400 && !timed_out; ++i) {
    auto t0 = MeshClock::now();
    try {
      sender.send(c, {FrameType::data, pattern(frame_bytes, i)}, deadline_in(150ms));
      ++sent;
    } catch (const Error& e) {
      timed_out = true;
      EXPECT_GE(MeshClock::now() - t0, 140ms);  // it blocked until its deadline
      EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
    }
  }
  ASSERT_TRUE(timed_out) << "sent " << sent << " frames without blocking";
  EXPECT_LT(MeshClock::now() - start, 5000ms);
  EXPECT_TRUE(sender.is_open(c));  // a send timeout is not a connection failure

  // Draining the receiver lets the sender go on; every frame arrives in order.
  std::thread drain([&] {
    for (int i = 0; i < sent + 1; ++i) {
      auto m = receiver.recv(rc, deadline_in(5000ms));
      ASSERT_TRUE(m) << "frame " << i;
      ASSERT_EQ(m->frame.payload.size(), frame_bytes);
      if (i < sent) {
        EXPECT_EQ(m->frame.payload[0], pattern(1, i)[0]);
      }
    }
  });
  sender.send(c, {FrameType::data, pattern(frame_bytes, 999)}, deadline_in(5000ms));
  drain.join();
}

TEST(DistTransport, ShutdownWithOpenConnections) {
  auto start = MeshClock::now();
  {
    auto a = std::make_unique<Transport>(options(secret_a()));
    Transport b(options(secret_a()));
    uint16_t port = a->listen("127.0.0.1", 0);
    std::vector<ConnId> conns;
    for (int i = 0; i < 3; ++i) conns.push_back(b.connect("127.0.0.1", port, deadline_in(3000ms)));
    for (ConnId c : conns) b.send(c, {FrameType::data, pattern(1 << 20, 1)}, deadline_in(3000ms));
    // A recv blocked on b is woken when a shuts down with the connections open.
    std::thread waiter([&] { EXPECT_THROW(b.recv(conns[0], deadline_in(5000ms)), Error); });
    std::this_thread::sleep_for(20ms);
    a.reset();
    waiter.join();
  }  // b shuts down with closed connections and unread events
  EXPECT_LT(MeshClock::now() - start, 3000ms);
}

TEST(DistTransport, ConnectFailuresAreReported) {
  Transport a(options(secret_a()));
  uint16_t port;
  {
    Transport tmp(options(secret_a()));
    port = tmp.listen("127.0.0.1", 0);
  }  // now closed: connection refused
  EXPECT_THROW(a.connect("127.0.0.1", port, deadline_in(2000ms)), Error);
  EXPECT_THROW(a.connect("not-an-ip", 1, deadline_in(100ms)), Error);
  EXPECT_THROW(a.listen("127.0.0.1", a.listen("127.0.0.1", 0)), Error);  // port in use
}

// --- encrypted links under an on-path attacker ---------------------------------

namespace {

// A test-only relay between a dialler and a listener that forwards whole
// frames and does one thing to the dialler's `nth` application frame.
class TamperingRelay {
 public:
  enum class Attack { none, flip_byte, replay, drop, reorder, truncate };
  TamperingRelay(uint16_t target, Attack attack, int nth) : target_(target), attack_(attack), nth_(nth) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(lfd_, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TamperingRelay() {
    ::shutdown(lfd_, SHUT_RDWR);
    if (client_ >= 0) ::shutdown(client_, SHUT_RDWR);
    if (server_ >= 0) ::shutdown(server_, SHUT_RDWR);
    thread_.join();
    if (back_.joinable()) back_.join();
    for (int fd : {lfd_, client_, server_})
      if (fd >= 0) ::close(fd);
  }
  uint16_t port() const { return port_; }

 private:
  static bool read_all(int fd, uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t k = ::recv(fd, p, n, 0);
      if (k <= 0) return false;
      p += k;
      n -= static_cast<size_t>(k);
    }
    return true;
  }
  static void write_all(int fd, const std::vector<uint8_t>& b) { ::send(fd, b.data(), b.size(), MSG_NOSIGNAL); }

  void serve() {
    client_ = ::accept(lfd_, nullptr, nullptr);
    if (client_ < 0) return;
    server_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(target_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(server_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    back_ = std::thread([this] {  // listener -> dialler: untouched
      uint8_t buf[65536];
      for (;;) {
        ssize_t k = ::recv(server_, buf, sizeof buf, 0);
        if (k <= 0) break;
        ::send(client_, buf, static_cast<size_t>(k), MSG_NOSIGNAL);
      }
      ::shutdown(client_, SHUT_WR);
    });
    int app = 0;
    std::vector<uint8_t> held;  // reorder: the frame kept back
    for (;;) {
      std::vector<uint8_t> f(kFrameHeaderSize);
      if (!read_all(client_, f.data(), f.size())) break;
      const uint32_t len = f[8] | (f[9] << 8) | (f[10] << 16) | (static_cast<uint32_t>(f[11]) << 24);
      const uint16_t type = static_cast<uint16_t>(f[6] | (f[7] << 8));
      f.resize(kFrameHeaderSize + len);
      if (!read_all(client_, f.data() + kFrameHeaderSize, len)) break;
      if (type < 16 || app++ != nth_) {
        write_all(server_, f);
        if (!held.empty()) write_all(server_, held), held.clear();
        continue;
      }
      switch (attack_) {
        case Attack::none: write_all(server_, f); break;
        case Attack::flip_byte: f[kFrameHeaderSize + len / 2] ^= 0x20; write_all(server_, f); break;
        case Attack::replay: write_all(server_, f); write_all(server_, f); break;
        case Attack::drop: break;
        case Attack::reorder: held = f; break;
        case Attack::truncate:
          f.resize(kFrameHeaderSize + len / 2);
          write_all(server_, f);
          ::shutdown(server_, SHUT_WR);
          break;
      }
    }
    ::shutdown(server_, SHUT_WR);
  }

  uint16_t target_;
  Attack attack_;
  int nth_;
  int lfd_ = -1, client_ = -1, server_ = -1;
  uint16_t port_ = 0;
  std::thread thread_, back_;
};

}  // namespace

// Each end seals and opens with the library it was given (frame_cipher.h):
// OpenSSL at both, or libsodium at either end (the same bytes on the wire).
struct AeadPair {
  AeadLibrary receiver, sender;
};
constexpr AeadPair kAeadPairs[] = {{AeadLibrary::openssl, AeadLibrary::openssl},
                                   {AeadLibrary::libsodium, AeadLibrary::openssl},
                                   {AeadLibrary::openssl, AeadLibrary::libsodium}};

TransportOptions with_aead(TransportOptions o, AeadLibrary lib) {
  o.aead_library = lib;
  return o;
}

TEST(DistTransport, AnOnPathAttackerCannotAlterReplayReorderOrCutFrames) {
  using Attack = TamperingRelay::Attack;
  struct Case {
    Attack attack;
    const char* log;
    int genuine;  // frames after the first that are still delivered (a replay's original)
  };
  for (AeadPair libs : kAeadPairs)
  for (Case c : {Case{Attack::flip_byte, "does not authenticate", 0}, Case{Attack::replay, "does not authenticate", 1},
                 Case{Attack::drop, "does not authenticate", 0}, Case{Attack::reorder, "does not authenticate", 0},
                 Case{Attack::truncate, "middle of a frame", 0}}) {
    SCOPED_TRACE(str("attack ", static_cast<int>(c.attack), ", receiver ", aead_library_name(libs.receiver),
                     ", sender ", aead_library_name(libs.sender)));
    LogSink log;
    Transport a(with_aead(options(secret_a(), &log), libs.receiver)), b(with_aead(options(secret_a()), libs.sender));
    uint16_t port = a.listen("127.0.0.1", 0);
    TamperingRelay relay(port, c.attack, 1);
    ConnId ab = b.connect("127.0.0.1", relay.port(), deadline_in(3000ms));
    ConnId ba = wait_authenticated(a);
    for (uint32_t i = 0; i < 3; ++i) b.send(ab, {FrameType::data, pattern(4000, i)}, deadline_in(3000ms));
    auto first = a.recv(ba, deadline_in(3000ms));  // frame 0 passes untouched
    ASSERT_TRUE(first);
    EXPECT_EQ(first->frame.payload, pattern(4000, 0));
    // Nothing the attacker touched is delivered: the connection closes instead.
    std::string error;
    try {
      for (int i = 0; i < 3; ++i) {
        auto m = a.recv(ba, deadline_in(3000ms));
        ASSERT_TRUE(m) << "neither a frame nor a close within 3 s";
        if (i < c.genuine) {
          EXPECT_EQ(m->frame.payload, pattern(4000, 1 + i));
          continue;
        }
        ADD_FAILURE() << "delivered a frame after the attack, of " << m->frame.payload.size() << " bytes";
      }
    } catch (const Error& e) {
      error = e.what();
    }
    for (int i = 0; i < 200 && !log.contains(c.log); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(log.contains(c.log)) << error;
    for (int i = 0; i < 200 && a.is_open(ba); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(a.is_open(ba));
  }
  for (AeadPair libs : kAeadPairs) {  // the relay alone (no attack) changes nothing
    SCOPED_TRACE(str("receiver ", aead_library_name(libs.receiver), ", sender ", aead_library_name(libs.sender)));
    Transport a(with_aead(options(secret_a()), libs.receiver)), b(with_aead(options(secret_a()), libs.sender));
    uint16_t port = a.listen("127.0.0.1", 0);
    TamperingRelay relay(port, Attack::none, 1);
    ConnId ab = b.connect("127.0.0.1", relay.port(), deadline_in(3000ms));
    ConnId ba = wait_authenticated(a);
    for (uint32_t i = 0; i < 3; ++i) b.send(ab, {FrameType::data, pattern(4000, i)}, deadline_in(3000ms));
    for (uint32_t i = 0; i < 3; ++i) {
      auto m = a.recv(ba, deadline_in(3000ms));
      ASSERT_TRUE(m);
      EXPECT_EQ(m->frame.payload, pattern(4000, i));
    }
  }
}

// bench_allreduce --plaintext's transports: two unsealed ends exchange
// frames as they are (the bytes on the wire are the payload: a relay that
// flips one gets it through altered, which a sealed pair refuses above),
// and an unsealed end and a sealed one never connect, whichever dials.
TEST(DistTransport, UnsealedFramesForBenchmarksGoAsTheyAreAndOnlyBetweenEndsSetAlike) {
  using Attack = TamperingRelay::Attack;
  auto unsealed = [](PeerCredentials c, LogSink* sink = nullptr) {
    TransportOptions o = options(std::move(c), sink);
    o.unsealed_frames_for_benchmarks = true;
    return o;
  };
  {
    LogSink log;
    Transport a(unsealed(secret_a(), &log)), b(unsealed(secret_a()));
    EXPECT_TRUE(log.contains("BENCHMARK-ONLY MODE"));
    uint16_t port = a.listen("127.0.0.1", 0);
    TamperingRelay relay(port, Attack::flip_byte, 1);
    ConnId ab = b.connect("127.0.0.1", relay.port(), deadline_in(3000ms));
    ConnId ba = wait_authenticated(a);
    EXPECT_FALSE(b.suite(ab).has_value()) << "an unsealed connection reports no cipher suite";
    for (uint32_t i = 0; i < 3; ++i) b.send(ab, {FrameType::data, pattern(4000, i)}, deadline_in(3000ms));
    a.send(ba, {FrameType::control, pattern(100, 9)}, deadline_in(3000ms));
    for (uint32_t i = 0; i < 3; ++i) {
      auto m = a.recv(ba, deadline_in(3000ms));
      ASSERT_TRUE(m);
      ASSERT_EQ(m->frame.payload.size(), 4000u) << "no tag: the frame is exactly its payload";
      std::vector<uint8_t> want = pattern(4000, i);
      if (i == 1) want[2000] ^= 0x20;  // what the relay did, delivered: nothing authenticates frames here
      EXPECT_EQ(m->frame.payload, want) << "frame " << i;
    }
    auto back = b.recv(ab, deadline_in(3000ms));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->frame.payload, pattern(100, 9));
  }
  Keys ka, kb;
  for (const bool keyed : {true, false}) {
    SCOPED_TRACE(keyed ? "node keys" : "shared secret");
    const PeerCredentials ca = keyed ? PeerCredentials::keyed(ka.key, admit_only({kb.pk()})) : secret_a();
    const PeerCredentials cb = keyed ? PeerCredentials::keyed(kb.key, admit_only({ka.pk()})) : secret_a();
    for (const bool listener_unsealed : {true, false}) {
      SCOPED_TRACE(listener_unsealed ? "unsealed listener, sealed dialler" : "sealed listener, unsealed dialler");
      Transport a(listener_unsealed ? unsealed(ca) : options(ca));
      Transport b(listener_unsealed ? options(cb) : unsealed(cb));
      uint16_t port = a.listen("127.0.0.1", 0);
      try {
        b.connect("127.0.0.1", port, deadline_in(3000ms));
        ADD_FAILURE() << "a sealed and an unsealed end connected";
      } catch (const AuthenticationFailed& e) {
        EXPECT_TRUE(has(e.what(), "unsealed_frames_for_benchmarks")) << e.what();
        EXPECT_TRUE(has(e.what(), listener_unsealed ? "the peer declares unsealed frames" : "but the peer seals"))
            << e.what();
      }
      EXPECT_FALSE(a.next_event(deadline_in(200ms)).has_value()) << "the listener announced a connection";
    }
  }
}

TEST(DistTransport, NodeKeysAdmitListedPeersAndRefuseOthersAndTheSharedSecret) {
  Keys a, b, stranger;
  LogSink log;
  Transport ta(options(PeerCredentials::keyed(a.key, admit_only({b.pk()})), &log));
  Transport tb(options(PeerCredentials::keyed(b.key, admit_only({a.pk()}))));
  uint16_t port = ta.listen("127.0.0.1", 0);
  ConnId ab = tb.connect("127.0.0.1", port, deadline_in(3000ms));
  auto e = ta.next_event(deadline_in(3000ms));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->peer_key, b.pk());
  EXPECT_EQ(tb.peer_key(ab), a.pk());
  EXPECT_TRUE(tb.suite(ab).has_value());
  tb.send(ab, {FrameType::control, pattern(50, 1)}, deadline_in(3000ms));
  auto m = ta.recv(e->conn, deadline_in(3000ms));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->frame.payload, pattern(50, 1));

  // A key not on the allowlist.
  Transport ts(options(PeerCredentials::keyed(stranger.key, admit_only({a.pk()}))));
  try {
    ts.connect("127.0.0.1", port, deadline_in(3000ms));
    ADD_FAILURE() << "an unknown key connected";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "during the handshake")) << e.what();
  }
  for (int i = 0; i < 100 && !log.contains(fingerprint(stranger.pk())); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(log.contains(fingerprint(stranger.pk()) + " is not admitted"));
  // A node with only the shared secret: refused before it learns anything.
  Transport tsecret(options(secret_a()));
  try {
    tsecret.connect("127.0.0.1", port, deadline_in(3000ms));
    ADD_FAILURE() << "a shared-secret node connected to a keyed run";
  } catch (const AuthenticationFailed& e) {
    EXPECT_TRUE(has(e.what(), "mesh.node_key_file")) << e.what();
  }
}

// --- sealed frames opened on several threads (frame_openers.h) -----------------

TEST(FrameOpeners, RunsJobsConcurrentlyAndFallsBackToTheCallerWhenFullOrStopped) {
  const auto caller = std::this_thread::get_id();
  {  // 0 threads: every job on the caller's thread, at once
    FrameOpeners none(0);
    std::thread::id ran_on;
    none.run([&] { ran_on = std::this_thread::get_id(); });
    EXPECT_EQ(ran_on, caller);
  }
  FrameOpeners pool(4);
  ASSERT_EQ(pool.threads(), 4u);
  // Four jobs that each wait for all four to have started: they complete only
  // if four workers run them at the same time.
  std::mutex mu;
  std::condition_variable cv;
  int started = 0, finished = 0;
  std::set<std::thread::id> threads;
  for (int i = 0; i < 4; ++i)
    pool.run([&] {
      std::unique_lock lk(mu);
      ++started;
      threads.insert(std::this_thread::get_id());
      cv.notify_all();
      if (cv.wait_for(lk, 5s, [&] { return started == 4; })) ++finished;
      cv.notify_all();
    });
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return finished == 4; })) << "only " << started << " ran at once";
    EXPECT_EQ(threads.size(), 4u);
    EXPECT_EQ(threads.count(caller), 0u);
  }
  // Workers held up: the queue fills to its cap, and the next job runs on the
  // caller's thread instead of growing the queue.
  bool release = false;
  int blocked = 0;
  for (int i = 0; i < 4; ++i)
    pool.run([&] {
      std::unique_lock lk(mu);
      ++blocked;
      cv.notify_all();
      cv.wait_for(lk, 10s, [&] { return release; });
    });
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return blocked == 4; }));
  }
  std::atomic<size_t> queued_ran{0};
  for (size_t i = 0; i < FrameOpeners::kMaxQueuedJobs; ++i) pool.run([&] { ++queued_ran; });
  std::thread::id overflow_on;
  pool.run([&] { overflow_on = std::this_thread::get_id(); });
  EXPECT_EQ(overflow_on, caller);
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  for (int i = 0; i < 500 && queued_ran < FrameOpeners::kMaxQueuedJobs; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(queued_ran.load(), FrameOpeners::kMaxQueuedJobs);
  pool.stop();
  std::thread::id after_stop;
  pool.run([&] { after_stop = std::this_thread::get_id(); });
  EXPECT_EQ(after_stop, caller);
  EXPECT_GE(FrameOpeners::default_threads(), 2u);
  EXPECT_LE(FrameOpeners::default_threads(), 8u);
}

namespace {

TransportOptions with_openers(PeerCredentials s, int openers, LogSink* sink = nullptr) {
  TransportOptions o = options(std::move(s), sink);
  o.frame_openers = openers;
  o.io_timeout = 10000ms;
  return o;
}

// Frame i of connection k: its size and bytes depend on both, so a frame
// delivered on the wrong connection, out of order or altered is seen.
Frame numbered_frame(uint32_t k, uint32_t i) {
  const size_t size = i % 17 == 0 ? (1 << 20) + i : (i * 7919u + k * 104729u) % (48 << 10);
  return {i % 5 == 0 ? FrameType::control : FrameType::data,
          pattern(i % 5 == 0 ? std::min<size_t>(size, 64 << 10) : size, k * 100000 + i)};
}

// Receives frames 1..n-1 of connection k (frame 0, which named k, was
// taken) and checks each; returns how many were right, in order.
uint32_t receive_numbered(Transport& t, ConnId conn, uint32_t k, uint32_t n) {
  for (uint32_t i = 1; i < n; ++i) {
    auto m = t.recv(conn, deadline_in(20000ms));
    if (!m) {
      ADD_FAILURE() << "connection " << k << ": frame " << i << " did not arrive";
      return i - 1;
    }
    const Frame want = numbered_frame(k, i);
    if (m->frame.type != want.type || m->frame.payload != want.payload) {
      ADD_FAILURE() << "connection " << k << ": frame " << i << " is not the one sent (" << m->frame.payload.size()
                    << " bytes, want " << want.payload.size() << ")";
      return i - 1;
    }
  }
  return n - 1;
}

// `senders` connections into `receiver`; returns, for each, the receiver's
// ConnId and the sender's, by connection number k (sent as frame 0).
struct Links {
  std::vector<ConnId> at_receiver, at_sender;
};
Links connect_numbered(Transport& receiver, Transport& sender, uint16_t port, uint32_t count) {
  Links l;
  l.at_receiver.resize(count);
  for (uint32_t k = 0; k < count; ++k) {
    ConnId c = sender.connect("127.0.0.1", port, deadline_in(5000ms));
    l.at_sender.push_back(c);
    ByteWriter w;
    w.u32(k);
    sender.send(c, {FrameType::control, w.take()}, deadline_in(5000ms));
  }
  for (uint32_t j = 0; j < count; ++j) {
    ConnId rc = wait_authenticated(receiver);
    auto first = receiver.recv(rc, deadline_in(5000ms));
    EXPECT_TRUE(first && first->frame.payload.size() == 4);
    if (!first || first->frame.payload.size() != 4) continue;
    ByteReader r(first->frame.payload);
    const uint32_t k = r.u32("connection number");
    EXPECT_LT(k, count);
    if (k < count) l.at_receiver[k] = rc;
  }
  return l;
}

}  // namespace

// Many connections, many frames at once, frames of every size: with a pool
// of openers each connection's frames still arrive in order and intact, as
// with the loop thread opening them (0) or one opener.
TEST(DistTransport, OpenersKeepEveryConnectionsOrderAndBytes) {
  constexpr uint32_t kConns = 8, kFrames = 120;
  for (int openers : {4, 1, 0}) {
    SCOPED_TRACE(str(openers, " openers"));
    Transport receiver(with_openers(secret_a(), openers));
    Transport sender(with_openers(secret_a(), openers));
    const uint16_t port = receiver.listen("127.0.0.1", 0);
    Links l = connect_numbered(receiver, sender, port, kConns);
    std::vector<std::thread> threads;
    std::vector<uint32_t> good(kConns, 0);
    for (uint32_t k = 0; k < kConns; ++k) {
      threads.emplace_back([&, k] {
        for (uint32_t i = 1; i < kFrames; ++i) sender.send(l.at_sender[k], numbered_frame(k, i), deadline_in(20000ms));
      });
      threads.emplace_back([&, k] { good[k] = receive_numbered(receiver, l.at_receiver[k], k, kFrames); });
    }
    for (auto& th : threads) th.join();
    for (uint32_t k = 0; k < kConns; ++k) EXPECT_EQ(good[k], kFrames - 1) << "connection " << k;
    for (uint32_t k = 0; k < kConns; ++k) EXPECT_TRUE(receiver.is_open(l.at_receiver[k]));
  }
}

// An attacker on one of several busy connections: that one closes with the
// reason logged, after delivering exactly the frames before the attack;
// the others deliver every frame and stay open.
TEST(DistTransport, AnAttackOnOneConnectionClosesOnlyThatOneWhileOpenersServeTheOthers) {
  using Attack = TamperingRelay::Attack;
  constexpr uint32_t kConns = 4, kFrames = 60, kAttacked = 20;
  for (Attack attack : {Attack::flip_byte, Attack::replay, Attack::reorder}) {
    SCOPED_TRACE(static_cast<int>(attack));
    LogSink log;
    Transport receiver(with_openers(secret_a(), 4, &log));
    Transport sender(with_openers(secret_a(), 4));
    const uint16_t port = receiver.listen("127.0.0.1", 0);
    Links l = connect_numbered(receiver, sender, port, kConns);
    // The attacked connection, through the relay (its frame 0 is untouched).
    TamperingRelay relay(port, attack, static_cast<int>(kAttacked));
    const ConnId bad_s = sender.connect("127.0.0.1", relay.port(), deadline_in(5000ms));
    const ConnId bad_r = wait_authenticated(receiver);
    std::vector<std::thread> threads;
    std::vector<uint32_t> good(kConns, 0);
    for (uint32_t k = 0; k < kConns; ++k) {
      threads.emplace_back([&, k] {
        for (uint32_t i = 1; i < kFrames; ++i) sender.send(l.at_sender[k], numbered_frame(k, i), deadline_in(20000ms));
      });
      threads.emplace_back([&, k] { good[k] = receive_numbered(receiver, l.at_receiver[k], k, kFrames); });
    }
    threads.emplace_back([&] {
      try {
        for (uint32_t i = 0; i < kFrames; ++i) sender.send(bad_s, numbered_frame(99, i), deadline_in(20000ms));
      } catch (const Error&) {  // the receiver closed it: the relay's side ends too
      }
    });
    // Frames 0..kAttacked-1 arrive (a replay's original too), then the close.
    const uint32_t genuine = kAttacked + (attack == Attack::replay ? 1 : 0);
    uint32_t delivered = 0;
    std::string error;
    try {
      for (uint32_t i = 0; i <= kFrames; ++i) {
        auto m = receiver.recv(bad_r, deadline_in(20000ms));
        ASSERT_TRUE(m) << "neither a frame nor a close";
        ASSERT_LT(i, genuine) << "delivered a frame after the attack";
        EXPECT_EQ(m->frame.payload, numbered_frame(99, i).payload) << i;
        ++delivered;
      }
    } catch (const Error& e) {
      error = e.what();
    }
    EXPECT_EQ(delivered, genuine);
    EXPECT_TRUE(has(error, "does not authenticate")) << error;
    // The log names the frame that failed: the attacked one, or the replay
    // that came after its original.
    const std::string named = str("frame ", genuine, " (");
    for (int i = 0; i < 200 && !log.contains(named); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(log.contains(named));
    for (auto& th : threads) th.join();
    for (uint32_t k = 0; k < kConns; ++k) {
      EXPECT_EQ(good[k], kFrames - 1) << "connection " << k;
      EXPECT_TRUE(receiver.is_open(l.at_receiver[k])) << "connection " << k;
    }
    EXPECT_FALSE(receiver.is_open(bad_r));
    // The others go on.
    sender.send(l.at_sender[0], {FrameType::control, pattern(10, 7)}, deadline_in(5000ms));
    auto after = receiver.recv(l.at_receiver[0], deadline_in(5000ms));
    ASSERT_TRUE(after);
    EXPECT_EQ(after->frame.payload, pattern(10, 7));
  }
}

// A connection that closes, from either end, while its frames wait for or
// sit on an opener: the frames that arrived before the close are delivered
// intact and in order, then recv() reports the close; and a transport
// destroyed with frames on its openers shuts down cleanly (no use after
// free: run under ASan/TSan).
TEST(DistTransport, ClosingWhileFramesAreBeingOpened) {
  constexpr uint32_t kFrames = 48;
  auto big = [](uint32_t i) { return Frame{FrameType::data, pattern((1 << 20) + i, 5000 + i)}; };
  for (bool peer_closes : {true, false}) {
    SCOPED_TRACE(peer_closes ? "the peer closes" : "this end closes");
    Transport receiver(with_openers(secret_a(), 1));
    Transport sender(with_openers(secret_a(), 2));
    const uint16_t port = receiver.listen("127.0.0.1", 0);
    const ConnId s = sender.connect("127.0.0.1", port, deadline_in(5000ms));
    const ConnId r = wait_authenticated(receiver);
    for (uint32_t i = 0; i < kFrames; ++i) sender.send(s, big(i), deadline_in(20000ms));
    if (peer_closes) {
      sender.close(s, "test: closing with frames in flight");
    } else {
      // Wait until the first frame is in, so some are surely being opened.
      auto m = receiver.recv(r, deadline_in(20000ms));
      ASSERT_TRUE(m);
      EXPECT_EQ(m->frame.payload, big(0).payload);
      receiver.close(r, "test: closing while frames are opened");
    }
    uint32_t i = peer_closes ? 0 : 1;
    std::string error;
    try {
      for (; i <= kFrames; ++i) {
        auto m = receiver.recv(r, deadline_in(20000ms));
        ASSERT_TRUE(m) << "neither a frame nor a close";
        ASSERT_LT(i, kFrames);
        ASSERT_EQ(m->frame.payload, big(i).payload) << "frame " << i;
      }
    } catch (const Error& e) {
      error = e.what();
    }
    EXPECT_FALSE(error.empty());
    // The peer's close is graceful: every frame was sent before it. This end
    // closing may cut the stream; whatever was delivered was a prefix.
    if (peer_closes) {
      EXPECT_EQ(i, kFrames) << error;
    }
    EXPECT_FALSE(receiver.is_open(r));
  }
  for (int openers : {1, 4}) {  // destroyed with frames queued and being opened
    auto receiver = std::make_unique<Transport>(with_openers(secret_a(), openers));
    Transport sender(with_openers(secret_a(), 2));
    const uint16_t port = receiver->listen("127.0.0.1", 0);
    std::vector<ConnId> conns;
    for (int c = 0; c < 3; ++c) conns.push_back(sender.connect("127.0.0.1", port, deadline_in(5000ms)));
    for (uint32_t i = 0; i < 16; ++i)
      for (ConnId c : conns) sender.send(c, big(i), deadline_in(20000ms));
    ConnId r = wait_authenticated(*receiver);
    auto m = receiver->recv(r, deadline_in(20000ms));  // opening has begun
    ASSERT_TRUE(m);
    const auto start = MeshClock::now();
    receiver.reset();
    EXPECT_LT(MeshClock::now() - start, 5000ms);
  }
}
