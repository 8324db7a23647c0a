// diloco.compression "blocks4" and "blocks2" (dist/block_rotation.h): the
// seeded rotation of blocks (the same on every node, every block once per
// cycle), the compact vectors through the int4 and the int2 ring
// (bit-identical on 2, 3 and 5 ranks, and what a donor serves decodes to the
// same bits), error feedback's accounting over rounds, and the config's checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <vector>

#include "dist/block_rotation.h"
#include "dist/codec.h"
#include "dist/error_feedback.h"
#include "dist/ring_allreduce.h"
#include "dist/round_codec.h"
#include "mem_ring.h"
#include "test_util.h"
#include "train/config.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

using namespace std::chrono_literals;

std::vector<float> pseudo_grad(size_t n, uint64_t seed, double sigma = 1e-3) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(sigma * normal01(seed, i));
  return v;
}

TEST(BlockRotation, PeriodIsCeilOfOneOverTheFraction) {
  EXPECT_EQ(rotation_period(1.0), 1u);
  EXPECT_EQ(rotation_period(0.5), 2u);
  EXPECT_EQ(rotation_period(0.2), 5u);
  EXPECT_EQ(rotation_period(0.22), 5u) << "rounded down to 1/5: never more bytes than asked";
  EXPECT_EQ(rotation_period(0.125), 8u);
  EXPECT_EQ(rotation_period(0.1), 10u);
  EXPECT_EQ(rotation_period(0.3), 4u);
  EXPECT_THROW(rotation_period(0.0), Error);
  EXPECT_THROW(rotation_period(1.5), Error);
}

// Two nodes built alike select the same blocks in every round (nothing but
// the seed and the outer step decides); each cycle of P rounds covers every
// block exactly once in near-equal parts; no block waits more than 2P − 1
// rounds; another seed or another cycle gives another order.
TEST(BlockRotation, SameOnEveryNodeAndEveryBlockOncePerCycle) {
  for (double f : {0.2, 0.125, 0.3, 1.0}) {
    SCOPED_TRACE(f);
    const size_t n = 203 * kRotationBlock + 777;  // 204 blocks, the last one short
    const BlockRotation a(n, f, 42), b(n, f, 42), other(n, f, 43);
    const size_t P = a.period(), nb = a.blocks();
    ASSERT_EQ(nb, 204u);
    std::vector<int64_t> last_sent(nb, 0);
    bool seed_matters = false, cycle_matters = false;
    std::vector<uint32_t> first_cycle_first_part;
    for (size_t cycle = 0; cycle < 3; ++cycle) {
      std::vector<int> count(nb, 0);
      for (size_t part = 0; part < P; ++part) {
        const int64_t k = static_cast<int64_t>(cycle * P + part + 1);
        const BlockSelection s = a.select(k), t = b.select(k), u = other.select(k);
        ASSERT_EQ(s.blocks, t.blocks) << "round " << k << ": the same on every node";
        if (s.blocks != u.blocks) seed_matters = true;
        ASSERT_TRUE(std::is_sorted(s.blocks.begin(), s.blocks.end()));
        EXPECT_GE(s.blocks.size(), nb / P);
        EXPECT_LE(s.blocks.size(), nb / P + 1);
        size_t values = 0;
        for (uint32_t blk : s.blocks) {
          ASSERT_LT(blk, nb);
          ++count[blk];
          values += s.len_of(blk);
          if (last_sent[blk] > 0) {
            EXPECT_LE(k - last_sent[blk], static_cast<int64_t>(2 * P - 1)) << "block " << blk;
          }
          last_sent[blk] = k;
        }
        EXPECT_EQ(s.values, values);
        if (cycle == 0 && part == 0) first_cycle_first_part = s.blocks;
        if (cycle == 1 && part == 0 && s.blocks != first_cycle_first_part) cycle_matters = true;
      }
      for (size_t blk = 0; blk < nb; ++blk) ASSERT_EQ(count[blk], 1) << "block " << blk << " in cycle " << cycle;
    }
    if (P > 1) {
      EXPECT_TRUE(seed_matters);
      EXPECT_TRUE(cycle_matters) << "each cycle draws a new permutation";
    }
  }
  // A model with fewer blocks than the period would send nothing in some rounds.
  const std::string e = test::error_of([] { BlockRotation(3 * kRotationBlock, 0.2, 1); });
  EXPECT_NE(e.find("diloco.block_fraction"), std::string::npos) << e;
  EXPECT_THROW(BlockRotation(10, 0.2, 1).select(0), Error);
  // The run's last outer step sends every block; the others are as without it.
  const size_t n = 50 * kRotationBlock + 1;
  const BlockRotation plain(n, 0.2, 4), ending(n, 0.2, 4, 12);
  for (int64_t k = 1; k < 12; ++k) EXPECT_EQ(plain.select(k).blocks, ending.select(k).blocks) << k;
  const BlockSelection last = ending.select(12);
  EXPECT_EQ(last.blocks.size(), ending.blocks());
  EXPECT_EQ(last.values, n);
  EXPECT_LT(plain.select(12).values, n);
}

TEST(BlockRotation, GatherAndScatterPutEachBlockBackAndZeroTheRest) {
  const size_t n = 9 * kRotationBlock + 100;
  const BlockRotation rot(n, 0.25, 7);
  const std::vector<float> a = pseudo_grad(n, 1), b = pseudo_grad(n, 2);
  for (int64_t k = 1; k <= 4; ++k) {
    const BlockSelection s = rot.select(k);
    std::vector<float> compact(s.values, -1.0f), full(n, -1.0f);
    s.gather(a, b, compact);
    s.scatter(compact, full);
    std::vector<bool> chosen(rot.blocks(), false);
    for (uint32_t blk : s.blocks) chosen[blk] = true;
    for (size_t i = 0; i < n; ++i) {
      if (chosen[i / kRotationBlock]) ASSERT_EQ(full[i], a[i] + b[i]) << i;
      else ASSERT_EQ(full[i], 0.0f) << i;
    }
    // Without a residual: a alone.
    s.gather(a, {}, compact);
    s.scatter(compact, full);
    for (uint32_t blk : s.blocks) ASSERT_EQ(full[s.begin_of(blk)], a[s.begin_of(blk)]);
  }
}

// What a node sends is the int4 round trip of (δ + residual) on its blocks:
// each value within half a step (max|x|/14 of its group of 64) of itself,
// on any thread count the same bits.
TEST(BlockRotation, PrepareSendsTheInt4OfPseudoGradientPlusResidual) {
  const size_t n = 40 * kRotationBlock + 3;
  const BlockRotation rot(n, 0.2, 3);
  const BlockSelection s = rot.select(2);
  const std::vector<float> d = pseudo_grad(n, 5), r = pseudo_grad(n, 6, 3e-4);
  std::vector<float> want(s.values), q(s.values);
  s.gather(d, r, want);
  rotation_prepare(s, d, r, q, *make_block_codec(Compression::Int4, 64));
  for (size_t g = 0; g < s.values; g += 64) {
    const size_t len = std::min<size_t>(64, s.values - g);
    float mx = 0;
    for (size_t i = 0; i < len; ++i) mx = std::max(mx, std::fabs(want[g + i]));
    for (size_t i = 0; i < len; ++i) ASSERT_LE(std::fabs(q[g + i] - want[g + i]), mx / 14 * 1.0001f) << g + i;
  }
  std::vector<float> bad = d;
  bad[s.begin_of(s.blocks[0])] = NAN;
  EXPECT_THROW(rotation_prepare(s, bad, r, q, *make_block_codec(Compression::Int4, 64)), Error);
  EXPECT_THROW(rotation_prepare(s, bad, r, q, *make_block_codec(Compression::Int2, 64)), Error);
}

memring::RingRun run_codec_ring(const std::vector<std::vector<float>>& in, uint64_t round, Compression c) {
  memring::Ring ring(static_cast<int>(in.size()));
  RingOptions o;
  o.round = round;
  o.compression = c;
  o.int8_block = default_codec_block(c);
  o.chunk_elems = 5000;
  o.message_timeout = 5s;
  return memring::run_ring(ring, in, o);
}

// One blocks4 (int4) or blocks2 (int2) round on every node, as OuterSync
// runs it: prepare (δ + residual → the codec over the round's blocks), the
// compact vectors through the codec's ring, the average scattered; then the
// error feedback committed.
struct Node {
  ErrorFeedback ef;
  std::vector<float> sent;  // this round's compact vector
};

std::vector<std::vector<float>> blocks_round(std::vector<Node>& nodes, const BlockRotation& rot, int64_t k,
                                             const std::vector<std::vector<float>>& delta, Compression c,
                                             std::vector<std::vector<uint8_t>>* served = nullptr) {
  const auto codec = make_block_codec(c, default_codec_block(c));
  const size_t n = delta[0].size();
  const BlockSelection s = rot.select(k);
  std::vector<std::vector<float>> in;
  for (size_t r = 0; r < nodes.size(); ++r) {
    nodes[r].sent.assign(s.values, 0.0f);
    rotation_prepare(s, delta[r], nodes[r].ef.residual(), nodes[r].sent, *codec);
    in.push_back(nodes[r].sent);
  }
  const memring::RingRun res = run_codec_ring(in, static_cast<uint64_t>(k), c);
  std::vector<std::vector<float>> full(nodes.size(), std::vector<float>(n, -1.0f));
  for (size_t r = 0; r < nodes.size(); ++r) {
    EXPECT_EQ(res.errors[r], "") << "rank " << r;
    s.scatter(res.out[r], full[r]);
    nodes[r].ef.commit_blocks(delta[r].data(), s, nodes[r].sent);
    if (served) {
      RoundEncoder enc(s.values);
      for (const RingCarried& c : res.carried[r]) enc.add_carried(c);
      const ByteBuffer round = enc.finish();
      served->emplace_back(round.begin(), round.end());
    }
  }
  return full;
}

// Bit-identical on every rank with 2, 3 and 5 ranks; zero off the round's
// blocks; on them, close to the mean of what the nodes sent; and the bytes a
// donor serves (as the ring carried them) decode, with the same selection,
// to the very same bits: what a late node or a joiner applies.
// What each codec's ring may lose, and its bytes per value with the scales.
struct RingCase {
  Compression c;
  double ring_error;       // relative RMS error of the ring's average against the mean of what was sent
  double bytes_per_value;  // encoded
  double residual_ratio;   // RMS of the buffer (the last send's quantization error) against one δ
};
// int2's ring error is larger: each hop's partial sum and the owner's average
// are re-quantized at 2 bits (about 0.34 relative RMS each, on
// independent inputs growing with the partial sums against their mean).
const RingCase kRingCases[] = {{Compression::Int4, 0.35, 0.5625, 0.2}, {Compression::Int2, 0.8, 0.3125, 0.5}};

TEST(BlockRotationRing, BitIdenticalOnEveryRankAndServedAsCarried) {
  for (const RingCase& rc : kRingCases)
  for (int world : {2, 3, 5}) {
    SCOPED_TRACE(str(compression_name(rc.c), " world ", world));
    const size_t n = 37 * kRotationBlock + 501;
    const BlockRotation rot(n, 0.2, 11);
    std::vector<Node> nodes(world, Node{ErrorFeedback(n), {}});
    for (int64_t k = 1; k <= 3; ++k) {
      std::vector<std::vector<float>> delta;
      for (int r = 0; r < world; ++r) delta.push_back(pseudo_grad(n, 100 * k + r));
      std::vector<std::vector<uint8_t>> served;
      const auto full = blocks_round(nodes, rot, k, delta, rc.c, &served);
      for (int r = 1; r < world; ++r)
        ASSERT_EQ(0, std::memcmp(full[r].data(), full[0].data(), n * sizeof(float))) << "rank " << r << " round " << k;
      const BlockSelection s = rot.select(k);
      std::vector<bool> chosen(rot.blocks(), false);
      for (uint32_t blk : s.blocks) chosen[blk] = true;
      double e2 = 0, w2 = 0;
      std::vector<float> mean(s.values, 0.0f);
      for (int r = 0; r < world; ++r)
        for (size_t i = 0; i < s.values; ++i) mean[i] += nodes[r].sent[i] / world;
      std::vector<float> mean_full(n);
      s.scatter(mean, mean_full);
      for (size_t i = 0; i < n; ++i) {
        if (!chosen[i / kRotationBlock]) {
          ASSERT_EQ(full[0][i], 0.0f) << i;
          continue;
        }
        e2 += (full[0][i] - mean_full[i]) * double(full[0][i] - mean_full[i]);
        w2 += double(mean_full[i]) * mean_full[i];
      }
      std::printf("%s ring over the blocks, %d ranks, round %d: relative RMS error %.3f\n", compression_name(rc.c),
                  world, static_cast<int>(k), std::sqrt(e2 / w2));
      EXPECT_LT(std::sqrt(e2 / w2), rc.ring_error) << "the ring's own error (int4: as int4's ring test)";
      EXPECT_GT(std::sqrt(e2 / w2), rc.ring_error / 50) << "a lossy ring: not a copy of the fp32 mean";
      for (int r = 0; r < world; ++r) {
        std::vector<float> compact(s.values, -1.0f), got(n, -1.0f);
        decode_round(served[r], compact, "blocks4 round");
        s.scatter(compact, got);
        ASSERT_EQ(0, std::memcmp(got.data(), full[0].data(), n * sizeof(float))) << "served by rank " << r;
        EXPECT_LT(served[r].size(), s.values * rc.bytes_per_value + 4096) << "the codec's bytes for the round's blocks only";
        // A round of another step (another size) is refused, not misapplied.
        const BlockSelection other = rot.select(k + 1);
        if (other.values != s.values) {
          std::vector<float> wrong(other.values);
          EXPECT_THROW(decode_round(served[r], wrong, "blocks4 round"), Error);
        }
      }
    }
  }
}

// With β = 1, over rounds: Σ sent + residual = Σ of the pseudo-gradients
// of the rounds that sent the value's block, on every node and every value
// (the int4 error is not lost, only delayed; between its block's rounds a
// value's progress stays in the weights, which keep_unsent_progress does not
// reset, so the next δ holds it and the buffer leaves it alone); after a
// full cycle every value has been sent; with β < 1, a sent block keeps
// β·(δ + r − sent) and the others are untouched.
TEST(BlockRotationRing, ErrorFeedbackKeepsSentPlusResidualEqualToThePseudoGradients) {
  for (const RingCase& rc : kRingCases) {
  SCOPED_TRACE(compression_name(rc.c));
  const auto codec = make_block_codec(rc.c, default_codec_block(rc.c));
  const int world = 3;
  const size_t n = 23 * kRotationBlock + 9;
  const BlockRotation rot(n, 0.2, 5);
  std::vector<Node> nodes(world, Node{ErrorFeedback(n, 1.0), {}});
  std::vector<std::vector<double>> sum_sent(world, std::vector<double>(n, 0.0)), sum_delta = sum_sent;
  std::vector<bool> ever_sent(n, false);
  const int rounds = 2 * static_cast<int>(rot.period());
  for (int64_t k = 1; k <= rounds; ++k) {
    std::vector<std::vector<float>> delta;
    for (int r = 0; r < world; ++r) delta.push_back(pseudo_grad(n, 1000 * k + r));
    blocks_round(nodes, rot, k, delta, rc.c);
    const BlockSelection s = rot.select(k);
    for (uint32_t blk : s.blocks)
      for (size_t i = s.begin_of(blk); i < s.begin_of(blk) + s.len_of(blk); ++i) ever_sent[i] = true;
    for (int r = 0; r < world; ++r) {
      std::vector<float> sent(n);
      s.scatter(nodes[r].sent, sent);
      for (uint32_t blk : s.blocks)
        for (size_t i = s.begin_of(blk); i < s.begin_of(blk) + s.len_of(blk); ++i) {
          sum_sent[r][i] += sent[i];
          sum_delta[r][i] += delta[r][i];
        }
    }
  }
  for (int r = 0; r < world; ++r) {
    double worst = 0, resid2 = 0;
    for (size_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::fabs(sum_sent[r][i] + nodes[r].ef.values()[i] - sum_delta[r][i]));
      resid2 += double(nodes[r].ef.values()[i]) * nodes[r].ef.values()[i];
    }
    EXPECT_LT(worst, 1e-7) << "node " << r << ": fp32 rounding of ten adds of ~1e-3";
    EXPECT_GT(std::sqrt(resid2 / n), 1e-4) << "four fifths of the blocks wait in the residual";
  }
  EXPECT_EQ(std::count(ever_sent.begin(), ever_sent.end(), false), 0) << "every value sent within a cycle";
  // The int4 error of the last send is what the buffer holds: small against δ.
  {
    double r2 = 0, d2 = 0;
    const auto last = pseudo_grad(n, 1000 * rounds);
    for (size_t i = 0; i < n; ++i) {
      r2 += double(nodes[0].ef.values()[i]) * nodes[0].ef.values()[i];
      d2 += double(last[i]) * last[i];
    }
    EXPECT_LT(std::sqrt(r2 / d2), rc.residual_ratio) << "only quantization errors wait in the buffer";
  }

  // Decay: a block not sent keeps β·(δ + r); a sent one β·(its int4 error).
  const float beta = 0.8f;
  ErrorFeedback ef(n, beta);
  const std::vector<float> d1 = pseudo_grad(n, 1), d2 = pseudo_grad(n, 2);
  const BlockSelection s1 = rot.select(1), s2 = rot.select(2);
  std::vector<float> q1(s1.values), q2(s2.values);
  rotation_prepare(s1, d1, ef.residual(), q1, *codec);
  ef.commit_blocks(d1.data(), s1, q1);
  const std::vector<float> r1 = ef.values();
  rotation_prepare(s2, d2, ef.residual(), q2, *codec);
  ef.commit_blocks(d2.data(), s2, q2);
  std::vector<float> sent2(n);
  s2.scatter(q2, sent2);
  std::vector<bool> chosen2(rot.blocks(), false);
  for (uint32_t blk : s2.blocks) chosen2[blk] = true;
  for (size_t i = 0; i < n; ++i) {
    const float want = chosen2[i / kRotationBlock] ? (d2[i] + r1[i] - sent2[i]) * beta : r1[i];
    ASSERT_EQ(ef.values()[i], want) << i;
  }
  double sq = 0;
  for (float v : ef.values()) sq += double(v) * v;
  EXPECT_NEAR(ef.rms(), std::sqrt(sq / n), 1e-9 * std::sqrt(sq / n));
  EXPECT_THROW(ef.commit_blocks(d2.data(), s2, q1), Error) << "a compact vector of another round";
  }
}

// After the outer step the blocks not averaged keep the node's progress on
// top of the new outer parameters; averaged ones are the outer parameters;
// a late node (no selection) keeps it everywhere.
TEST(BlockRotation, UnsentBlocksKeepTheNodesProgress) {
  const size_t n = 12 * kRotationBlock + 5;
  const BlockRotation rot(n, 0.25, 2);
  const BlockSelection s = rot.select(3);
  const std::vector<float> theta = pseudo_grad(n, 8, 1.0), delta = pseudo_grad(n, 9);
  std::vector<float> w = theta;
  keep_unsent_progress(&s, theta, delta, w);
  std::vector<bool> chosen(rot.blocks(), false);
  for (uint32_t blk : s.blocks) chosen[blk] = true;
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(w[i], chosen[i / kRotationBlock] ? theta[i] : theta[i] - delta[i]) << i;
  w = theta;
  keep_unsent_progress(nullptr, theta, delta, w);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(w[i], theta[i] - delta[i]) << i;
}

std::string config_error(const std::vector<std::string>& sets) {
  return test::error_of([&] { load_config("", sets); });
}

// blocks4's keys and defaults: fraction 1/5 (1/35.6 of fp32's bytes), no
// error-feedback decay, plain averaging (outer lr 1, no momentum), which
// DiLoCo's Nesterov settings override; its keys are refused with any other
// compression, and a fraction out of (0, 1] is refused.
TEST(BlockRotationConfig, DefaultsAndErrors) {
  const DilocoConfig d = load_config("", {"diloco.compression=blocks4"}).diloco;
  EXPECT_EQ(d.block_fraction, 0.2);
  EXPECT_EQ(d.block_seed, 0u);
  EXPECT_EQ(d.error_feedback_decay, 1.0);
  EXPECT_EQ(d.outer_lr, 1.0);
  EXPECT_EQ(d.outer_momentum, 0.0);
  EXPECT_FALSE(d.nesterov);
  const DilocoConfig nesterov = load_config("", {"diloco.compression=blocks4", "diloco.outer_lr=0.7",
                                                 "diloco.outer_momentum=0.9"})
                                    .diloco;
  EXPECT_EQ(nesterov.outer_lr, 0.7);
  EXPECT_TRUE(nesterov.nesterov);
  const DilocoConfig e = load_config("", {"diloco.compression=blocks4", "diloco.block_fraction=0.125",
                                          "diloco.block_seed=9", "diloco.error_feedback_decay=0.8"})
                             .diloco;
  EXPECT_EQ(e.block_fraction, 0.125);
  EXPECT_EQ(e.block_seed, 9u);
  EXPECT_EQ(e.error_feedback_decay, 0.8);
  for (const char* key : {"block_fraction=0.2", "block_seed=3"}) {
    const std::string m = config_error({"diloco.compression=int4", std::string("diloco.") + key});
    EXPECT_NE(m.find("blocks4"), std::string::npos) << m;
  }
  EXPECT_NE(config_error({"diloco.compression=blocks4", "diloco.block_fraction=0"}).find("block_fraction"),
            std::string::npos);
  EXPECT_NE(config_error({"diloco.compression=blocks4", "diloco.block_fraction=1.5"}).find("block_fraction"),
            std::string::npos);
  EXPECT_NE(config_error({"diloco.compression=blocks4", "diloco.sparse_aggregation=mean"}).find("sparse"),
            std::string::npos);
  EXPECT_NE(config_error({"diloco.compression=int8", "diloco.error_feedback_decay=0.5"}).find("blocks4"),
            std::string::npos);
  // Overlap is refused: the overlapped boundary does not keep the unsent blocks' progress.
  for (const char* o : {"eager", "delayed"}) {
    const std::string m = config_error({"diloco.compression=blocks4", std::string("diloco.overlap=") + o});
    EXPECT_NE(m.find("overlap"), std::string::npos) << m;
    EXPECT_NE(m.find("blocks4"), std::string::npos) << m;
  }
}

// blocks2: the same keys, fraction 1/3 by default (P = 3), the int2 ring,
// plain averaging stepped 1.25 times past the average (an outer lr given
// overrides it); the same refusals.
TEST(BlockRotationConfig, Blocks2DefaultsAndErrors) {
  const DilocoConfig d = load_config("", {"diloco.compression=blocks2"}).diloco;
  EXPECT_TRUE(d.rotates_blocks());
  EXPECT_EQ(d.ring_compression(), "int2");
  EXPECT_EQ(parse_compression(d.ring_compression()), Compression::Int2);
  EXPECT_EQ(rotation_period(d.block_fraction), 3u);
  EXPECT_EQ(d.error_feedback_decay, 1.0);
  EXPECT_EQ(d.outer_lr, 1.25);
  EXPECT_EQ(d.outer_momentum, 0.0);
  EXPECT_FALSE(d.nesterov);
  EXPECT_EQ(load_config("", {"diloco.compression=blocks2", "diloco.outer_lr=1"}).diloco.outer_lr, 1.0);
  EXPECT_EQ(load_config("", {"diloco.compression=blocks4"}).diloco.ring_compression(), "int4");
  EXPECT_FALSE(load_config("", {"diloco.compression=int4"}).diloco.rotates_blocks());
  // "blocks2:0.25" in the quality scripts' cells.
  EXPECT_EQ(rotation_period(load_config("", {"diloco.compression=blocks2", "diloco.block_fraction=0.25"})
                                .diloco.block_fraction),
            4u);
  EXPECT_NE(config_error({"diloco.compression=blocks2", "diloco.block_fraction=0"}).find("block_fraction"),
            std::string::npos);
  EXPECT_NE(config_error({"diloco.compression=int8", "diloco.block_seed=3"}).find("blocks2"), std::string::npos);
  const std::string m = config_error({"diloco.compression=blocks2", "diloco.overlap=eager"});
  EXPECT_NE(m.find("blocks2"), std::string::npos) << m;
  // int2 is the ring's codec of blocks2, not a compression of its own.
  EXPECT_NE(config_error({"diloco.compression=int2"}).find("compression"), std::string::npos);
}

}  // namespace
}  // namespace intellect
