// The settings every node of a run must share, compared when a node joins.
//
// Why: a node whose diloco.* or model.* settings differ from the run's (an
// outer lr, a compression, a rotation seed; or an older build whose
// defaults differ) computes other outer steps from the same average, and its
// outer parameters diverge at its first outer step. The coordinator only
// logs a divergence: the node would go on training a model of its own. So
// each node sends its run-wide settings with its Join, the first node's
// become the run's (kept in the coordinator's state file across restarts),
// and a joiner with others is refused at once, the keys named.
//
// The settings travel as a JSON object (canonical: nlohmann::json orders
// keys), at most kMaxRunSettingsBytes. Empty means "not given" (tools and
// tests that drive MeshNode directly): such a node is not compared.
// Pure functions; any thread.
#pragma once
#include <cstddef>
#include <string>

namespace intellect {

constexpr size_t kMaxRunSettingsBytes = 16384;

// "" when `joiner` has the same settings as `run`; otherwise what differs,
// up to a few keys, e.g. "diloco.outer_lr is 1 here and 1.25 in the run;
// diloco.all_reduce is ...". A joiner whose text is not a JSON object gets
// that said instead (nor one nested more than 8 levels: nothing recurses over
// a peer's text). Keys present on one side only count as differences.
std::string run_settings_difference(const std::string& run, const std::string& joiner);

// Whether `text` is settings at all: a JSON object of at most 8 levels.
bool run_settings_valid(const std::string& text);

}  // namespace intellect
