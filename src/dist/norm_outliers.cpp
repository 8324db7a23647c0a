#include "dist/norm_outliers.h"

#include <algorithm>

#include "util/error.h"

namespace intellect {

NormJudgement judge_norms(const std::map<uint64_t, double>& norms, double factor, double reference,
                          size_t members_in_run) {
  NormJudgement j;
  if (factor <= 0) return j;
  for (const auto& [id, norm] : norms) {
    std::vector<double> others;
    for (const auto& [o, n] : norms)
      if (o != id) others.push_back(n);
    double against_value = reference;
    const char* against = "the last ring's median";
    if (!others.empty()) {
      std::sort(others.begin(), others.end());
      const size_t m = others.size();
      against_value = m % 2 ? others[m / 2] : 0.5 * (others[m / 2 - 1] + others[m / 2]);
      against = "the median of the others";
    } else if (members_in_run <= 1) {
      continue;
    }
    if (against_value > 0 && norm > factor * against_value) {
      j.left_out.push_back(id);
      j.why[id] = str("its pseudo-gradient norm ", norm, " is above ", factor, " x ", against, " (", against_value, ")");
    }
  }
  if (norms.size() > 1 && j.left_out.size() * 2 > norms.size()) {
    j.left_out.clear();
    j.why.clear();
  }
  return j;
}

}  // namespace intellect
