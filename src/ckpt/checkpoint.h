// Training checkpoints: one directory per step under a root,
//
//   <root>/step_00001200/
//     model.safetensors      parameters, F32, internal names (ParamLayout)
//     optimizer.safetensors  AdamW state: exp_avg.<name>, exp_avg_sq.<name> (F32);
//                            absent in a weights-only checkpoint (e.g. imported)
//     outer.safetensors      DiLoCo: outer.<name>, outer_momentum.<name> (F32),
//                            when the run does outer steps
//     outer_in_flight.safetensors
//                            DiLoCo with overlap: in_flight.<name> (F32), the
//                            pseudo-gradient of the round in flight when the
//                            checkpoint was taken (its outer step in the
//                            manifest's "outer_in_flight_step"); absent when none
//     error_feedback.safetensors
//                            DiLoCo with sparse compression: error_feedback.<name>
//                            (F32), the node's unsent residual; absent otherwise
//     tokenizer/             the run's tokenizer files, when it has them
//     manifest.json          format, version, step, config, data position, RNG,
//                            schedule and optimizer state, per-file BLAKE2b-256
//     COMPLETE               written last: the checkpoint is whole
//
// Writing goes to <root>/.step_00001200.partial/ (every file fsynced), which is
// renamed to its final name, and only then gets COMPLETE. A crash at any
// point leaves earlier checkpoints untouched and never a directory that
// passes validation half-written.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace intellect {

inline constexpr int kCheckpointVersion = 1;
inline constexpr const char* kCheckpointFormat = "intellect-checkpoint";

struct CheckpointState {
  int64_t step = 0;             // optimizer steps completed
  nlohmann::json config;        // the run's config document; must hold "model"
  std::vector<float> params;    // flat fp32, laid out by ParamLayout(model config)
  std::vector<float> exp_avg;   // AdamW m (flat); empty = weights only
  std::vector<float> exp_avg_sq;
  int64_t optimizer_step = 0;   // AdamW's bias-correction step
  std::vector<float> outer;            // DiLoCo outer parameters (flat); empty = none
  std::vector<float> outer_momentum;
  // DiLoCo with overlap: the outer step whose all-reduce was in flight (0:
  // none; the outer state above is then that of the step before it) and
  // its pseudo-gradient, which a resumed node launches again.
  int64_t outer_in_flight_step = 0;
  std::vector<float> outer_in_flight;
  // Eager overlap: the scale of the node's own δ the round after it started
  // from (diloco.eager_standin; manifest "outer_in_flight_standin_scale", 1
  // when absent), needed to recompute that start bit for bit.
  float outer_in_flight_standin_scale = 1.0f;
  // DiLoCo with sparse compression: the node's error-feedback residual (flat;
  // empty = none), as of the outer state above (before a round in flight).
  std::vector<float> error_feedback;
  nlohmann::json data_position; // loader position, or null
  nlohmann::json rng;           // RNG state (seeds; all our generators are counter-based)
  nlohmann::json schedule;      // e.g. {"step": N, "lr": last lr}
  std::vector<std::string> tokenizer_files;  // copied into tokenizer/ when non-empty
};

// Name of the directory for a step: "step_00001200".
std::string checkpoint_dir_name(int64_t step);

// Writes <root>/step_NNNNNNNN atomically and returns its path. Refuses to
// overwrite an existing complete checkpoint of the same step.
std::string write_checkpoint(const std::string& root, const CheckpointState& state);

// Reads and validates a step directory: COMPLETE marker, manifest format and
// version, every file's size and checksum, tensor names and shapes against the
// model config the manifest holds. `with_optimizer` false skips the optimizer
// file (it is still checksummed when present). Errors name the checkpoint and
// what is wrong.
CheckpointState read_checkpoint(const std::string& step_dir, bool with_optimizer = true);

// The model config recorded in a checkpoint's manifest (no tensors read).
ModelConfig checkpoint_model_config(const std::string& step_dir);

// Step directories under root, newest first (complete or not).
std::vector<std::string> list_checkpoints(const std::string& root);

// The newest checkpoint under root that reads back cleanly (optimizer state
// included or not) and that `accept` (when given) does not refuse by
// throwing, with its state as read, so the caller need not read it again;
// dir is "" if none. Each one skipped is reported through `report`.
struct FoundCheckpoint {
  std::string dir;
  CheckpointState state;
};
FoundCheckpoint find_newest_checkpoint(const std::string& root, bool with_optimizer,
                                       const std::function<void(const std::string&)>& report,
                                       const std::function<void(const CheckpointState&)>& accept = {});
// Its directory only.
std::string newest_valid_checkpoint(const std::string& root,
                                    const std::function<void(const std::string&)>& report,
                                    const std::function<void(const CheckpointState&)>& accept = {});

// Removes all but the newest `keep` complete checkpoints, and leftover
// .partial directories of writers that died.
void prune_checkpoints(const std::string& root, int64_t keep);

}  // namespace intellect
