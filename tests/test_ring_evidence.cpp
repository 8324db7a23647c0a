// Signed ring messages and the evidence of an accusation (ring_evidence.h):
// what a successor hands the coordinator, and how the coordinator judges it.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/control.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_evidence.h"
#include "mem_ring.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using memring::Ring;
using namespace std::chrono_literals;

struct SignedRun {
  std::vector<std::vector<float>> out;
  std::vector<std::string> errors;
  std::vector<std::vector<std::vector<uint8_t>>> evidence;  // by rank: what it would hand over
  std::vector<int> offender;
  std::vector<std::vector<std::vector<uint8_t>>> received;  // by rank: every message it received
};

struct Keys {
  std::vector<NodeKey> keys;
  explicit Keys(int n) {
    for (int i = 0; i < n; ++i) keys.push_back(NodeKey::generate());
  }
  const NodeKey& of(int r) const { return keys[static_cast<size_t>(r)]; }
};

RingOptions options(Compression c) {
  RingOptions o;
  o.round = 23;
  o.compression = c;
  o.chunk_elems = 1000;
  o.int8_block = 256;
  o.message_timeout = 5s;
  return o;
}

std::vector<double> norms_of(const std::vector<std::vector<float>>& in) {
  std::vector<double> n;
  for (const auto& v : in) n.push_back(announce_contribution(v, 2).norm);
  return n;
}

// Every rank signs with its own key and knows its predecessor's (keys
// empty: nobody signs). The links record what each rank receives.
SignedRun run_signed(const std::vector<std::vector<float>>& in, RingOptions base, const Keys* keys,
                     int false_accuser = -1, int mode = 1) {
  const int n = static_cast<int>(in.size());
  Ring ring(n);
  memring::ReceivedLog log(ring);
  memring::RingRun run = memring::run_ring(ring, in, base, [&](int r, RingOptions& o) {
    if (keys) {
      o.signer = &keys->of(r);
      o.prev_key = keys->of((r + n - 1) % n).public_key();
    }
    if (r == false_accuser) o.attack_false_accusation = mode;
  });
  memring::Accusations acc = memring::accusations_of(run);
  return SignedRun{std::move(run.out), std::move(run.errors), std::move(acc.evidence), std::move(acc.offender),
                   std::move(log.received)};
}

EvidenceContext context(const RingOptions& o, int accuser, int world, const std::vector<double>& norms) {
  EvidenceContext c;
  c.round = o.round;
  c.accuser_rank = accuser;
  c.world = world;
  c.norms = norms;
  c.slack = o.norm_slack;
  return c;
}

TEST(RingEvidence, SignedHonestRingsPassAndAverageAsUnsignedOnes) {
  for (Compression c : {Compression::None, Compression::Int8})
    for (int n : {2, 3, 5}) {
      SCOPED_TRACE(str(compression_name(c), " N=", n));
      const auto in = test::rank_inputs(n, 5003, 40 + n);
      RingOptions o = options(c);
      o.announced_norms = norms_of(in);
      const Keys keys(n);
      const SignedRun plain = run_signed(in, o, nullptr), sig = run_signed(in, o, &keys);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(sig.errors[r], "") << "rank " << r;
        EXPECT_EQ(sig.out[r], plain.out[r]) << "rank " << r;  // signing changes no value
        // Every first-hop message a rank received carries its
        // predecessor's signature; the others carry none.
        ASSERT_FALSE(sig.received[r].empty());
        ASSERT_EQ(plain.received[r].size(), sig.received[r].size());
        size_t signed_ones = 0;
        for (size_t i = 0; i < sig.received[r].size(); ++i) {
          const auto& m = sig.received[r][i];
          const RingHeader h = parse_ring_header(m, "m");
          EXPECT_EQ(h.is_signed, h.phase == 0 && h.step == 0);
          if (!h.is_signed) {
            EXPECT_EQ(m.size(), plain.received[r][i].size());
            continue;
          }
          ++signed_ones;
          EXPECT_EQ(m.size(), plain.received[r][i].size() + kRingSignatureBytes);
          EXPECT_TRUE(ring_message_signed_by(m, keys.of((r + n - 1) % n).public_key()));
          EXPECT_FALSE(ring_message_signed_by(m, keys.of(r).public_key()));
        }
        EXPECT_GT(signed_ones, 0u);
      }
    }
}

TEST(RingEvidence, ASignedAndAnUnsignedPeerRefuseEachOther) {
  const auto in = test::rank_inputs(2, 3000, 5);
  RingOptions o = options(Compression::Int8);
  const Keys keys(2);
  Ring ring(2);
  std::string errors[2];
  std::thread t([&] {
    RingOptions a = o;
    a.rank = 0, a.world = 2, a.signer = &keys.of(0);
    std::vector<float> out(in[0].size());
    try {
      ring_allreduce_average(*ring.links[0], a, in[0], out);
    } catch (const Error& e) {
      errors[0] = e.what();
    }
  });
  RingOptions b = o;
  b.rank = 1, b.world = 2;
  std::vector<float> out(in[1].size());
  try {
    ring_allreduce_average(*ring.links[1], b, in[1], out);
  } catch (const Error& e) {
    errors[1] = e.what();
  }
  t.join();
  // Whichever sees the other's first message first names the mismatch; the other then loses its link.
  EXPECT_TRUE(errors[0].find("signs its ring messages") != std::string::npos ||
              errors[1].find("signs its ring messages") != std::string::npos)
      << errors[0] << "\n" << errors[1];
  EXPECT_NE(errors[0], "");
  EXPECT_NE(errors[1], "");
}

// A true accusation: the successor of a node that sends more than it
// announced hands over its signed messages, and they hold with its key.
TEST(RingEvidence, ATrueAccusationCarriesEvidenceThatHolds) {
  for (Compression c : {Compression::None, Compression::Int8})
    for (int n : {2, 3, 5})
      for (double scale : {100.0, 3.0}) {
        SCOPED_TRACE(str(compression_name(c), " N=", n, " scale ", scale));
        auto in = test::rank_inputs(n, 5003, 70 + n);
        RingOptions o = options(c);
        o.announced_norms = norms_of(in);
        const int liar = n - 1;
        for (float& v : in[liar]) v = static_cast<float>(v * scale);
        const Keys keys(n);
        const SignedRun res = run_signed(in, o, &keys);
        ASSERT_EQ(res.offender[0], liar) << res.errors[0];
        ASSERT_FALSE(res.evidence[0].empty()) << res.errors[0];
        EXPECT_NE(res.errors[0].find("evidence: "), std::string::npos) << res.errors[0];
        const EvidenceContext ctx = context(o, 0, n, o.announced_norms);
        const EvidenceVerdict v = judge_ring_evidence(res.evidence[0], keys.of(liar).public_key(), ctx);
        EXPECT_TRUE(v.holds) << v.why;
        // The same messages do not hold against anyone else's key...
        EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(0).public_key(), ctx).holds);
        // ...nor for another round, or from a rank that never received them.
        EvidenceContext other = ctx;
        other.round += 1;
        EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(liar).public_key(), other).holds);
        if (n > 2) {
          other = ctx;
          other.accuser_rank = 1;
          EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(liar).public_key(), other).holds);
        }
      }
}

// Evidence altered in any byte (the payload, the header, the signature) no
// longer holds: only the accused could have produced it.
TEST(RingEvidence, EvidenceWithABadSignatureIsRefused) {
  const int n = 3;
  auto in = test::rank_inputs(n, 5003, 9);
  RingOptions o = options(Compression::Int8);
  o.announced_norms = norms_of(in);
  for (float& v : in[2]) v *= 100.0f;
  const Keys keys(n);
  const SignedRun res = run_signed(in, o, &keys);
  ASSERT_FALSE(res.evidence[0].empty()) << res.errors[0];
  const EvidenceContext ctx = context(o, 0, n, o.announced_norms);
  const PublicKey pk = keys.of(2).public_key();
  ASSERT_TRUE(judge_ring_evidence(res.evidence[0], pk, ctx).holds);
  const size_t len = res.evidence[0][0].size();
  for (size_t at : {size_t{9}, size_t{40}, kRingHeaderBytes + 3, len / 2, len - kRingSignatureBytes - 1, len - 1}) {
    auto bad = res.evidence[0];
    bad[0][at] ^= 0x10;
    const EvidenceVerdict v = judge_ring_evidence(bad, pk, ctx);
    EXPECT_FALSE(v.holds) << "byte " << at;
  }
  // The same message twice would count twice.
  auto twice = res.evidence[0];
  twice.push_back(twice[0]);
  EXPECT_FALSE(judge_ring_evidence(twice, pk, ctx).holds);
  EXPECT_FALSE(judge_ring_evidence({}, pk, ctx).holds);
  // Unsigned messages prove nothing.
  const SignedRun plain = run_signed(in, o, nullptr);
  ASSERT_FALSE(plain.received[0].empty());
  EXPECT_FALSE(judge_ring_evidence({plain.received[0][0]}, pk, ctx).holds);
}

// A false accusation: honest messages, whatever an accuser picks of them,
// stay within the announced bound, so the coordinator refuses the accuser.
TEST(RingEvidence, HonestMessagesDoNotProveAnAccusation) {
  for (int n : {2, 3, 5}) {
    SCOPED_TRACE(str("N=", n));
    const auto in = test::rank_inputs(n, 5003, 90 + n);
    RingOptions o = options(Compression::Int8);
    o.announced_norms = norms_of(in);
    const Keys keys(n);
    const SignedRun res = run_signed(in, o, &keys);
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(res.errors[r], "");
      const int prev = (r + n - 1) % n;
      const EvidenceContext ctx = context(o, r, n, o.announced_norms);
      // Each message alone, and each step's messages together.
      std::map<std::pair<uint8_t, uint32_t>, std::vector<std::vector<uint8_t>>> by_step;
      for (const auto& m : res.received[r]) {
        const EvidenceVerdict v = judge_ring_evidence({m}, keys.of(prev).public_key(), ctx);
        EXPECT_FALSE(v.holds) << v.why;
        const RingHeader h = parse_ring_header(m, "m");
        by_step[{h.phase, h.step}].push_back(m);
      }
      for (const auto& [step, ms] : by_step) {
        const EvidenceVerdict v = judge_ring_evidence(ms, keys.of(prev).public_key(), ctx);
        EXPECT_FALSE(v.holds) << v.why;
        // The signed ones are within the bound; the rest are not signed at all.
        EXPECT_NE(v.why.find(step == std::make_pair(uint8_t{0}, uint32_t{0}) ? "within the" : "not signed"),
                  std::string::npos)
            << v.why;
      }
    }
  }
}

// The false accuser's own ring: it hands over what its predecessor honestly
// sent (or that with a forged signature); neither holds.
TEST(RingEvidence, AFalseAccusersEvidenceDoesNotHold) {
  for (int mode : {1, 2}) {
    const int n = 3;
    const auto in = test::rank_inputs(n, 5003, 30);
    RingOptions o = options(Compression::Int8);
    o.announced_norms = norms_of(in);
    const Keys keys(n);
    const SignedRun res = run_signed(in, o, &keys, /*false_accuser=*/1, mode);
    ASSERT_EQ(res.offender[1], 0) << res.errors[1] << "\n" << res.errors[0] << "\n" << res.errors[2];
    ASSERT_EQ(res.evidence[1].size(), 1u);
    const EvidenceVerdict v = judge_ring_evidence(res.evidence[1], keys.of(0).public_key(), context(o, 1, n, o.announced_norms));
    EXPECT_FALSE(v.holds);
    EXPECT_NE(v.why.find(mode == 1 ? "within the" : "signature"), std::string::npos) << v.why;
  }
}

// An accusation's evidence travels in RingFailed; the decoder caps it.
TEST(RingEvidence, RingFailedCarriesEvidenceWithinItsCaps) {
  control::RingFailed f{3, 7, 11, "too much", 0, 5, {}};
  f.evidence = {std::vector<uint8_t>(100, 1), std::vector<uint8_t>(3, 2)};
  const std::vector<uint8_t> wire = control::encode(f);
  const auto back = std::get<control::RingFailed>(control::decode(wire, "test"));
  EXPECT_EQ(back.evidence, f.evidence);
  EXPECT_EQ(back.accused, 5u);
  // Evidence without an accused, too many messages, truncated: refused.
  control::RingFailed nobody = f;
  nobody.accused = 0;
  EXPECT_THROW(control::decode(control::encode(nobody), "test"), Error);
  control::RingFailed many = f;
  many.evidence.assign(kMaxEvidenceMessages + 1, std::vector<uint8_t>(1, 0));
  EXPECT_THROW(control::decode(control::encode(many), "test"), Error);
  for (size_t cut = 1; cut < 110; cut += 7) {
    std::vector<uint8_t> t(wire.begin(), wire.end() - static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(control::decode(t, "test"), Error) << cut;
  }
  // A length past the cap is refused before anything is copied.
  std::vector<uint8_t> huge = control::encode(control::RingFailed{3, 7, 11, "x", 0, 5, {}});
  huge.resize(huge.size() - 4);
  const uint32_t one = 1, big = static_cast<uint32_t>(kMaxEvidenceBytes + 1);
  huge.insert(huge.end(), reinterpret_cast<const uint8_t*>(&one), reinterpret_cast<const uint8_t*>(&one) + 4);
  huge.insert(huge.end(), reinterpret_cast<const uint8_t*>(&big), reinterpret_cast<const uint8_t*>(&big) + 4);
  EXPECT_THROW(control::decode(huge, "test"), Error);
}

}  // namespace
}  // namespace intellect
