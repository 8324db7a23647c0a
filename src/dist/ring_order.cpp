#include "dist/ring_order.h"

#include <algorithm>
#include <limits>

namespace intellect {

namespace {

bool is_bad(const LinkSet& bad, uint64_t a, uint64_t b) {
  return bad.count({std::min(a, b), std::max(a, b)}) != 0;
}

// Depth-first search for a directed Hamiltonian cycle through `nodes` using
// only links `usable(from, to)` admits, from nodes[0]. Successors are tried
// in the given order (so a usable order is kept as it is), or with
// `fewest_onward` the successor with the fewest usable ways on first
// (Warnsdorff's rule: it finds a cycle in a sparse graph of fast links
// without wandering), ties in the given order. Bounded: a search that runs
// out of budget reports no cycle, which leaves a node out or keeps a slower
// order, never stalls the coordinator's loop.
struct CycleSearch {
  std::vector<std::vector<char>> usable;  // [from][to], indices into the nodes
  bool fewest_onward = false;
  size_t budget = 0;
  std::vector<size_t> path;
  std::vector<bool> used;

  bool run() {
    const size_t n = usable.size();
    if (n == 0) return false;
    path.assign(1, 0);
    used.assign(n, false);
    used[0] = true;
    return extend();
  }
  size_t onward(size_t from) const {
    size_t k = 0;
    for (size_t j = 0; j < usable.size(); ++j) k += !used[j] && j != from && usable[from][j];
    return k;
  }
  bool extend() {
    const size_t n = usable.size();
    if (path.size() == n) return n < 2 || usable[path.back()][path.front()];
    std::vector<std::pair<size_t, size_t>> next;  // (onward ways, index)
    for (size_t i = 0; i < n; ++i)
      if (!used[i] && usable[path.back()][i]) next.push_back({fewest_onward ? onward(i) : 0, i});
    std::stable_sort(next.begin(), next.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [ways, i] : next) {
      if (budget == 0) return false;
      --budget;
      used[i] = true;
      path.push_back(i);
      if (extend()) return true;
      path.pop_back();
      used[i] = false;
    }
    return false;
  }
};

// Steps per search: an exhaustive search of a ring of 8 takes at most 7! =
// 5040; a search that runs out on a large ring costs milliseconds.
constexpr size_t kSearchBudget = 100000;
constexpr size_t kRateSearchBudget = 20000;  // per threshold; a few thresholds are tried

template <class Usable>
bool cycle_through(const std::vector<uint64_t>& nodes, const Usable& usable, bool fewest_onward, size_t budget,
                   std::vector<uint64_t>& out) {
  CycleSearch s;
  s.usable.assign(nodes.size(), std::vector<char>(nodes.size(), 0));
  for (size_t a = 0; a < nodes.size(); ++a)
    for (size_t b = 0; b < nodes.size(); ++b) s.usable[a][b] = a != b && usable(nodes[a], nodes[b]);
  s.fewest_onward = fewest_onward;
  s.budget = budget;
  if (!s.run()) return false;
  out.clear();
  for (size_t i : s.path) out.push_back(nodes[i]);
  return true;
}

}  // namespace

std::vector<uint64_t> arrange_ring(std::vector<uint64_t> nodes, const LinkSet& bad,
                                   std::vector<uint64_t>* left_out) {
  const auto works = [&](uint64_t a, uint64_t b) { return !is_bad(bad, a, b); };
  for (;;) {
    if (nodes.size() <= 1) return nodes;
    std::vector<uint64_t> ring;
    if (cycle_through(nodes, works, false, kSearchBudget, ring)) return ring;
    // Leave out the node with the most bad links among these (ties: the highest id).
    size_t worst = 0;
    int worst_links = -1;
    for (size_t i = 0; i < nodes.size(); ++i) {
      int links = 0;
      for (uint64_t other : nodes)
        if (other != nodes[i] && is_bad(bad, nodes[i], other)) ++links;
      if (links > worst_links || (links == worst_links && nodes[i] > nodes[worst])) {
        worst = i;
        worst_links = links;
      }
    }
    if (left_out) left_out->push_back(nodes[worst]);
    nodes.erase(nodes.begin() + static_cast<std::ptrdiff_t>(worst));
  }
}

double link_rate_mbit(uint64_t bytes_sent, double send_seconds) {
  if (bytes_sent == 0) return 0.0;
  const double bits = 8.0 * static_cast<double>(bytes_sent);
  if (!(send_seconds > 0.0) || bits / send_seconds / 1e6 > kMaxLinkMbit) return kMaxLinkMbit;
  return bits / send_seconds / 1e6;
}

double slowest_link(const std::vector<uint64_t>& ring, const LinkRates& rates) {
  double slowest = 0.0;
  for (size_t i = 0; ring.size() > 1 && i < ring.size(); ++i) {
    const auto it = rates.find({ring[i], ring[(i + 1) % ring.size()]});
    if (it != rates.end() && (slowest == 0.0 || it->second < slowest)) slowest = it->second;
  }
  return slowest;
}

namespace {

// The rates the search goes by: the members' measured links, and for a
// direction not measured yet, its reverse's rate. Links are mostly
// symmetric, so a slow link measured one way is not tried the other way
// first; an asymmetric one shows as soon as its other direction is measured.
LinkRates assumed_rates(const std::vector<uint64_t>& ring, const LinkRates& measured) {
  const std::set<uint64_t> members(ring.begin(), ring.end());
  LinkRates r;
  for (const auto& [link, mbit] : measured)
    if (members.count(link.first) && members.count(link.second)) {
      r[link] = mbit;
      r.emplace(std::make_pair(link.second, link.first), mbit);  // unless measured itself
    }
  return r;
}

}  // namespace

RingOrder order_ring_by_rate(const std::vector<uint64_t>& ring, const LinkSet& bad, const LinkRates& measured,
                             double min_gain) {
  const LinkRates rates = assumed_rates(ring, measured);
  RingOrder out;
  out.nodes = ring;
  out.given_slowest_mbit = out.slowest_mbit = slowest_link(ring, rates);
  // Two members use both directions whatever the order; nothing measured
  // on the given ring: it counts as fast, keep it.
  if (ring.size() < 3 || out.given_slowest_mbit <= 0.0) return out;
  const std::set<uint64_t> members(ring.begin(), ring.end());
  const double floor = out.given_slowest_mbit * min_gain;  // what a new order must reach
  // Above the slowest of the members' fastest links out and in (unmeasured:
  // unbounded) no ring exists: those thresholds are not tried.
  constexpr double kUnbounded = std::numeric_limits<double>::infinity();
  double bound = kUnbounded;
  for (uint64_t m : ring) {
    double best_out = 0.0, best_in = 0.0;
    for (uint64_t o : ring) {
      if (o == m) continue;
      const auto out_it = rates.find({m, o}), in_it = rates.find({o, m});
      if (!is_bad(bad, m, o)) {
        best_out = std::max(best_out, out_it == rates.end() ? kUnbounded : out_it->second);
        best_in = std::max(best_in, in_it == rates.end() ? kUnbounded : in_it->second);
      }
    }
    bound = std::min({bound, best_out, best_in});
  }
  // The thresholds to try, ascending: the floor, then every measured rate among the members above it.
  std::vector<double> thresholds{floor};
  for (const auto& [link, mbit] : rates)
    if (mbit > floor && mbit <= bound && members.count(link.first) && members.count(link.second))
      thresholds.push_back(mbit);
  std::sort(thresholds.begin(), thresholds.end());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  auto cycle_at = [&](double t, std::vector<uint64_t>& found) {
    const auto fast_enough = [&](uint64_t a, uint64_t b) {
      if (is_bad(bad, a, b)) return false;
      const auto it = rates.find({a, b});
      return it == rates.end() || it->second >= t;  // unmeasured: fast until measured
    };
    return cycle_through(ring, fast_enough, true, kRateSearchBudget, found);
  };
  // The fastest few thresholds first (where the fast links form a sparse
  // graph, a search succeeds or fails quickly); then, since a cycle at
  // threshold t is one at any lower threshold too, a binary search below.
  std::vector<uint64_t> best;
  size_t lo = 0, hi = thresholds.size();  // thresholds[lo] admits a cycle once best is set; [hi, end) do not
  constexpr size_t kTopFirst = 4;
  for (size_t k = 0; k < std::min(kTopFirst, thresholds.size()) && best.empty(); ++k) {
    const size_t i = thresholds.size() - 1 - k;
    if (cycle_at(thresholds[i], best)) lo = i;
    else hi = i;
  }
  if (best.empty()) {
    if (hi == 0 || !cycle_at(thresholds.front(), best)) return out;  // no ring beats the given one by min_gain
    lo = 0;
  }
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    std::vector<uint64_t> found;
    if (cycle_at(thresholds[mid], found)) {
      lo = mid;
      best = std::move(found);
    } else {
      hi = mid;
    }
  }
  out.nodes = std::move(best);
  out.slowest_mbit = slowest_link(out.nodes, rates);
  out.reordered = out.nodes != ring;
  return out;
}

std::vector<uint64_t> arrange_direct(std::vector<uint64_t> nodes, const LinkSet& bad,
                                     std::vector<uint64_t>* left_out) {
  for (;;) {
    std::map<uint64_t, size_t> broken;  // member -> its bad links to other members
    const std::set<uint64_t> in(nodes.begin(), nodes.end());
    for (const auto& [a, b] : bad)
      if (a != b && in.count(a) && in.count(b)) ++broken[a], ++broken[b];
    if (broken.empty()) return nodes;
    uint64_t worst = 0;
    size_t most = 0;
    for (const auto& [id, n] : broken)
      if (n > most || (n == most && id > worst)) worst = id, most = n;
    nodes.erase(std::remove(nodes.begin(), nodes.end(), worst), nodes.end());
    if (left_out) left_out->push_back(worst);
  }
}

}  // namespace intellect
