// A RunSnapshot as the status server serves it: JSON for /api/status (and
// the page, which renders that), Prometheus' text format for /metrics. Pure
// functions of the snapshot, run on the server's thread.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "status/run_status.h"

namespace intellect {

// What the page and /metrics show about the whole run, from the members'
// own reports.
struct RunSummary {
  int live = 0;                    // members
  double tokens_per_s = 0;         // summed over members
  double utilization = -1;         // 1 - blocked / wall over members (-1: nothing reported)
  double eta_s = -1;               // the slowest member's (-1: unknown)
  int64_t inner_step = 0, total_steps = 0;  // the furthest member's
  int gpus = 0;
  std::vector<LossPoint> mean_loss;  // per inner step, over the members that reported it
};
RunSummary summarize(const RunSnapshot& s);

nlohmann::json status_json(const RunSnapshot& s);
std::string prometheus_text(const RunSnapshot& s);

// "1h 02m", "4m 05s", "17s"; "?" for a negative (unknown) duration.
std::string format_duration(double seconds);

}  // namespace intellect
