// Which ready nodes a ring leaves out because the norm of the pseudo-gradient
// they announced is an outlier (issue 16: contributions that cannot poison
// the run). Pure rules, no I/O: the coordinator's loop thread calls it when
// it announces a ring, and tests call it directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace intellect {

struct NormJudgement {
  std::vector<uint64_t> left_out;
  std::map<uint64_t, std::string> why;  // for each node left out, what its norm was judged against
};

// `norms`: the announced norms of the ring's nodes for this step (nodes that
// announced none are not judged). `factor`: a norm above factor x its
// reference is an outlier (<= 0: nobody is). `reference`: the median of the
// newest ring's accepted norms, for a node alone (0: none known, e.g. since
// the run went back to an older step, whose norms are not comparable).
// `members_in_run`: how many nodes the run has, ready or not.
//
// Each node is judged against the median of the others, so that of two the
// larger is judged against the smaller and the smaller is never left out. A
// node alone in its ring is judged against `reference`, so that a ring of one
// cannot carry an outlier into the run (late nodes would take that round from
// it), unless it is the run's only member: then nobody else takes anything
// from it, and leaving it out would stop the run for good (nobody can give it
// the round instead). A majority is never left out: norms alone cannot tell
// who is right then.
NormJudgement judge_norms(const std::map<uint64_t, double>& norms, double factor, double reference,
                          size_t members_in_run);

}  // namespace intellect
