#include "dist/contribution_check.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <cstring>

#include "dist/commitment.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_evidence.h"
#include "util/error.h"

namespace intellect {

ContributionCheck::ContributionCheck(const std::vector<double>& norms, int rank, int world, double slack,
                                     bool keep_evidence)
    : norms_(norms), rank_(rank), world_(world), slack_(slack), keep_evidence_(keep_evidence) {
  enabled_ = world > 1 && norms_.size() == static_cast<size_t>(world);
  for (double n : norms_)
    if (!(n >= 0.0) || !std::isfinite(n)) enabled_ = false;  // someone did not announce
}

double ContributionCheck::bound(bool all_gather, size_t step) const {
  double sum = 0.0;
  if (all_gather) {
    for (double n : norms_) sum += n;
    return slack_ * sum / world_;
  }
  for (size_t j = 0; j <= step; ++j) sum += norms_[((rank_ - 1 - static_cast<int>(j)) % world_ + world_) % world_];
  return slack_ * sum;
}

void keep_largest(std::vector<KeptMessage>& kept, size_t most, double sum_squares, std::span<const uint8_t> message) {
  if (kept.size() < most) {
    kept.push_back(KeptMessage{sum_squares, std::vector<uint8_t>(message.begin(), message.end())});
    return;
  }
  auto smallest = std::min_element(kept.begin(), kept.end(), [](const KeptMessage& a, const KeptMessage& b) {
    return a.sum_squares < b.sum_squares;
  });
  if (smallest->sum_squares >= sum_squares) return;
  smallest->sum_squares = sum_squares;
  smallest->message.assign(message.begin(), message.end());
}

std::vector<std::vector<uint8_t>> fewest_exceeding(std::vector<KeptMessage>& kept, double bound) {
  std::sort(kept.begin(), kept.end(),
            [](const KeptMessage& a, const KeptMessage& b) { return a.sum_squares > b.sum_squares; });
  std::vector<std::vector<uint8_t>> out;
  double sum = 0.0;
  size_t bytes = 0;
  for (KeptMessage& k : kept) {
    bytes += k.message.size();
    if (bytes > kMaxEvidenceBytes || out.size() >= kMaxEvidenceMessages) break;
    sum += k.sum_squares;
    out.push_back(std::move(k.message));
    if (sum > bound * bound + kNormFloor) return out;
  }
  return {};
}

void ContributionCheck::add(bool all_gather, size_t step, double sum_squares, const std::string& what,
                            std::span<const uint8_t> message) {
  if (!enabled_) return;
  double& seen = seen_[{all_gather, step}];
  seen += sum_squares;
  const double b = bound(all_gather, step);
  const bool keeping = keep_evidence_ && !message.empty();
  if (seen <= b * b + kNormFloor) {
    if (keeping) keep_largest(kept_[{all_gather, step}], kKeptPerStep, sum_squares, message);
    return;
  }
  const int prev = (rank_ - 1 + world_) % world_;
  std::vector<std::vector<uint8_t>> proof;
  if (keeping) {
    std::vector<KeptMessage>& kept = kept_[{all_gather, step}];
    kept.push_back(KeptMessage{sum_squares, std::vector<uint8_t>(message.begin(), message.end())});
    proof = fewest_exceeding(kept, b);
  }
  throw ContributionExceedsAnnouncement(
      str(what, ": its norm so far is ", std::sqrt(seen), ", above the ", b, " that the announced norms allow (",
          all_gather ? "the mean of all members' norms" : str("the sum of the ", step + 1, " contributors' norms"),
          ", with slack ", slack_, "): rank ", prev, " sent more than it announced"),
      prev, std::move(proof));
}

SourceNormCheck::SourceNormCheck(const std::vector<double>& norms, int rank, int world, double slack)
    : norms_(norms), seen_(norms.size(), 0.0), rank_(rank), world_(world), slack_(slack) {
  enabled_ = world > 1 && norms_.size() == static_cast<size_t>(world);
  for (double n : norms_)
    if (!(n >= 0.0) || !std::isfinite(n)) enabled_ = false;  // someone did not announce
}

void SourceNormCheck::add(size_t source, double sum_squares, const std::string& what) {
  if (!enabled_ || source >= seen_.size()) return;
  double& seen = seen_[source];
  seen += sum_squares;
  const double b = bound(source);
  if (seen <= b * b + kNormFloor) return;
  const int prev = (rank_ - 1 + world_) % world_;
  throw ContributionExceedsAnnouncement(
      str(what, ": rank ", source, "'s contribution decodes to a norm of ", std::sqrt(seen), " so far, above the ", b,
          " its announced norm allows (", norms_[source], " with slack ", slack_, "): rank ", prev,
          " sent more than was announced"),
      prev);
}

DirectNormCheck::DirectNormCheck(const std::vector<double>& norms, int world, double slack, bool keep_evidence)
    : norms_(norms),
      contributed_(norms.size(), 0.0),
      averaged_(norms.size(), 0.0),
      slack_(slack),
      keep_evidence_(keep_evidence),
      kept_(norms.size()),
      kept_avg_(norms.size()) {
  enabled_ = world > 1 && norms_.size() == static_cast<size_t>(world);
  for (double n : norms_)
    if (!(n >= 0.0) || !std::isfinite(n)) enabled_ = false;  // someone did not announce
}

double DirectNormCheck::average_bound() const {
  double sum = 0.0;
  for (double n : norms_) sum += n;
  return norms_.empty() ? 0.0 : slack_ * sum / static_cast<double>(norms_.size());
}

void DirectNormCheck::add_contribution(size_t source, double sum_squares, const std::string& what,
                                       std::span<const uint8_t> message) {
  if (!enabled_ || source >= contributed_.size()) return;
  double& seen = contributed_[source];
  seen += sum_squares;
  const double b = contribution_bound(source);
  std::vector<KeptMessage>& kept = kept_[source];
  if (keep_evidence_ && !message.empty()) keep_largest(kept, ContributionCheck::kKeptPerStep, sum_squares, message);
  if (seen <= b * b + kNormFloor) return;
  throw ContributionExceedsAnnouncement(
      str(what, ": rank ", source, "'s contribution decodes to a norm of ", std::sqrt(seen),
          " over this segment so far, above the ", b, " its announced norm allows (", norms_[source], " with slack ",
          slack_, "): rank ", source, " sent more than it announced"),
      static_cast<int>(source), keep_evidence_ ? fewest_exceeding(kept, b) : std::vector<std::vector<uint8_t>>{});
}

void DirectNormCheck::add_average(size_t owner, double sum_squares, const std::string& what,
                                  std::span<const uint8_t> message) {
  if (!enabled_ || owner >= averaged_.size()) return;
  double& seen = averaged_[owner];
  seen += sum_squares;
  const double b = average_bound();
  std::vector<KeptMessage>& kept = kept_avg_[owner];
  if (keep_evidence_ && !message.empty()) keep_largest(kept, ContributionCheck::kKeptPerStep, sum_squares, message);
  if (seen <= b * b + kNormFloor) return;
  throw ContributionExceedsAnnouncement(
      str(what, ": rank ", owner, "'s average of its segment has a norm of ", std::sqrt(seen), " so far, above the ", b,
          " the mean of the announced norms allows (slack ", slack_, "): rank ", owner, " inflated the average"),
      static_cast<int>(owner), keep_evidence_ ? fewest_exceeding(kept, b) : std::vector<std::vector<uint8_t>>{});
}

double fp32_sum_squares(const uint8_t* payload, size_t count) {
  double s = 0.0;
  for (size_t i = 0; i < count; ++i) {
    float v;
    std::memcpy(&v, payload + 4 * i, 4);
    s += double(v) * double(v);
  }
  return s;
}

// Σ v², v = x[i] (+ residual[i], added in float as the sparse encoder adds
// them), in double. Eight running sums, not one: a single accumulator is a
// chain of dependent adds, which made this pass 5.8% of a loopback round's
// CPU (dev VM profile, 4 nodes), half the int8 encode that reads the same
// values. The order differs from a sequential sum only in the last bits of
// a norm that is checked with slack.
double sum_squares_f64(const float* x, const float* residual, size_t n) {
  constexpr size_t kLanes = 8;
  double acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t k = 0; k < kLanes; ++k) {
      const float a = residual ? x[i + k] + residual[i + k] : x[i + k];
      acc[k] += double(a) * double(a);
    }
  double s = 0.0;
  for (; i < n; ++i) {
    const float a = residual ? x[i] + residual[i] : x[i];
    s += double(a) * double(a);
  }
  for (double a : acc) s += a;
  return s;
}

Announcement announce_contribution(std::span<const float> x, int threads, std::span<const float> residual,
                                   bool commit_bytes) {
  if (!residual.empty() && residual.size() != x.size())
    fail("announce_contribution: a residual of ", residual.size(), " values for ", x.size());
  constexpr size_t kParts = 16;
  std::array<std::array<uint8_t, 32>, kParts> part_hash;
  std::array<double, kParts> part_sumsq{};
  auto work = [&](size_t p) {
    const size_t begin = x.size() * p / kParts, end = x.size() * (p + 1) / kParts;
    // With a residual, in float as the encoder adds them (sparse_encode), so
    // the norm is of the very values the top-k chooses from.
    part_sumsq[p] = sum_squares_f64(x.data() + begin, residual.empty() ? nullptr : residual.data() + begin, end - begin);
    if (commit_bytes)
      part_hash[p] = leaf_digest({reinterpret_cast<const uint8_t*>(x.data() + begin), (end - begin) * sizeof(float)});
  };
  const size_t team = std::clamp<size_t>(static_cast<size_t>(threads), 1, kParts);
  std::vector<std::thread> pool;
  for (size_t t = 1; t < team; ++t)
    pool.emplace_back([&, t] {
      for (size_t p = t; p < kParts; p += team) work(p);
    });
  for (size_t p = 0; p < kParts; p += team) work(p);
  for (auto& th : pool) th.join();
  Announcement a;
  double total = 0.0;
  for (double s : part_sumsq) total += s;
  a.norm = std::sqrt(total);
  if (!commit_bytes) return a;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  static const char label[] = "intellect pseudo-gradient commitment v2 (sha-256 parts)";
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), sizeof label);
  const uint64_t n = x.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  crypto_generichash_update(&st, len, 8);
  for (const auto& h : part_hash) crypto_generichash_update(&st, h.data(), h.size());
  crypto_generichash_final(&st, a.commitment.data(), 32);
  return a;
}

}  // namespace intellect
