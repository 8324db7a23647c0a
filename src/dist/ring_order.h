// The order of a ring's members: around links that do not work, and by the
// link rates nodes measured, so that the ring's slowest link is as fast as
// the measurements allow (a ring all-reduce runs at its slowest link's pace).
//
// Pure functions of their arguments, no I/O, no clock: the coordinator's
// loop thread calls them when it announces a ring, and every node gets the
// order from that announcement, so rings are identical on every node and
// the same inputs always give the same ring.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace intellect {

// Links known not to work, as (lower id, higher id): a partition fails both ways.
using LinkSet = std::set<std::pair<uint64_t, uint64_t>>;

// Orders `nodes` into a ring in which no two neighbours form a pair in `bad`,
// keeping the given order when it already does and staying as close to it as
// the search allows. When no such ring exists, nodes are left out (the one
// with the most bad links first, then the highest id) until one does; they
// are appended to `left_out` (they take the round's average from a donor).
std::vector<uint64_t> arrange_ring(std::vector<uint64_t> nodes, const LinkSet& bad,
                                   std::vector<uint64_t>* left_out);

// The direct pattern's round (direct_allreduce.h): every member talks to
// every other, so no pair in `bad` may both be members. Nodes are left out
// (the one with the most bad links among those still in first, then the
// highest id) until none is; the others keep their order. Left-out nodes
// are appended to `left_out`.
std::vector<uint64_t> arrange_direct(std::vector<uint64_t> nodes, const LinkSet& bad,
                                     std::vector<uint64_t>* left_out);

// Measured throughput of directed links, Mbit/s: (from, to), where `from`
// sends to `to` (ring traffic flows one way: each member sends to the next).
// Links are asymmetric (a home line uploads slower than it downloads), so
// a ring and its reverse may differ. A link with no entry is unmeasured.
using LinkRates = std::map<std::pair<uint64_t, uint64_t>, double>;

// What a node reports of its link to its ring successor (control::Ready's
// link_mbit), measured on the round's own traffic: the bytes it sent over
// the time its sending threads were blocked handing them to the link
// (pacing, backpressure; RingStats::send_s, the slowest lane's). A link
// that is the ring's bottleneck keeps its sender blocked, so this is its
// rate; a faster one waits for data, not for the link, and measures fast
// (at most kMaxLinkMbit). 0: nothing sent, nothing measured.
inline constexpr double kMaxLinkMbit = 1e6;
double link_rate_mbit(uint64_t bytes_sent, double send_seconds);

// The slowest measured link of a ring in this order (0 when none is measured).
double slowest_link(const std::vector<uint64_t>& ring, const LinkRates& rates);

struct RingOrder {
  std::vector<uint64_t> nodes;   // the ring to announce
  double slowest_mbit = 0.0;     // its slowest measured link (0: none measured)
  double given_slowest_mbit = 0.0;  // that of the order it was given
  bool reordered = false;        // nodes differs from the order given
};

// The order of `ring` (already around bad links: arrange_ring's) whose
// slowest measured link is fastest: a bottleneck travelling-salesman search.
// The thresholds are the measured rates among the members; for each, a
// bounded depth-first search looks for a directed Hamiltonian cycle that
// uses no bad link and no measured link slower than it, trying successors in
// the given order (so the result stays close to it); the fastest threshold
// that admits a cycle wins (binary search over the sorted thresholds, so the
// cost is a few searches even for large rings). Exact for small rings (the
// search is exhaustive within its budget), a heuristic beyond.
//
// A direction not measured takes its reverse's rate (links are mostly
// symmetric); links not measured either way count as fast: rings try them
// and they get measured (a ring measures each of its links), so a swarm
// learns its links as it goes. slowest_mbit and given_slowest_mbit are by
// these rates too.
// The given order is kept unless the new ring's slowest link is at least
// `min_gain` times faster (measurements are noisy, and "ties" keep today's
// order), or when nothing in the given order is measured.
RingOrder order_ring_by_rate(const std::vector<uint64_t>& ring, const LinkSet& bad, const LinkRates& measured,
                             double min_gain = 1.25);

}  // namespace intellect
