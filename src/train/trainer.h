// The training loop: batches from token shards, forward/backward with
// gradient accumulation over micro-batches, AdamW, one log line per step and
// the same figures as JSON lines in the metrics file.
#pragma once
#include <atomic>

#include "train/config.h"

namespace intellect {

struct TrainResult {
  double first_loss = 0.0, last_loss = 0.0;
  double final_val_loss = -1.0;  // -1 when there is no validation data
  int64_t steps = 0;
  // DiLoCo: seconds the training thread spent in outer steps (blocked from the
  // GPU), and the wall time of this run's steps; utilization = 1 - blocked / wall.
  double outer_blocked_s = 0.0, wall_s = 0.0;
  // Of outer_blocked_s, the end's wait for the round still in flight (overlap
  // only): paid once per run, however long, so a long run's utilization tends
  // to 1 - (blocked - final) / (wall - final), the steady state.
  double outer_final_blocked_s = 0.0;
};

// Runs cfg.train.steps optimizer steps. `stop` (set by a signal handler) ends
// the run after the current step, and the model is still saved.
TrainResult train(const Config& cfg, const std::atomic<bool>* stop = nullptr);

}  // namespace intellect
