// The ring's order, a pure rule: around links that do not work
// (arrange_ring), and by measured directed link rates so that the slowest
// link of the ring is as fast as the measurements allow
// (order_ring_by_rate); ties, and rings nothing is measured on, keep the
// order given.
#include "dist/ring_order.h"

#include <algorithm>
#include <random>

#include "test_util.h"

namespace intellect {
namespace {

// Partitions: rings are arranged so that no broken link joins two neighbours.
bool valid_ring(const std::vector<uint64_t>& r, const LinkSet& bad) {
  for (size_t i = 0; r.size() > 1 && i < r.size(); ++i) {
    const uint64_t a = r[i], b = r[(i + 1) % r.size()];
    if (bad.count({std::min(a, b), std::max(a, b)})) return false;
  }
  return true;
}

TEST(RingOrder, RingsAreArrangedAroundBrokenLinks) {
  std::vector<uint64_t> out;
  // No broken link: the order is kept.
  EXPECT_EQ(arrange_ring({4, 2, 9, 7}, {}, &out), (std::vector<uint64_t>{4, 2, 9, 7}));
  EXPECT_TRUE(out.empty());
  // 2-9 broken: reordered, everyone kept.
  const LinkSet one = {{2, 9}};
  std::vector<uint64_t> r = arrange_ring({4, 2, 9, 7}, one, &out);
  EXPECT_EQ(r.size(), 4u);
  EXPECT_TRUE(valid_ring(r, one));
  EXPECT_TRUE(out.empty());
  // In a ring of three every pair are neighbours: one end of the link is left out.
  r = arrange_ring({1, 2, 3}, {{1, 3}}, &out);
  EXPECT_EQ(r, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(out, (std::vector<uint64_t>{3}));
  // A node cut off from all but one other cannot be in a ring of three or more.
  out.clear();
  const LinkSet star = {{1, 5}, {2, 5}, {3, 5}};
  r = arrange_ring({1, 2, 3, 5, 6}, star, &out);
  EXPECT_EQ(out, (std::vector<uint64_t>{5}));
  EXPECT_EQ(r.size(), 4u);
  EXPECT_TRUE(valid_ring(r, star));
  // Two nodes that cannot reach each other: one is left out; one node alone is a ring.
  out.clear();
  EXPECT_EQ(arrange_ring({8, 3}, {{3, 8}}, &out), (std::vector<uint64_t>{3}));
  EXPECT_EQ(out, (std::vector<uint64_t>{8}));
  out.clear();
  EXPECT_EQ(arrange_ring({8}, {{3, 8}}, &out), (std::vector<uint64_t>{8}));
  EXPECT_TRUE(out.empty());
  // Many nodes, many broken links: whatever comes back is a valid ring of distinct
  // members, and together with those left out it is everyone.
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    std::vector<uint64_t> nodes;
    for (uint64_t i = 1; i <= 12; ++i) nodes.push_back(i * 10 + seed % 7);
    LinkSet bad;
    std::mt19937_64 rng(seed);
    for (int k = 0; k < static_cast<int>(seed % 25); ++k) {
      const uint64_t a = nodes[rng() % nodes.size()], b = nodes[rng() % nodes.size()];
      if (a != b) bad.insert({std::min(a, b), std::max(a, b)});
    }
    out.clear();
    r = arrange_ring(nodes, bad, &out);
    EXPECT_TRUE(valid_ring(r, bad)) << "seed " << seed;
    std::vector<uint64_t> all = r;
    all.insert(all.end(), out.begin(), out.end());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, nodes) << "seed " << seed;
    if (bad.size() <= 3) {
      EXPECT_TRUE(out.empty()) << "twelve nodes and three broken links always leave a ring of all";
    }
  }
}

// Every directed link between 1..n at `mbit`.
LinkRates full_mesh(uint64_t n, double mbit) {
  LinkRates r;
  for (uint64_t a = 1; a <= n; ++a)
    for (uint64_t b = 1; b <= n; ++b)
      if (a != b) r[{a, b}] = mbit;
  return r;
}
void both_ways(LinkRates& r, uint64_t a, uint64_t b, double mbit) {
  r[{a, b}] = mbit;
  r[{b, a}] = mbit;
}

// The direct pattern uses every link between members: one end of each bad
// link is left out (the one with the most, then the highest id), the rest
// keep their order.
TEST(RingOrder, DirectRoundsLeaveOutOneEndOfEveryBadLink) {
  std::vector<uint64_t> out;
  EXPECT_EQ(arrange_direct({4, 2, 9, 7}, {}, &out), (std::vector<uint64_t>{4, 2, 9, 7}));
  EXPECT_TRUE(out.empty());
  // A ring could go around 2-9; the direct pattern cannot.
  EXPECT_EQ(arrange_direct({4, 2, 9, 7}, {{2, 9}}, &out), (std::vector<uint64_t>{4, 2, 7}));
  EXPECT_EQ(out, (std::vector<uint64_t>{9}));
  // The node with the most bad links goes first.
  out.clear();
  EXPECT_EQ(arrange_direct({1, 2, 3, 5, 6}, {{1, 5}, {2, 5}, {3, 6}}, &out), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(out, (std::vector<uint64_t>{5, 6}));
  // Links to nodes not in the round do not count.
  out.clear();
  EXPECT_EQ(arrange_direct({1, 2}, {{1, 7}, {2, 8}}, &out), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(out.empty());
}

TEST(RingOrder, WithoutMeasurementsTheGivenOrderIsKept) {
  const RingOrder o = order_ring_by_rate({4, 2, 9, 7}, {}, {});
  EXPECT_EQ(o.nodes, (std::vector<uint64_t>{4, 2, 9, 7}));
  EXPECT_FALSE(o.reordered);
  EXPECT_EQ(o.slowest_mbit, 0.0);
  EXPECT_EQ(o.given_slowest_mbit, 0.0);
}

TEST(RingOrder, GoesAroundASlowPair) {
  // 1-2 is a slow peering both ways; every other pair is fast. The given order 1,2,3,4 crosses it.
  LinkRates r = full_mesh(4, 1000.0);
  both_ways(r, 1, 2, 10.0);
  EXPECT_EQ(slowest_link({1, 2, 3, 4}, r), 10.0);
  const RingOrder o = order_ring_by_rate({1, 2, 3, 4}, {}, r);
  ASSERT_EQ(o.nodes.size(), 4u);
  EXPECT_TRUE(o.reordered);
  EXPECT_EQ(o.nodes.front(), 1u) << "the search starts where the given order does";
  EXPECT_EQ(o.slowest_mbit, 1000.0);
  EXPECT_EQ(o.given_slowest_mbit, 10.0);
  EXPECT_EQ(slowest_link(o.nodes, r), 1000.0);
  std::vector<uint64_t> sorted = o.nodes;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<uint64_t>{1, 2, 3, 4})) << "every member, once";
  // The same inputs, the same ring: every coordinator turn (and every node) agrees.
  EXPECT_EQ(order_ring_by_rate({1, 2, 3, 4}, {}, r).nodes, o.nodes);
  // Known-bad links still count: with 1-3 failing too, 1's neighbours must be 2 and 4.
  const RingOrder o2 = order_ring_by_rate({1, 2, 3, 4}, LinkSet{{1, 3}}, r);
  EXPECT_EQ(o2.nodes.size(), 4u);
  EXPECT_FALSE(o2.reordered) << "no working order beats the given one";
  EXPECT_EQ(o2.slowest_mbit, 10.0);
}

TEST(RingOrder, AsymmetricLinksPickTheDirection) {
  // 1 -> 2 is slow (an upload), 2 -> 1 is fast; every other link is fast both ways.
  // The given ring 1,2,3 sends over 1 -> 2; its reverse 1,3,2 sends 2 -> 1 instead.
  LinkRates r = full_mesh(3, 800.0);
  r[{1, 2}] = 20.0;
  const RingOrder o = order_ring_by_rate({1, 2, 3}, {}, r);
  EXPECT_EQ(o.nodes, (std::vector<uint64_t>{1, 3, 2}));
  EXPECT_EQ(o.slowest_mbit, 800.0);
  EXPECT_EQ(o.given_slowest_mbit, 20.0);
  // Only the slow direction's reverse measured slow: the given direction is kept.
  LinkRates rev = full_mesh(3, 800.0);
  rev[{2, 1}] = 20.0;
  const RingOrder kept = order_ring_by_rate({1, 2, 3}, {}, rev);
  EXPECT_EQ(kept.nodes, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_FALSE(kept.reordered);
  EXPECT_EQ(kept.slowest_mbit, 800.0);
}

TEST(RingOrder, MaximisesTheSlowestLinkAcrossRegions) {
  // Two regions {1,2,3} and {4,5,6}: 10 Gbit/s inside, 1 Gbit/s across, except 3-4 at 100 Mbit/s.
  // The interleaved order crosses regions six times, none of them 3-4; the best ring crosses twice, at 1 Gbit/s.
  LinkRates r;
  auto region = [](uint64_t n) { return n <= 3 ? 0 : 1; };
  for (uint64_t a = 1; a <= 6; ++a)
    for (uint64_t b = 1; b <= 6; ++b)
      if (a != b) r[{a, b}] = region(a) == region(b) ? 10000.0 : 1000.0;
  both_ways(r, 3, 4, 100.0);
  const std::vector<uint64_t> naive{1, 4, 2, 5, 3, 6};
  const RingOrder o = order_ring_by_rate(naive, {}, r);
  EXPECT_EQ(slowest_link(naive, r), 1000.0);
  EXPECT_EQ(o.slowest_mbit, 1000.0);  // the bottleneck cannot beat a cross-region link; the naive one is already there
  EXPECT_EQ(o.nodes, naive);          // so the order is kept (no gain worth a reconnection)
  const std::vector<uint64_t> bad_order{1, 2, 3, 4, 5, 6};
  const RingOrder better = order_ring_by_rate(bad_order, {}, r);
  EXPECT_EQ(better.given_slowest_mbit, 100.0);
  EXPECT_EQ(better.slowest_mbit, 1000.0);
  EXPECT_EQ(slowest_link(better.nodes, r), 1000.0);
}

TEST(RingOrder, TiesAndSmallGainsKeepTheGivenOrder) {
  // Every link alike: nothing to gain, the order stays.
  const RingOrder same = order_ring_by_rate({3, 1, 2, 4}, {}, full_mesh(4, 500.0));
  EXPECT_EQ(same.nodes, (std::vector<uint64_t>{3, 1, 2, 4}));
  EXPECT_FALSE(same.reordered);
  // 1 -> 2 at 900 against 1000 elsewhere: 1.11x is possible, below the 1.25x worth reordering for.
  LinkRates r = full_mesh(4, 1000.0);
  both_ways(r, 1, 2, 900.0);
  const RingOrder o = order_ring_by_rate({1, 2, 3, 4}, {}, r);
  EXPECT_EQ(o.nodes, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(o.slowest_mbit, 900.0);
  // With min_gain 1 any strict gain counts.
  EXPECT_EQ(order_ring_by_rate({1, 2, 3, 4}, {}, r, 1.0).slowest_mbit, 1000.0);
}

TEST(RingOrder, MissingMeasurementsCountAsFast) {
  // Only the slow pair measured: rings avoid it and try the unmeasured links, which then get measured.
  LinkRates one;
  both_ways(one, 1, 2, 10.0);
  const RingOrder o = order_ring_by_rate({1, 2, 3, 4}, {}, one);
  EXPECT_TRUE(o.reordered);
  EXPECT_EQ(slowest_link(o.nodes, one), 0.0);
  EXPECT_EQ(o.slowest_mbit, 0.0) << "no link of the new ring is measured yet";
  // A ring whose own links are not measured is kept, whatever else is known.
  LinkRates elsewhere;
  both_ways(elsewhere, 1, 3, 5.0);
  EXPECT_EQ(order_ring_by_rate({1, 2, 3, 4}, {}, elsewhere).nodes, (std::vector<uint64_t>{1, 2, 3, 4}));
  // Rates of nodes outside the ring do not matter.
  LinkRates outside = full_mesh(4, 100.0);
  both_ways(outside, 7, 8, 1e6);
  EXPECT_FALSE(order_ring_by_rate({1, 2, 3, 4}, {}, outside).reordered);
}

TEST(RingOrder, AnUnmeasuredDirectionTakesItsReversesRate) {
  // 2 -> 3 measured slow on the naive ring; 3 -> 2 never carried anything.
  // Assumed as slow as its reverse, neither direction is used, in one step.
  LinkRates r{{{1, 2}, 900.0}, {{2, 3}, 10.0}, {{3, 4}, 900.0}, {{4, 1}, 900.0}};
  const RingOrder o = order_ring_by_rate({1, 2, 3, 4}, {}, r);
  EXPECT_TRUE(o.reordered);
  for (size_t i = 0; i < 4; ++i) {
    const uint64_t a = o.nodes[i], b = o.nodes[(i + 1) % 4];
    EXPECT_FALSE((a == 2 && b == 3) || (a == 3 && b == 2)) << "ring " << a << " -> " << b;
  }
  // Measured fast the other way, it is used that way.
  r[{3, 2}] = 900.0;
  const RingOrder back = order_ring_by_rate({1, 2, 3, 4}, {}, r);
  EXPECT_EQ(back.slowest_mbit, 900.0);
}

TEST(RingOrder, TwoNodesAreOneRingEitherWay) {
  LinkRates r;
  r[{1, 2}] = 5.0;
  const RingOrder o = order_ring_by_rate({1, 2}, {}, r);
  EXPECT_EQ(o.nodes, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(o.slowest_mbit, 5.0);
}

TEST(RingOrder, SmallRingsGetTheBestBottleneck) {
  // Against every order of 7 nodes (6! rings through node 1), on random asymmetric rates.
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    LinkRates r;
    for (uint64_t a = 1; a <= 7; ++a)
      for (uint64_t b = 1; b <= 7; ++b)
        if (a != b) r[{a, b}] = 10.0 + static_cast<double>(rng() % 991);
    std::vector<uint64_t> perm{1, 2, 3, 4, 5, 6, 7};
    double best = 0;
    do best = std::max(best, slowest_link(perm, r));
    while (std::next_permutation(perm.begin() + 1, perm.end()));
    const RingOrder o = order_ring_by_rate({1, 2, 3, 4, 5, 6, 7}, {}, r, 1.0);
    EXPECT_EQ(o.slowest_mbit, best) << "seed " << seed;
  }
}

TEST(RingOrder, ALargeSwarmFindsTheFastRingQuickly) {
  // 48 nodes, random rates between 10 and 1000 Mbit/s, and a hidden ring of
  // 2000 Mbit/s links: the search must find a ring at least that fast (its
  // bottleneck), within the coordinator's patience.
  const uint64_t n = 48;
  std::mt19937_64 rng(5);
  LinkRates r;
  for (uint64_t a = 1; a <= n; ++a)
    for (uint64_t b = 1; b <= n; ++b)
      if (a != b) r[{a, b}] = 10.0 + static_cast<double>(rng() % 991);
  std::vector<uint64_t> hidden;
  for (uint64_t a = 1; a <= n; ++a) hidden.push_back(a);
  std::shuffle(hidden.begin() + 1, hidden.end(), rng);
  for (size_t i = 0; i < n; ++i) r[{hidden[i], hidden[(i + 1) % n]}] = 2000.0;
  std::vector<uint64_t> given;
  for (uint64_t a = 1; a <= n; ++a) given.push_back(a);
  const auto t0 = std::chrono::steady_clock::now();
  const RingOrder o = order_ring_by_rate(given, {}, r);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(o.slowest_mbit, 2000.0);
  EXPECT_EQ(slowest_link(o.nodes, r), 2000.0);
  EXPECT_LT(seconds, 2.0) << "the coordinator's loop must not stall on it";
}

}  // namespace
}  // namespace intellect
