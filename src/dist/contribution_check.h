// What a ring rank checks of its predecessor's messages against the norms
// the ring's members announced before the round (issue: contributions that
// cannot poison the run).
//
// In the reduce-scatter, the message a rank receives at step t for a segment
// is the sum of that segment's values from the t + 1 ranks before it. By the
// triangle inequality its L2 norm is at most the sum of those ranks' norms
// (each rank's segment is part of its whole vector). In the all-gather, a
// segment's average is at most the mean of all norms. A rank that scales its
// own contribution beyond its announcement, or inflates what it forwards,
// breaks the bound its successor checks: at step 0 the successor sees the
// predecessor's own contribution alone, so an understated norm is caught at
// the first hop. Honest sums stay far inside the bound (the triangle bound
// is loose, and a segment is 1/N of each vector); `slack` absorbs int8's
// rounding. An honest predecessor checked what it received, so a violation
// names the predecessor.
//
// Evidence (node-key runs, ring_evidence.h): with keep_evidence, it keeps a
// copy of the kKeptPerStep largest (by sum of squares) signed messages of
// each step, and a violation carries the fewest of them (the current one
// included) whose squares alone exceed the bound. An excess spread thinly
// over more messages than that cannot be shown this way: the accusation
// then carries none. Copies are made only when a message is among the
// largest so far, about kKeptPerStep · ln(messages) of them per step.
//
// One per ring call, owned by the receiving thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <array>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace intellect {

// Below this sum of squares nothing is accused: a segment of zeros
// quantizes to zeros, and fp32 sums of denormals are not worth an accusation.
constexpr double kNormFloor = 1e-30;

// A signed message kept as evidence, with its decoded sum of squares.
struct KeptMessage {
  double sum_squares = 0.0;
  std::vector<uint8_t> message;
};
// Keeps `message` among the `most` largest by sum of squares (a copy only
// when it is among them).
void keep_largest(std::vector<KeptMessage>& kept, size_t most, double sum_squares, std::span<const uint8_t> message);
// The fewest of `kept`, largest first, whose squares exceed bound² (summed
// in that order, as the judges sum them); none if all of them do not, or
// they would not fit an accusation.
std::vector<std::vector<uint8_t>> fewest_exceeding(std::vector<KeptMessage>& kept, double bound);

class ContributionCheck {
 public:
  // norms[k]: rank k's announced norm (empty or any negative: no checks).
  static constexpr size_t kKeptPerStep = 8;
  ContributionCheck(const std::vector<double>& norms, int rank, int world, double slack, bool keep_evidence = false);
  bool enabled() const { return enabled_; }
  // Adds one arrived message's sum of squares to its step's segment and
  // throws ContributionExceedsAnnouncement (naming the predecessor, with the
  // evidence) when the segment so far exceeds its bound. `message`: the
  // whole signed message, kept as evidence if it is among the largest.
  void add(bool all_gather, size_t step, double sum_squares, const std::string& what,
           std::span<const uint8_t> message = {});
  // The bound on a step's segment norm (for tests and the error message).
  double bound(bool all_gather, size_t step) const;

 private:
  std::vector<double> norms_;
  int rank_, world_;
  double slack_;
  bool enabled_ = false, keep_evidence_ = false;
  std::map<std::pair<bool, size_t>, double> seen_;  // (phase, step) -> sum of squares so far
  std::map<std::pair<bool, size_t>, std::vector<KeptMessage>> kept_;  // (phase, step) -> its largest messages
};

// The direct pattern's check (direct_allreduce.h): every contribution
// reaches its segment's owner unsummed, so contribution k's decoded squares,
// summed over the owner's segment, must stay within k's announced norm, and
// an owner's average over its segment within the mean of the norms (times
// `slack` each: the codec's rounding). The offender is the sender itself.
// With keep_evidence (node-key runs), as ContributionCheck: the
// kKeptPerStep largest signed contribution messages of each source are
// kept, and a violation carries the fewest of them whose squares alone
// break the bound (judge_direct_evidence checks them). So with an owner's
// averages, signed too: an inflated average carries the fewest of the
// owner's largest that break the mean of the norms' bound.
// One per direct call, shared by its codec threads under the caller's lock.
class DirectNormCheck {
 public:
  DirectNormCheck(const std::vector<double>& norms, int world, double slack, bool keep_evidence = false);
  bool enabled() const { return enabled_; }
  // `message`: the whole signed message the squares are of (kept as evidence
  // if it is among the source's largest); empty: none.
  void add_contribution(size_t source, double sum_squares, const std::string& what,
                        std::span<const uint8_t> message = {});
  void add_average(size_t owner, double sum_squares, const std::string& what, std::span<const uint8_t> message = {});
  double contribution_bound(size_t source) const { return slack_ * norms_[source]; }
  double average_bound() const;

 private:
  std::vector<double> norms_, contributed_, averaged_;
  double slack_;
  bool enabled_ = false, keep_evidence_ = false;
  std::vector<std::vector<KeptMessage>> kept_;      // per source: its largest signed contributions
  std::vector<std::vector<KeptMessage>> kept_avg_;  // per owner: its largest signed averages
};

double fp32_sum_squares(const uint8_t* payload, size_t count);
// Σ (x[i] + residual[i])² in double (residual may be null), on eight
// running sums: the announced norm's sum.
double sum_squares_f64(const float* x, const float* residual, size_t n);

// The sparse all-gather's check (sparse_allgather.h): there contributions
// travel the ring unchanged, each message one chunk of one source's, so
// each source's decoded values are bounded by that source's own announced
// norm: a sparse node announces ‖input + residual‖, the vector its top-k
// keeps values of, and a kept value decodes within half a grid step of
// itself (at most 1/14 of its block's largest kept magnitude), so an
// honest contribution decodes to at most (1 + 1/14) of that norm; `slack`
// (1.08 by default) covers it. A violation names the predecessor, as above:
// an honest predecessor checked the message before forwarding it.
// One per ring call, owned by the receiving thread.
// The slack of the sparse check: an honest contribution decodes to at most
// (1 + 1/14) of its announced norm (above).
constexpr double kSparseNormSlack = 1.08;
class SourceNormCheck {
 public:
  SourceNormCheck(const std::vector<double>& norms, int rank, int world, double slack);
  bool enabled() const { return enabled_; }
  // Adds the decoded sum of squares of one arrived chunk of `source`'s
  // contribution; throws ContributionExceedsAnnouncement past its bound.
  void add(size_t source, double sum_squares, const std::string& what);
  double bound(size_t source) const { return slack_ * norms_[source]; }

 private:
  std::vector<double> norms_, seen_;
  int rank_, world_;
  double slack_;
  bool enabled_ = false;
};

// What a node announces of its pseudo-gradient before a ring forms: its L2
// norm, and a commitment to its bytes: the BLAKE2b-256 of the SHA-256 of
// 16 fixed parts (leaf_digest: the hash a core runs fastest), so `threads`
// changes the speed, never the result. With sparse compression
// the norm is of x + residual (the error-feedback buffer added before the
// top-k; empty: none), the commitment of x alone. Dense rounds commit to
// their encoded chunks instead (commitment.h): commit_bytes = false skips
// this one (the commitment is left zero).
struct Announcement {
  double norm = 0.0;
  std::array<uint8_t, 32> commitment{};
};
Announcement announce_contribution(std::span<const float> x, int threads, std::span<const float> residual = {},
                                   bool commit_bytes = true);

}  // namespace intellect
