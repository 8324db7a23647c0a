// The commitment audit (commitment.h): a ring successor checks each step-0
// message against the leaves its sender committed to before the ring, and
// a mismatch is blamed on the sender with evidence the coordinator checks.
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/commitment.h"
#include "dist/contribution_check.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_evidence.h"
#include "mem_ring.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using memring::Ring;
using namespace std::chrono_literals;

struct AuditRun {
  std::vector<std::vector<float>> out;
  std::vector<std::string> errors;
  std::vector<std::vector<std::vector<uint8_t>>> evidence;
  std::vector<int> offender;
  std::vector<std::vector<std::vector<uint8_t>>> received;
};

RingOptions options(Compression c) {
  RingOptions o;
  o.round = 31;
  o.compression = c;
  o.chunk_elems = 1000;
  o.int8_block = 256;
  o.message_timeout = 5s;
  return o;
}

CommitLayout layout_of(const RingOptions& o) {
  CommitLayout l;
  l.compression = o.compression;
  l.block = o.compression == Compression::None ? 0 : o.int8_block;
  l.chunk = o.chunk_elems;
  l.lanes = 1;
  return l;
}

// `sent` is what each rank sends; `committed` what it committed to.
// `announced` (default: `committed`) is what each rank's announced root is of.
AuditRun run_audited(const std::vector<std::vector<float>>& sent, const std::vector<std::vector<float>>& committed,
                     RingOptions base, const std::vector<NodeKey>* keys,
                     const std::vector<std::vector<float>>* announced = nullptr) {
  const int n = static_cast<int>(sent.size());
  std::vector<LeafCommitment> commits;
  RingAudit audit;
  for (int r = 0; r < n; ++r) {
    commits.push_back(commit_leaves(committed[r], layout_of(base), 2));
    audit.roots.push_back(announced ? commit_leaves((*announced)[r], layout_of(base), 2).root : commits.back().root);
  }
  std::vector<RingAudit> audits(n, audit);
  for (int r = 0; r < n; ++r) audits[r].own = &commits[r];
  base.announced_norms.clear();
  for (const auto& v : sent) base.announced_norms.push_back(announce_contribution(v, 2).norm);
  Ring ring(n);
  memring::ReceivedLog log(ring);
  memring::RingRun run = memring::run_ring(ring, sent, base, [&](int r, RingOptions& o) {
    o.audit = &audits[r];
    if (keys) {
      o.signer = &(*keys)[r];
      o.prev_key = (*keys)[(r + n - 1) % n].public_key();
    }
  });
  memring::Accusations acc = memring::accusations_of(run);
  return AuditRun{std::move(run.out), std::move(run.errors), std::move(acc.evidence), std::move(acc.offender),
                  std::move(log.received)};
}

std::vector<NodeKey> keys_for(int n) {
  std::vector<NodeKey> k;
  for (int i = 0; i < n; ++i) k.push_back(NodeKey::generate());
  return k;
}

TEST(CommitmentAudit, HonestRingsPassWithTwoThreeAndFiveRanks) {
  for (Compression c : {Compression::None, Compression::Int8, Compression::Int4})
    for (int n : {2, 3, 5}) {
      SCOPED_TRACE(str(compression_name(c), " N=", n));
      RingOptions o = options(c);
      if (c == Compression::Int4) o.int8_block = 64;
      const auto in = test::rank_inputs(n, 7001, 50 + n);
      const auto keys = keys_for(n);
      const AuditRun res = run_audited(in, in, o, &keys);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(res.errors[r], "") << "rank " << r;
        EXPECT_EQ(res.out[r], res.out[0]);
        // First hops signed with the committed leaf's digest verify as any other.
        for (const auto& m : res.received[r]) {
          if (!is_leaf_message(m) && parse_ring_header(m, "m").is_signed) {
            EXPECT_TRUE(ring_message_signed_by(m, keys[(r + n - 1) % n].public_key()));
          }
        }
        // Each lane opened with a leaf message from the predecessor.
        ASSERT_FALSE(res.received[r].empty());
        EXPECT_TRUE(is_leaf_message(res.received[r][0]));
      }
      // The average is still the average.
      double err = 0, ref = 0;
      for (size_t i = 0; i < in[0].size(); ++i) {
        double m = 0;
        for (int r = 0; r < n; ++r) m += in[r][i];
        m /= n;
        err += (res.out[0][i] - m) * (res.out[0][i] - m);
        ref += m * m;
      }
      if (c != Compression::Int4) {
        EXPECT_LT(std::sqrt(err / ref), c == Compression::None ? 1e-5 : 0.05);
      }
    }
}

// A lane with fewer chunks than ranks is cut as usual and not audited (no
// leaf message), so that every rank keeps a segment of its own.
TEST(CommitmentAudit, ALaneWithFewerChunksThanRanksIsNotAudited) {
  const int n = 5;
  const auto in = test::rank_inputs(n, 2500, 21);  // 3 chunks of 1000
  const auto keys = keys_for(n);
  const AuditRun res = run_audited(in, in, options(Compression::Int8), &keys);
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(res.errors[r], "");
    ASSERT_FALSE(res.received[r].empty());
    EXPECT_FALSE(is_leaf_message(res.received[r][0]));
  }
}

// Segments on whole chunks, whatever the ring's size: each one begins on a
// chunk, they cover the lane, and a lane with fewer chunks than ranks
// leaves some empty.
TEST(CommitmentAudit, AlignedSegmentsCoverTheLaneOnWholeChunks) {
  for (size_t S : {size_t{0}, size_t{1}, size_t{999}, size_t{1000}, size_t{7001}, size_t{123457}})
    for (size_t N : {size_t{2}, size_t{3}, size_t{5}, size_t{64}}) {
      EXPECT_EQ(aligned_segment_begin(S, N, 1000, 0), 0u);
      EXPECT_EQ(aligned_segment_begin(S, N, 1000, N), S);
      for (size_t s = 0; s < N; ++s) {
        const size_t b = aligned_segment_begin(S, N, 1000, s), e = aligned_segment_begin(S, N, 1000, s + 1);
        EXPECT_LE(b, e);
        EXPECT_TRUE(b % 1000 == 0 || b == S);
      }
    }
}

// A rank that sends other than it committed to (here: half its values,
// well within its announced norm) is caught by its successor at the first
// hop and blamed. An honest sender signs a first hop with the digest of the
// leaf it committed to (no pass over the bytes), so a sender whose bytes
// differ has signed something else: the successor cannot prove it (no
// evidence: nobody is refused, the round fails all the same).
TEST(CommitmentAudit, AMismatchAtTheFirstHopIsCaughtAndBlamedOnTheSender) {
  for (Compression c : {Compression::None, Compression::Int8})
    for (int n : {2, 3, 5}) {
      SCOPED_TRACE(str(compression_name(c), " N=", n));
      RingOptions o = options(c);
      const auto committed = test::rank_inputs(n, 7001, 80 + n);
      auto sent = committed;
      const int liar = 1 % n;
      for (float& v : sent[liar]) v *= 0.5f;  // less than it committed to: no norm check could see it
      const auto keys = keys_for(n);
      const AuditRun res = run_audited(sent, committed, o, &keys);
      const int successor = (liar + 1) % n;
      ASSERT_EQ(res.offender[successor], liar) << res.errors[successor];
      EXPECT_NE(res.errors[successor].find("committed to"), std::string::npos) << res.errors[successor];
      EXPECT_TRUE(res.evidence[successor].empty()) << res.errors[successor];
      for (int r = 0; r < n; ++r) EXPECT_NE(res.errors[r], "") << "rank " << r << " finished";

      // A sender that signs what it sends is proven wrong by its leaf
      // message and that message, and by nothing altered or another key.
      EvidenceContext ctx;
      ctx.round = o.round;
      ctx.accuser_rank = successor;
      ctx.world = n;
      for (int r = 0; r < n; ++r) ctx.commitments.push_back(commit_leaves(committed[r], layout_of(o), 1).root);
      const auto& got = res.received[successor];
      ASSERT_TRUE(is_leaf_message(got[0]));
      std::vector<uint8_t> first_hop;
      for (size_t i = 1; i < got.size() && first_hop.empty(); ++i)
        if (parse_ring_header(got[i], "m").is_signed) first_hop = got[i];
      ASSERT_FALSE(first_hop.empty());
      EXPECT_FALSE(judge_ring_evidence({got[0], first_hop}, keys[liar].public_key(), ctx).holds)
          << "signed with the committed leaf's digest: not a signature of these bytes";
      sign_ring_message(first_hop, keys[liar]);  // as a sender that signs its bytes would have
      const std::vector<std::vector<uint8_t>> proof = {got[0], first_hop};
      const EvidenceVerdict v = judge_ring_evidence(proof, keys[liar].public_key(), ctx);
      EXPECT_TRUE(v.holds) << v.why;
      EXPECT_FALSE(judge_ring_evidence(proof, keys[successor].public_key(), ctx).holds);
      for (size_t which : {size_t{0}, size_t{1}}) {
        auto bad = proof;
        bad[which][bad[which].size() / 2] ^= 4;
        EXPECT_FALSE(judge_ring_evidence(bad, keys[liar].public_key(), ctx).holds) << "message " << which;
      }
    }
}

// A rank whose leaves (the ones it reveals in the ring) are not the ones it
// announced: its signed leaf message alone proves it, and it is blamed.
TEST(CommitmentAudit, LeavesOtherThanTheAnnouncedCommitmentAreProvenByTheLeafMessage) {
  for (int n : {2, 3, 5}) {
    SCOPED_TRACE(str("N=", n));
    RingOptions o = options(Compression::Int8);
    const auto announced = test::rank_inputs(n, 7001, 60 + n);
    auto sent = announced;
    const int liar = n - 1;
    for (float& v : sent[liar]) v *= 0.5f;
    const auto keys = keys_for(n);
    const AuditRun res = run_audited(sent, sent, o, &keys, &announced);
    const int successor = (liar + 1) % n;
    ASSERT_EQ(res.offender[successor], liar) << res.errors[successor];
    ASSERT_EQ(res.evidence[successor].size(), 1u) << res.errors[successor];
    EvidenceContext ctx;
    ctx.round = o.round;
    ctx.accuser_rank = successor;
    ctx.world = n;
    for (int r = 0; r < n; ++r) ctx.commitments.push_back(commit_leaves(announced[r], layout_of(o), 1).root);
    const EvidenceVerdict v = judge_ring_evidence(res.evidence[successor], keys[liar].public_key(), ctx);
    EXPECT_TRUE(v.holds) << v.why;
    EXPECT_FALSE(judge_ring_evidence(res.evidence[successor], keys[0 == liar ? 1 : 0].public_key(), ctx).holds);
  }
}

// A false accusation of a mismatch: the honest sender's leaf message and
// step-0 message match its commitment, so the evidence does not hold.
TEST(CommitmentAudit, HonestLeavesDoNotProveAMismatch) {
  const int n = 3;
  RingOptions o = options(Compression::Int8);
  const auto in = test::rank_inputs(n, 7001, 7);
  const auto keys = keys_for(n);
  const AuditRun res = run_audited(in, in, o, &keys);
  EvidenceContext ctx;
  ctx.round = o.round;
  ctx.world = n;
  for (int r = 0; r < n; ++r) ctx.commitments.push_back(commit_leaves(in[r], layout_of(o), 1).root);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(res.errors[r], "");
    ctx.accuser_rank = r;
    const PublicKey prev = keys[(r + n - 1) % n].public_key();
    const auto& got = res.received[r];
    ASSERT_TRUE(is_leaf_message(got[0]));
    EXPECT_FALSE(judge_ring_evidence({got[0]}, prev, ctx).holds);
    for (size_t i = 1; i < got.size(); ++i) {
      const EvidenceVerdict v = judge_ring_evidence({got[0], got[i]}, prev, ctx);
      EXPECT_FALSE(v.holds) << v.why;
    }
  }
}

// Without signatures (the shared-secret mode) the mismatch is still caught
// and named; there is just no evidence to hand over.
TEST(CommitmentAudit, UnsignedRingsStillCatchAMismatch) {
  const int n = 3;
  RingOptions o = options(Compression::Int8);
  const auto committed = test::rank_inputs(n, 7001, 11);
  auto sent = committed;
  sent[2][6000] += 1e-3f;  // in rank 2's own segment ([5000, 7001) of 8 chunks over 3 ranks)
  const AuditRun res = run_audited(sent, committed, o, nullptr);
  EXPECT_EQ(res.offender[0], 2) << res.errors[0];
  EXPECT_TRUE(res.evidence[0].empty());
}

TEST(CommitmentAudit, CommitmentsDependOnTheBytesNotTheThreads) {
  const auto x = test::randn(123457, 3, 1e-3f);
  CommitLayout l;
  l.compression = Compression::Int8;
  l.block = 4096;
  l.chunk = 10000;
  l.lanes = 3;
  const LeafCommitment a = commit_leaves(x, l, 1), b = commit_leaves(x, l, 4);
  EXPECT_EQ(a.root, b.root);
  EXPECT_EQ(a.leaves.size(), 3u);
  auto y = x;
  y[100000] += 0.01f;  // a change int8 cannot round away
  EXPECT_NE(commit_leaves(y, l, 2).root, a.root);
  l.chunk = 20000;  // another cut is another commitment
  EXPECT_NE(commit_leaves(x, l, 2).root, a.root);
}

TEST(CommitmentAudit, LeafMessagesRoundTripAndRefuseMalformedOnes) {
  LeafMessage m;
  m.round = 9;
  m.total_elems = 5000;
  m.lane_elems = 2500;
  m.lane = 1;
  m.layout.compression = Compression::Int8;
  m.layout.block = 256;
  m.layout.chunk = 1000;
  m.layout.lanes = 2;
  m.lane_roots.assign(2, Digest{});
  m.leaves.assign(3, Digest{});
  m.leaves[2][0] = 7;
  const NodeKey key = NodeKey::generate();
  const std::vector<uint8_t> wire = encode_leaf_message(m, &key);
  EXPECT_TRUE(ring_message_signed_by(wire, key.public_key()));
  const LeafMessage back = parse_leaf_message(wire, "test");
  EXPECT_EQ(back.leaves, m.leaves);
  EXPECT_EQ(back.lane, 1u);
  EXPECT_TRUE(back.is_signed);
  for (size_t cut = 1; cut < wire.size(); cut += 13) {
    std::vector<uint8_t> t(wire.begin(), wire.end() - static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(parse_leaf_message(t, "test"), Error) << cut;
  }
  std::vector<uint8_t> lane_past = wire;
  lane_past[32] = 2;  // lane 2 of 2
  EXPECT_THROW(parse_leaf_message(lane_past, "test"), Error);
  std::vector<uint8_t> many = wire;
  many[48] = 0xff, many[49] = 0xff, many[50] = 0xff, many[51] = 0x7f;  // leaves past the cap
  EXPECT_THROW(parse_leaf_message(many, "test"), Error);
}

// The announced norm is the vector's L2 norm (eight running sums, any
// length, any thread count), and with a residual the norm of their float sum.
TEST(CommitmentAudit, TheAnnouncedNormIsTheVectorsNorm) {
  for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{1001}, size_t{100'003}}) {
    std::vector<float> x(n), res(n);
    for (size_t i = 0; i < n; ++i) {
      x[i] = static_cast<float>(std::sin(0.37 * double(i)) * (i % 13 == 0 ? 40.0 : 1e-3));
      res[i] = static_cast<float>(std::cos(0.11 * double(i)) * 1e-3);
    }
    long double want = 0, want_res = 0;
    for (size_t i = 0; i < n; ++i) {
      want += static_cast<long double>(x[i]) * x[i];
      const float a = x[i] + res[i];
      want_res += static_cast<long double>(a) * a;
    }
    for (int threads : {1, 3}) {
      EXPECT_NEAR(announce_contribution(x, threads).norm, std::sqrt(double(want)), 1e-12 * std::sqrt(double(want)))
          << "n=" << n << " threads=" << threads;
      EXPECT_NEAR(announce_contribution(x, threads, res).norm, std::sqrt(double(want_res)),
                  1e-12 * std::sqrt(double(want_res)))
          << "n=" << n << " threads=" << threads << " with a residual";
      // A dense node's norm comes from its commitment's pass, leaf by leaf:
      // the same sum, and the same bits whatever the thread count.
      CommitLayout l;
      l.compression = Compression::Int8;
      l.block = 256;
      l.chunk = 1000;
      l.lanes = 2;
      double ss = -1.0, ss1 = -1.0;
      (void)commit_leaves(x, l, threads, &ss);
      (void)commit_leaves(x, l, 1, &ss1);
      EXPECT_NEAR(ss, double(want), 1e-12 * double(want)) << "n=" << n << " threads=" << threads;
      EXPECT_EQ(ss, ss1) << "n=" << n;
    }
  }
}

}  // namespace
}  // namespace intellect
