// Signed sparse contributions and the evidence of a sparse accusation
// (sparse_evidence.h): every chunk signed by its author and forwarded with
// that signature; a source above its announced norm is shown by its own
// signed chunks, whoever forwarded them; nothing else proves anything.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/control.h"
#include "dist/sparse.h"
#include "dist/sparse_allgather.h"
#include "dist/sparse_evidence.h"
#include "mem_ring.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using memring::Ring;
using namespace std::chrono_literals;

struct Keys {
  std::vector<NodeKey> keys;
  explicit Keys(int n) {
    for (int i = 0; i < n; ++i) keys.push_back(NodeKey::generate());
  }
  const NodeKey& of(int r) const { return keys[static_cast<size_t>(r)]; }
  std::vector<PublicKey> publics() const {
    std::vector<PublicKey> p;
    for (const NodeKey& k : keys) p.push_back(k.public_key());
    return p;
  }
};

SparseRingOptions options() {
  SparseRingOptions o;
  o.round = 31;
  o.lane = 2;
  o.block = 512;
  o.k = 51;
  o.chunk_blocks = 3;  // several chunks per contribution
  o.message_timeout = 5s;
  return o;
}

std::vector<std::vector<float>> sparse_inputs(int n, size_t size, uint64_t seed) {
  return test::rank_inputs(n, size, seed, 13);
}

std::vector<double> norms_of(const std::vector<std::vector<float>>& in) {
  std::vector<double> n;
  for (const auto& v : in) n.push_back(announce_contribution(v, 1, {}, false).norm);
  return n;
}

struct SparseRun {
  std::vector<std::vector<float>> out;
  std::vector<std::string> errors;
  std::vector<std::vector<std::vector<uint8_t>>> evidence;
  std::vector<int> offender;
  std::vector<std::vector<std::vector<uint8_t>>> received;
};

// Every rank signs with its own key and knows every member's (keys null:
// nobody signs). `tamper` rewrites what one rank sends (after the log saw it
// as sent: the log records what each rank receives).
SparseRun run_signed(const std::vector<std::vector<float>>& in, const SparseRingOptions& base, const Keys* keys,
                     int false_accuser = -1, int mode = 1, int tamperer = -1,
                     std::function<void(std::vector<uint8_t>&)> tamper = {}) {
  const int n = static_cast<int>(in.size());
  Ring ring(n);
  memring::ReceivedLog log(ring);
  if (tamperer >= 0) {
    auto record = ring.links[tamperer]->corrupt;
    ring.links[tamperer]->corrupt = [record, tamper](std::vector<uint8_t>& m) {
      tamper(m);
      record(m);
    };
  }
  memring::RingRun run = memring::run_sparse_ring(ring, in, base, [&](int r, SparseRingOptions& o) {
    if (keys) {
      o.signer = &keys->of(r);
      o.member_keys = keys->publics();
    }
    if (r == false_accuser) o.attack_false_accusation = mode;
  });
  memring::Accusations acc = memring::accusations_of(run);
  return SparseRun{std::move(run.out), std::move(run.errors), std::move(acc.evidence), std::move(acc.offender),
                   std::move(log.received)};
}

EvidenceContext context(const SparseRingOptions& o, int accuser, int accused, int world) {
  EvidenceContext c;
  c.round = o.round;
  c.accuser_rank = accuser;
  c.accused_rank = accused;
  c.world = world;
  c.norms = o.announced_norms;
  c.sparse_slack = o.norm_slack;
  return c;
}

uint32_t source_of(const std::vector<uint8_t>& m) { return parse_sparse_header(m, "m").source; }

TEST(SparseEvidence, SignedHonestRoundsPassAndAverageAsUnsignedOnes) {
  for (int n : {2, 3, 5}) {
    SCOPED_TRACE(str("N=", n));
    const size_t size = 5003;
    const auto in = sparse_inputs(n, size, 40 + n);
    SparseRingOptions o = options();
    o.announced_norms = norms_of(in);
    const Keys keys(n);
    const SparseRun plain = run_signed(in, o, nullptr), sig = run_signed(in, o, &keys);
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(sig.errors[r], "") << "rank " << r;
      ASSERT_EQ(plain.errors[r], "") << "rank " << r;
      EXPECT_EQ(0, std::memcmp(sig.out[r].data(), plain.out[r].data(), size * 4)) << "signing changes no value";
      // Every chunk of every source arrives signed by its author (not by
      // whoever forwarded it), bound to its lane, one signature each.
      ASSERT_EQ(plain.received[r].size(), sig.received[r].size());
      ASSERT_EQ(sig.received[r].size(), static_cast<size_t>(n - 1) * 4) << "4 chunks of each other source";
      for (size_t i = 0; i < sig.received[r].size(); ++i) {
        const auto& m = sig.received[r][i];
        const SparseHeader h = parse_sparse_header(m, "m");
        EXPECT_TRUE(h.is_signed);
        EXPECT_EQ(h.lane, 2u);
        EXPECT_FALSE(parse_sparse_header(plain.received[r][i], "m").is_signed);
        EXPECT_EQ(m.size(), plain.received[r][i].size() + kSparseSignedBytes);
        EXPECT_TRUE(sparse_message_signed_by(m, keys.of(static_cast<int>(h.source)).public_key()));
        // ... and by the rank that sent it, as its sender (the author itself at step 0).
        const int prev = (r + n - 1) % n;
        EXPECT_TRUE(sparse_message_sent_by(m, keys.of(prev).public_key(), sparse_payload_digest(m)));
        if (static_cast<int>(h.source) != prev) {
          EXPECT_FALSE(sparse_message_signed_by(m, keys.of(prev).public_key())) << "forwarded, not authored";
          EXPECT_FALSE(sparse_message_sent_by(m, keys.of(static_cast<int>(h.source)).public_key(),
                                              sparse_payload_digest(m)));
        }
      }
    }
  }
}

TEST(SparseEvidence, ASignedAndAnUnsignedPeerRefuseEachOther) {
  const auto in = sparse_inputs(2, 3000, 5);
  const SparseRingOptions o = options();
  const Keys keys(2);
  Ring ring(2);
  memring::RingRun run = memring::run_sparse_ring(ring, in, o, [&](int r, SparseRingOptions& x) {
    if (r == 0) {
      x.signer = &keys.of(0);
      x.member_keys = keys.publics();
    }
  });
  // Whichever parses the other's message first says why; the other sees its link closed.
  EXPECT_TRUE(run.errors[0].find("signed is") != std::string::npos ||
              run.errors[1].find("signed is") != std::string::npos)
      << run.errors[0] << "\n" << run.errors[1];
  EXPECT_NE(run.errors[0], "");
  EXPECT_NE(run.errors[1], "");
}

// An author that sends 100x what it announced: its successor hands over the
// author's signed chunks, which hold; so do the chunks of any later rank
// that would see them (here: a forwarder that does not check, rank 0 of 4,
// passes rank 3's chunks on to rank 1, which accuses rank 3, not rank 0).
TEST(SparseEvidence, AnInflatedContributionIsShownByItsAuthorsOwnSignedChunks) {
  const int n = 4;
  const size_t size = 5003;
  auto in = sparse_inputs(n, size, 9);
  SparseRingOptions o = options();
  o.announced_norms = norms_of(in);
  for (float& v : in[3]) v *= 100.0f;
  const Keys keys(n);
  const SparseRun res = run_signed(in, o, &keys);
  ASSERT_EQ(res.offender[0], 3) << res.errors[0];
  ASSERT_FALSE(res.evidence[0].empty()) << res.errors[0];
  EXPECT_NE(res.errors[0].find("signed by it"), std::string::npos) << res.errors[0];
  for (const auto& m : res.evidence[0]) EXPECT_EQ(source_of(m), 3u);
  const EvidenceVerdict v = judge_ring_evidence(res.evidence[0], keys.of(3).public_key(), context(o, 0, 3, n));
  EXPECT_TRUE(v.holds) << v.why;
  // Judged against the wrong key, rank, round or ring size, it holds nothing.
  EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(2).public_key(), context(o, 0, 3, n)).holds);
  EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(3).public_key(), context(o, 0, 2, n)).holds);
  EvidenceContext other_round = context(o, 0, 3, n);
  other_round.round += 1;
  EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(3).public_key(), other_round).holds);
  EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(3).public_key(), context(o, 0, 3, n + 1)).holds);
  EXPECT_FALSE(judge_ring_evidence(res.evidence[0], keys.of(3).public_key(), context(o, 3, 3, n)).holds)
      << "nobody accuses itself";
  // A rank further on accuses the author too, with the same chunks as a
  // forwarder (who checks nothing here) passed them on.
  Ring ring(n);
  memring::RingRun run = memring::run_sparse_ring(ring, in, o, [&](int r, SparseRingOptions& x) {
    x.signer = &keys.of(r);
    x.member_keys = keys.publics();
    if (r == 0) x.announced_norms.clear();  // rank 0 checks nothing and forwards everything
  });
  const memring::Accusations acc = memring::accusations_of(run);
  ASSERT_EQ(acc.offender[1], 3) << run.errors[1];
  const EvidenceVerdict far = judge_ring_evidence(acc.evidence[1], keys.of(3).public_key(), context(o, 1, 3, n));
  EXPECT_TRUE(far.holds) << far.why;
}

// A chunk altered after its sender signed it (here: inflated on the link
// out of rank 0) breaks both signatures: the successor refuses it on
// receipt and names its predecessor without evidence (nobody is refused in
// a node-key run, the link is avoided), and the altered chunk, handed over
// anyway, is refused by the judge.
TEST(SparseEvidence, ATamperedChunkProvesNothing) {
  const int n = 3;
  const size_t size = 5003;
  const auto in = sparse_inputs(n, size, 12);
  SparseRingOptions o = options();
  o.announced_norms = norms_of(in);
  const Keys keys(n);
  auto inflate = [](std::vector<uint8_t>& m) {
    const SparseHeader h = parse_sparse_header(m, "m");
    if (h.source != 2) return;
    float f;  // the first block's two grid bounds, scaled by 50
    for (size_t off : {kSparseHeaderBytes, kSparseHeaderBytes + 4}) {
      std::memcpy(&f, m.data() + off, 4);
      f *= 50.0f;
      std::memcpy(m.data() + off, &f, 4);
    }
  };
  // Rank 0 forwards rank 2's chunks to rank 1, inflated.
  const SparseRun res = run_signed(in, o, &keys, -1, 1, /*tamperer=*/0, inflate);
  ASSERT_EQ(res.offender[1], 0) << res.errors[1];
  EXPECT_TRUE(res.evidence[1].empty());
  EXPECT_NE(res.errors[1].find("the author signature does not hold for rank 2's key"), std::string::npos)
      << res.errors[1];
  EXPECT_NE(res.errors[1].find("its signature as sender does not hold either"), std::string::npos) << res.errors[1];
  // What rank 1 received of rank 2, altered on the way: not rank 2's signature.
  std::vector<std::vector<uint8_t>> altered;
  for (const auto& m : res.received[1])
    if (source_of(m) == 2) altered.push_back(m);
  ASSERT_FALSE(altered.empty());
  const EvidenceVerdict v = judge_ring_evidence({altered[0]}, keys.of(2).public_key(), context(o, 1, 2, n));
  EXPECT_FALSE(v.holds);
  EXPECT_NE(v.why.find("signature is not the accused's"), std::string::npos) << v.why;
  EvidenceContext sender = context(o, 1, 0, n);
  sender.keys = keys.publics();
  const EvidenceVerdict s = judge_ring_evidence({altered[0]}, keys.of(0).public_key(), sender);
  EXPECT_FALSE(s.holds) << "nothing shows who altered it";
  EXPECT_NE(s.why.find("nothing shows who altered it"), std::string::npos) << s.why;
}

TEST(SparseEvidence, EvidenceWithABadSignatureOrRepeatedChunksIsRefused) {
  const int n = 3;
  const size_t size = 5003;
  auto in = sparse_inputs(n, size, 19);
  SparseRingOptions o = options();
  o.announced_norms = norms_of(in);
  for (float& v : in[2]) v *= 100.0f;
  const Keys keys(n);
  const SparseRun res = run_signed(in, o, &keys);
  ASSERT_EQ(res.offender[0], 2) << res.errors[0];
  const EvidenceContext ctx = context(o, 0, 2, n);
  const PublicKey pk = keys.of(2).public_key();
  ASSERT_TRUE(judge_ring_evidence(res.evidence[0], pk, ctx).holds);
  const size_t len = res.evidence[0][0].size();
  // Any byte but the step field (and the sender's signature, which an
  // excess's evidence does not need: it is the author's chunk whoever sent
  // it) breaks the author's signature (or the header).
  for (size_t at : {size_t{5}, size_t{9}, size_t{33}, size_t{53}, kSparseHeaderBytes + 1, len / 2,
                    len - kSparseSignedBytes - 1, len - kSparseSignedBytes, len - kSparseSignatureBytes - 1}) {
    auto bad = res.evidence[0];
    bad[0][at] ^= 0x10;
    EXPECT_FALSE(judge_ring_evidence(bad, pk, ctx).holds) << "byte " << at;
  }
  auto step = res.evidence[0];
  step[0][kSparseStepOffset] ^= 1;  // the step a forwarder advances: not signed
  EXPECT_TRUE(judge_ring_evidence(step, pk, ctx).holds);
  // The same chunk twice, even at another step, would count twice.
  auto twice = res.evidence[0];
  twice.push_back(step[0]);
  const EvidenceVerdict v = judge_ring_evidence(twice, pk, ctx);
  EXPECT_FALSE(v.holds);
  EXPECT_NE(v.why.find("repeats"), std::string::npos) << v.why;
  // Unsigned chunks prove nothing.
  const SparseRun plain = run_signed(in, o, nullptr);
  std::vector<std::vector<uint8_t>> unsigned_chunks;
  for (const auto& m : plain.received[0])
    if (source_of(m) == 2) unsigned_chunks.push_back(m);
  ASSERT_FALSE(unsigned_chunks.empty());
  EXPECT_FALSE(judge_ring_evidence(unsigned_chunks, pk, ctx).holds);
  EXPECT_FALSE(judge_ring_evidence({}, pk, ctx).holds);
}

// A false accusation: an honest author's chunks, any or all of them, stay
// within its announced bound; the accuser that hands them over (or one with
// a forged signature) would be refused.
TEST(SparseEvidence, HonestChunksDoNotProveAnAccusation) {
  const int n = 4;
  const size_t size = 7001;
  const auto in = sparse_inputs(n, size, 77);
  SparseRingOptions o = options();
  o.announced_norms = norms_of(in);
  const Keys keys(n);
  const SparseRun res = run_signed(in, o, &keys);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(res.errors[r], "");
    std::map<uint32_t, std::vector<std::vector<uint8_t>>> by_source;
    for (const auto& m : res.received[r]) by_source[source_of(m)].push_back(m);
    ASSERT_EQ(by_source.size(), static_cast<size_t>(n - 1));
    for (const auto& [source, chunks] : by_source) {
      const EvidenceContext ctx = context(o, r, static_cast<int>(source), n);
      const EvidenceVerdict all = judge_ring_evidence(chunks, keys.of(static_cast<int>(source)).public_key(), ctx);
      EXPECT_FALSE(all.holds);
      EXPECT_NE(all.why.find("is within the"), std::string::npos) << all.why;
      for (const auto& m : chunks)
        EXPECT_FALSE(judge_ring_evidence({m}, keys.of(static_cast<int>(source)).public_key(), ctx).holds);
    }
  }
  for (int mode : {1, 2}) {
    const SparseRun lie = run_signed(in, o, &keys, /*false_accuser=*/1, mode);
    ASSERT_EQ(lie.offender[1], 0) << lie.errors[1];
    ASSERT_EQ(lie.evidence[1].size(), 1u);
    const EvidenceVerdict v = judge_ring_evidence(lie.evidence[1], keys.of(0).public_key(), context(o, 1, 0, n));
    EXPECT_FALSE(v.holds);
    EXPECT_NE(v.why.find(mode == 1 ? "within the" : "signature"), std::string::npos) << v.why;
  }
}

// A forwarder that alters another author's chunk within that author's
// bound (the sign of one kept value flipped: the norm unchanged, so no norm
// check can see it) is caught by the next rank on receipt: the author's
// signature does not hold, while the forwarder's own signature as sender
// does, which proves it to the coordinator. Without node keys the same
// alteration goes through unseen (what the signatures close).
TEST(SparseEvidence, AForwarderThatAltersAnothersChunkIsCaughtByTheNextRankOnItsOwnSignature) {
  for (int n : {3, 5}) {
    SCOPED_TRACE(str("N=", n));
    const size_t size = 5003;
    const auto in = sparse_inputs(n, size, 60 + n);
    SparseRingOptions o = options();
    o.announced_norms = norms_of(in);
    const int forwarder = 1, next = 2;
    auto run = [&](const Keys* keys, int mode) {
      Ring ring(n);
      memring::RingRun r = memring::run_sparse_ring(ring, in, o, [&](int rank, SparseRingOptions& x) {
        if (keys) {
          x.signer = &keys->of(rank);
          x.member_keys = keys->publics();
        }
        if (rank == forwarder) x.attack_alter_forwarded = mode;
      });
      return r;
    };
    // Unsigned: the round completes, and the rank after the forwarder
    // averages values other than the honest ranks' (the alteration is real).
    const memring::RingRun honest = run(nullptr, 0), unseen = run(nullptr, 1);
    for (int r = 0; r < n; ++r) ASSERT_EQ(unseen.errors[r], "") << "rank " << r;
    EXPECT_NE(unseen.out[next], honest.out[next]);
    EXPECT_EQ(unseen.out[forwarder], honest.out[forwarder]);

    const Keys keys(n);
    const memring::RingRun caught = run(&keys, 1);
    const memring::Accusations acc = memring::accusations_of(caught);
    ASSERT_EQ(acc.offender[next], forwarder) << caught.errors[next];
    // Rank 2 first gets the forwarder's own chunks (untouched), then rank 0's, altered.
    EXPECT_NE(caught.errors[next].find("the author signature does not hold for rank 0's key"), std::string::npos)
        << caught.errors[next];
    EXPECT_NE(caught.errors[next].find(fingerprint(keys.of(forwarder).public_key())), std::string::npos)
        << "the log names the forwarder's key: " << caught.errors[next];
    EXPECT_NE(caught.errors[next].find("altered another node's chunk"), std::string::npos) << caught.errors[next];
    for (int r = 0; r < n; ++r)
      if (r != next) {
        EXPECT_EQ(acc.offender[r], -1) << "rank " << r << " accuses nobody: " << caught.errors[r];
      }
    ASSERT_EQ(acc.evidence[next].size(), 1u) << caught.errors[next];
    const std::vector<uint8_t>& m = acc.evidence[next][0];
    EXPECT_NE(parse_sparse_header(m, "m").source, static_cast<uint32_t>(forwarder)) << "another author's chunk";
    EvidenceContext ctx = context(o, next, forwarder, n);
    ctx.keys = keys.publics();
    const EvidenceVerdict v = judge_ring_evidence(acc.evidence[next], keys.of(forwarder).public_key(), ctx);
    EXPECT_TRUE(v.holds) << v.why;
    EXPECT_TRUE(v.altered);
    // Not against anyone else, nor from anyone but the forwarder's successor.
    for (int other = 0; other < n; ++other) {
      if (other == forwarder || other == next) continue;
      EvidenceContext c = context(o, next, other, n);
      c.keys = keys.publics();
      EXPECT_FALSE(judge_ring_evidence(acc.evidence[next], keys.of(other).public_key(), c).holds) << other;
      EvidenceContext far = context(o, other, forwarder, n);
      far.keys = keys.publics();
      EXPECT_FALSE(judge_ring_evidence(acc.evidence[next], keys.of(forwarder).public_key(), far).holds) << other;
    }
    EvidenceContext other_round = ctx;
    other_round.round += 1;
    EXPECT_FALSE(judge_ring_evidence(acc.evidence[next], keys.of(forwarder).public_key(), other_round).holds);
    // An honest chunk as it was sent (both signatures hold) proves nothing of the kind.
    const SparseRun plain = run_signed(in, o, &keys);
    for (const auto& h : plain.received[next])
      EXPECT_FALSE(judge_ring_evidence({h}, keys.of(forwarder).public_key(), ctx).holds);

    // With a broken signature of its own as sender, the forwarder cannot be
    // shown: the round still fails at the next rank, without evidence.
    const memring::RingRun hidden = run(&keys, 2);
    const memring::Accusations h = memring::accusations_of(hidden);
    ASSERT_EQ(h.offender[next], forwarder) << hidden.errors[next];
    EXPECT_TRUE(h.evidence[next].empty());
    EXPECT_NE(hidden.errors[next].find("its signature as sender does not hold either"), std::string::npos)
        << hidden.errors[next];
  }
}

// A chunk replayed from another round, lane or chunk does not verify: the
// author's signature binds them (only the step is left out), even when the
// payload is the very same bytes. Replayed by a forwarder under its own
// signature as sender, it is caught by the next rank and proven.
TEST(SparseEvidence, AChunkReplayedFromAnotherRoundOrLaneIsRefused) {
  const int n = 3;
  const size_t size = 5003;
  const auto in = sparse_inputs(n, size, 88);
  SparseRingOptions o = options();
  o.announced_norms = norms_of(in);
  const Keys keys(n);
  const SparseRun first = run_signed(in, o, &keys);
  for (int r = 0; r < n; ++r) ASSERT_EQ(first.errors[r], "");
  // Rank 1 received rank 2's chunks from rank 0 at step 1.
  std::vector<uint8_t> old;
  for (const auto& m : first.received[1])
    if (source_of(m) == 2 && parse_sparse_header(m, "m").chunk == 1) old = m;
  ASSERT_FALSE(old.empty());
  const PublicKey author = keys.of(2).public_key();
  ASSERT_TRUE(sparse_message_signed_by(old, author));
  auto put_u64 = [](std::vector<uint8_t>& m, size_t at, uint64_t v) { std::memcpy(m.data() + at, &v, 8); };
  auto put_u32 = [](std::vector<uint8_t>& m, size_t at, uint32_t v) { std::memcpy(m.data() + at, &v, 4); };
  {
    auto next_round = old, other_lane = old, other_chunk = old, other_author = old;
    put_u64(next_round, 8, o.round + 1);
    put_u32(other_lane, 52, o.lane + 1);
    put_u32(other_chunk, 36, 0);
    put_u32(other_author, 32, 0);
    EXPECT_FALSE(sparse_message_signed_by(next_round, author));
    EXPECT_FALSE(sparse_message_signed_by(other_lane, author));
    EXPECT_FALSE(sparse_message_signed_by(other_chunk, author));
    EXPECT_FALSE(sparse_message_signed_by(other_author, keys.of(0).public_key()));
  }
  // The next round (or another lane), same inputs: rank 0 forwards the old
  // chunk in place of the new one, its header rewritten to pass, signed on.
  for (bool lane : {false, true}) {
    SCOPED_TRACE(lane ? "another lane" : "another round");
    SparseRingOptions next = o;
    if (lane) next.lane = o.lane + 1;
    else next.round = o.round + 1;
    auto replay = [&](std::vector<uint8_t>& m) {
      const SparseHeader h = parse_sparse_header(m, "m");
      if (h.source != 2 || h.chunk != 1) return;
      m = old;
      if (lane) put_u32(m, 52, next.lane);
      else put_u64(m, 8, next.round);
      sign_sparse_forward(m, keys.of(0), sparse_payload_digest(m));
    };
    const SparseRun res = run_signed(in, next, &keys, -1, 1, /*tamperer=*/0, replay);
    ASSERT_EQ(res.offender[1], 0) << res.errors[1];
    EXPECT_NE(res.errors[1].find("the author signature does not hold for rank 2's key"), std::string::npos)
        << res.errors[1];
    ASSERT_EQ(res.evidence[1].size(), 1u);
    EvidenceContext ctx = context(next, 1, 0, n);
    ctx.keys = keys.publics();
    const EvidenceVerdict v = judge_ring_evidence(res.evidence[1], keys.of(0).public_key(), ctx);
    EXPECT_TRUE(v.holds) << v.why;
    EXPECT_TRUE(v.altered);
    // Unaltered, the old chunk is refused by its header before anything else.
    auto as_is = [&](std::vector<uint8_t>& m) {
      const SparseHeader h = parse_sparse_header(m, "m");
      if (h.source == 2 && h.chunk == 1) m = old;
    };
    const SparseRun stale = run_signed(in, next, &keys, -1, 1, 0, as_is);
    EXPECT_NE(stale.errors[1].find(lane ? "disagree on the ring layout (diloco.rings)" : "a stale message"),
              std::string::npos)
        << stale.errors[1];
  }
}

// A node-key run's chunks default to at least 64 KiB of payload (the fixed
// signature work per chunk stays under the chunk's link time); a
// shared-secret run keeps 64 blocks.
TEST(SparseEvidence, KeyedRoundsDefaultToChunksOfAtLeast64KiB) {
  for (double d : {1.0 / 4096, 0.01, 0.03, 0.1, 1.0}) {
    const size_t k = sparse_k_for_density(d, 4096), per_block = sparse_encoded_bytes(4096, 4096, k);
    EXPECT_EQ(default_sparse_chunk_blocks(4096, k, false), 64u);
    const size_t b = default_sparse_chunk_blocks(4096, k, true);
    EXPECT_GE(b, 64u);
    EXPECT_GE(b * per_block, kKeyedSparseChunkBytes) << "density " << d;
    if (b > 64) {
      EXPECT_LT((b - 1) * per_block, kKeyedSparseChunkBytes) << "the fewest blocks that reach it";
    }
  }
  EXPECT_EQ(default_sparse_chunk_blocks(4096, sparse_k_for_density(0.01, 4096), true), 729u);
}

// Sparse messages of version 2 carry their flags and lane; ring members
// carry their keys for the accuser's check.
TEST(SparseEvidence, HeadersAndRingMembersCarryWhatTheChecksNeed) {
  SparseHeader h;
  h.round = 5;
  h.total_elems = 1000;
  h.world = 3;
  h.step = 1;
  h.source = 2;
  h.chunk = 0;
  h.count = 1000;
  h.block = 512;
  h.k = 5;
  h.lane = 7;
  h.is_signed = true;
  std::vector<uint8_t> m = encode_sparse_header(h);
  EXPECT_TRUE(is_sparse_message(m));
  m.resize(kSparseHeaderBytes + sparse_encoded_bytes(1000, 512, 5));
  EXPECT_THROW(parse_sparse_header(m, "no signature"), Error);
  m.resize(m.size() + kSparseSignatureBytes);
  EXPECT_THROW(parse_sparse_header(m, "the author's signature alone"), Error);
  m.resize(m.size() + kSparseSignatureBytes);
  const SparseHeader back = parse_sparse_header(m, "m");
  EXPECT_EQ(back.lane, 7u);
  EXPECT_TRUE(back.is_signed);
  m[5] = 0x02;  // an unknown flag
  EXPECT_THROW(parse_sparse_header(m, "m"), Error);
  m[5] = 0x01;
  m[4] = 1;  // the version before signed chunks
  EXPECT_THROW(parse_sparse_header(m, "m"), Error);
  m[4] = 2;  // the version before senders signed what they forward
  EXPECT_THROW(parse_sparse_header(m, "m"), Error);
  EXPECT_FALSE(sparse_message_signed_by(std::vector<uint8_t>(10, 0), NodeKey::generate().public_key()));

  control::RingAnnounce a;
  a.round = 4;
  control::RingMember mem;
  mem.node_id = 9;
  mem.key = NodeKey::generate().public_key();
  a.members.push_back(mem);
  control::RingMember keyless;
  keyless.node_id = 10;
  a.members.push_back(keyless);
  const auto got = std::get<control::RingAnnounce>(control::decode(control::encode(a), "test"));
  EXPECT_EQ(got.members[0].key, mem.key);
  EXPECT_EQ(got.members[1].key, PublicKey{});
}

}  // namespace
}  // namespace intellect
