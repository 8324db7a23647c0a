// The DiLoCo side of a node: the outer optimizer, its fp32 host buffers, and
// the protocol that gets each outer step's averaged pseudo-gradient: in the
// ring, from a donor when late for it, or the run's whole state from a donor
// (joining, or when nobody has the round any more). The training loop calls
// start() once, step() every diloco.inner_steps steps, finish() at the last
// step and abandon() when it stops before the end; everything between
// (rings, retries, rewinds, catching up) happens inside.
//
// diloco.overlap picks when a round runs:
//  - "none": step() runs the round and the outer step; the training thread
//    waits for both (DiLoCo as published).
//  - "eager" / "delayed": step() launches round k on the round thread and
//    returns; round k + 1's inner steps run meanwhile from a stand-in for
//    outer step k: the outer step this node's own pseudo-gradient would
//    give (eager), or where round k ended (delayed: its own progress). The
//    next step() takes round k's average, applies outer step k (the same on
//    every node), moves the local weights onto it (keeping round k + 1's
//    progress, measured from the stand-in) and launches round k + 1.
//    finish() applies the last round, so a run ends on the shared outer
//    parameters. docs/ARCHITECTURE.md ("Overlapped outer steps") has the
//    arithmetic and the measurements that chose eager.
//
// Threads. The training thread owns this object: the outer optimizer
// (outer parameters, momentum), every Backend call (weights, AdamW state:
// the GPU in production), snapshots for joiners, and the metrics. The
// snapshot copier's thread reads the outer state and the moments' copy for a
// joiner's snapshot (SnapshotCopier), and everything that changes them
// waits for it first. The round
// thread (overlap only; at most one round at a time, launched and joined by
// the training thread) touches only the round's host buffers (it reads
// pseudo_, the round's input, and writes params_, the round's average or the
// scratch for catching up) and the MeshNode's round calls (average, donors,
// publishing the round it got); what it gets, or the exception that ended
// it (evicted, stopped, a failure), is handed to the training thread when
// that one takes the round. The training thread leaves params_ alone while
// a round is in flight, and the outer optimizer changes only while none is.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/block_rotation.h"
#include "dist/codec.h"
#include "dist/diloco.h"
#include "dist/error_feedback.h"
#include "dist/mesh_node.h"
#include "train/backend.h"
#include "train/config.h"
#include "train/join_state.h"
#include "train/snapshot_copier.h"
#include "util/stop_relay.h"

namespace intellect {

class OuterSync {
 public:
  // How an outer step got its average; the states a step passes through.
  enum class Way {
    ring,              // this node's pseudo-gradient averaged in the announced ring
    round_from_donor,  // late for the ring: the round's average from a node that has it
    state_from_donor,  // nobody has the round any more: the run's state afresh, as a joiner
  };
  static const char* way_name(Way w);

  // The outer step whose result a node holds when it starts at `start_step`
  // (0, or a resumed checkpoint's step) with `in_flight_step`'s round in
  // flight (0: none): with one in flight, the step before it.
  static int64_t held_outer_step(int64_t start_step, int64_t in_flight_step, int64_t inner_steps) {
    return in_flight_step > 0 ? in_flight_step - 1 : start_step / inner_steps;
  }

  // A checkpoint's DiLoCo state (all empty: none).
  struct Resumed {
    std::vector<float> outer, momentum;
    // Overlap: the outer step whose round was in flight when the checkpoint
    // was taken (0: none) and its pseudo-gradient, launched again by start().
    int64_t in_flight_step = 0;
    std::vector<float> in_flight;
    float in_flight_standin_scale = 1.0f;  // eager: the scale its successor round started with
    // Sparse compression: the node's error-feedback residual (empty: none,
    // it starts at zero).
    std::vector<float> error_feedback;
  };

  // `params` is the training loop's host copy of the weights (flat), which
  // the outer step reads and writes, and which holds the round's average in
  // between (one fp32 copy of the model fewer); with overlap it belongs to
  // the round thread while a round is in flight. `data_position` says where
  // the loader is (reported to the coordinator with each ring).
  OuterSync(const Config& cfg, Backend& backend, MeshNode* mesh, std::vector<float>& params,
            const std::atomic<bool>* stop, std::function<std::string()> data_position);
  ~OuterSync();  // gives up a round still in flight (abandon())

  // Where this node's outer state comes from: a donor when the coordinator
  // named one (a run in progress), else the resumed checkpoint's outer state
  // (and its round in flight: launched again, or with overlap none done at
  // once), else the current weights. Returns the inner step to start at (a
  // joiner lines up with the donor's progress).
  int64_t start(int64_t start_step, bool resumed, Resumed resumed_state);
  // How this node joined a run in progress (null otherwise), for the metrics.
  const nlohmann::json& joined() const { return joined_; }

  // At the end of inner step `steps_done` (a multiple of diloco.inner_steps):
  // the outer step that ends there (none), or the one in flight since the
  // last boundary, with the next one launched (delayed). Returns the applied
  // outer step's metrics line (null when none was applied: the first
  // boundary with overlap). take_skip_to(): where a late node goes on (0:
  // the next step as usual).
  nlohmann::json step(int64_t steps_done);
  int64_t take_skip_to();
  // The end of training (the last step): with overlap, the round in flight
  // is taken and applied, so the weights end as the run's outer parameters
  // (exactly, when no inner step ran since it was launched; else with the
  // progress since kept on top). Its metrics line, or null when nothing was
  // in flight (and always with overlap none).
  nlohmann::json finish(int64_t steps_done);
  // diloco.apply_on_arrival: after an inner step, the round in flight if its
  // average has arrived (checked without waiting), applied now as the end
  // of the run applies one (the progress since the round's start kept on
  // top). Its metrics line, or null (nothing arrived, the option off, or a
  // round that came late or as the run's state: those wait for the boundary,
  // which lines the node up).
  // With diloco.apply_after_steps τ, also: at τ inner steps after the
  // round's launch, the round waited for (the wait counts as time the
  // training thread was held) and applied the same way, so every node
  // applies it at the same step.
  nlohmann::json apply_if_arrived(int64_t steps_done);
  // The node stops before the end (a signal, train.stop_after_steps): the
  // round in flight is given up (MeshNode::cancel; its neighbours go on
  // without this node). A checkpoint taken before holds it (in_flight_*).
  void abandon();

  // A snapshot of the outer state for joiners (when one asks); the seconds
  // the training thread spent (the moments' download: the wire copy, the
  // hashing and the serving run on other threads). It is of outer_done():
  // with overlap, the round in flight is not in it (a joiner fetches that
  // round's average from the donor once it is done).
  double publish_snapshot(int64_t steps_done);
  // A joiner waits for a snapshot and none is being copied.
  bool snapshot_wanted() const;
  int64_t outer_done() const { return outer_done_; }
  const OuterOptimizer& optimizer() const { return *outer_; }
  bool overlapped() const { return overlap_; }
  // The round in flight (overlap; or without it, a round a stop request
  // gave up): its outer step (0: none) and its pseudo-gradient, which the
  // round thread only reads: for checkpoints.
  int64_t in_flight_step() const { return in_flight_; }
  const std::vector<float>& in_flight_pseudo_gradient() const { return pseudo_; }
  float in_flight_standin_scale() const { return standin_scale_; }
  // Sparse, blocks4 and blocks2 compression: the node's error-feedback buffer (null otherwise).
  // Changed only by the training thread at a boundary; a round in flight
  // only reads it, so a checkpoint may copy it at any step.
  const ErrorFeedback* error_feedback() const { return ef_.get(); }
  // fp32 bytes this component holds (the loop's weights, which carry the
  // average between the pseudo-gradient and the step, not counted).
  size_t host_bytes() const;

 private:
  // The run's state as fetched from a donor (its snapshot with the rounds
  // completed since applied on the host), not yet this node's.
  struct RunState {
    int64_t outer_step = 0;
    uint64_t state_bytes = 0;
    nlohmann::json summary;
    JoinState js;
  };
  // The outer step's block mask under a rotation (none otherwise).
  struct RotationMask {
    std::vector<uint8_t> moves;  // empty: no rotation, every value steps
    size_t block = 0;
    StepMask mask;
    const StepMask* get() {  // the span made here, where `moves` now lives
      if (moves.empty()) return nullptr;
      mask = StepMask{moves, block};
      return &mask;
    }
  };
  RotationMask rotation_mask(int64_t k) const;
  // What one round got: params_ holds the average (unless `state`).
  struct Round {
    int64_t k = 0;  // the outer step (with `state`: the one the state is of)
    Way way = Way::ring;
    bool late = false;
    std::optional<RunState> state;
    OuterRoundStats rs;
    SparseRound sparse;  // sparse compression: what this node sent
    // blocks4: the blocks of outer step k; blocks_in_ holds what this node
    // sent of them (prepared: the attempt's ring input is ready).
    BlockSelection blocks;
    bool blocks_prepared = false;
    double allreduce_s = 0.0, publish_s = 0.0;
    // The ring's input is params_ itself (δ there, averaged in place), not
    // pseudo_; input_used: it was handed to an attempt (rebuild before another).
    bool in_place = false, input_used = false;
    nlohmann::json parts = nlohmann::json::object();
  };
  // What turns a round away from the way it was being got.
  using Turn = std::variant<LateForRing, RewoundTo>;
  // Host buffers and round calls only (the round thread's part). The mesh's
  // late, rewound and evicted come back as values; evicted is thrown on as
  // EvictedFromRun (the process ends and is started again).
  std::variant<RunState, RewoundTo> fetch_run_state(int64_t at_least);
  Round run_round(int64_t k, const std::string& data_position, int64_t steps_done, bool in_place = false);
  void rebuild_pseudo_gradient();
  std::optional<Turn> try_way(Round& r, int64_t take_at_least, const std::string& data_position);
  std::variant<bool, RewoundTo> round_from_donor(int64_t k);
  // A donor's round k (as its ring carried it) into params_: blocks4
  // decodes the selected blocks and puts 0 elsewhere.
  void decode_round_average(const StateDownload& d, int64_t k);
  // blocks4: round k's selection and this node's sent values in blocks_in_
  // (the ring codec's round trip of pseudo-gradient + residual over the selected blocks), once per round.
  void prepare_blocks(Round& r);
  // The training thread's part: backend and outer optimizer.
  void apply_run_state(RunState& s);
  int64_t line_up(int64_t k);
  void launch(int64_t k, int64_t steps_done);
  Round take(int64_t steps_done, double* waited);
  void wait_round_done(int64_t steps_done);  // serving joiners' snapshots meanwhile
  nlohmann::json metrics(const Round& r, uint64_t hash, nlohmann::json parts) const;
  nlohmann::json land(Round& r, bool exact, nlohmann::json parts);
  void round_start(const float* delta, float* out) const;
  std::future<uint64_t> hash_outer_params() const;
  uint64_t settle(const Round& r, std::future<uint64_t> outer_hash);  // hash reported, held step, outer_done_
  // The round's effect on the error-feedback buffer; pseudo_ must still be
  // that round's pseudo-gradient. Training thread, at the boundary.
  void commit_error_feedback(const Round& r);
  nlohmann::json step_blocking(int64_t steps_done);
  void keep_round_in_flight(int64_t k, int64_t steps_done);  // step_blocking's round, given up on a stop
  nlohmann::json step_overlapped(int64_t steps_done);
  // Before the outer state changes: a snapshot still being copied from it
  // is finished first (its seconds in parts["snapshot_wait_s"] when any).
  void finish_snapshot_copy(nlohmann::json* parts);

  const Config& cfg_;
  Backend& backend_;
  MeshNode* mesh_;
  std::vector<float>& params_;
  const std::atomic<bool>* stop_;
  std::function<std::string()> data_position_;
  const bool overlap_, eager_;  // diloco.overlap: none, eager or delayed
  const bool fitted_standin_;   // diloco.eager_standin "fitted"
  const bool apply_on_arrival_;  // diloco.apply_on_arrival (with overlap)
  const int64_t apply_after_;     // diloco.apply_after_steps (with overlap; 0: off)
  // Eager: the scale of the own δ the round in flight's successor started
  // from (1: "own"); the next boundary recomputes that start with it. Part
  // of a checkpoint's round in flight.
  float standin_scale_ = 1.0f;
  // Without overlap or sparse's residual the round runs in place in params_:
  // three fp32 copies of the model (weights|δ|average, outer, momentum).
  const bool in_place_;
  size_t n_ = 0;  // parameters
  bool pinned_ = false;  // params_ is page-locked (backend_.pin_params_buffer) until the destructor
  std::unique_ptr<OuterOptimizer> outer_;
  std::unique_ptr<ErrorFeedback> ef_;  // diloco.compression "sparse", "blocks4" and "blocks2" only
  // blocks4 / blocks2: which blocks each round sends, and the round's compact vectors:
  // blocks_in_ what this node sends (the ring's input, which it leaves
  // untouched), blocks_out_ their average. The round thread (overlap) writes
  // them; the training thread reads blocks_in_ when it commits the round's
  // error feedback, before it launches the next round.
  std::unique_ptr<BlockRotation> rotation_;
  std::unique_ptr<BlockCodec> rotation_codec_;  // the ring's codec (int4 or int2), for rotation_prepare
  std::vector<float> blocks_in_, blocks_out_;
  // The ring's input, untouched by it (a retried round starts from it); with
  // overlap, the pseudo-gradient of the round in flight. Empty when rounds
  // run in place (in_place_), but for a resumed checkpoint's round in flight.
  std::vector<float> pseudo_;
  std::vector<float> snap_m_, snap_v_;  // the moments' host copy, kept: the next snapshot reuses its pages
  nlohmann::json joined_;
  int64_t outer_done_ = 0;  // the outer step whose result outer_ holds
  int64_t skip_to_ = 0;     // a late node's next step
  // Without overlap, a round holds the training thread inside the mesh: a
  // stop request reaches the mesh through this (MeshNode::cancel), so the
  // round gives up within a fraction of a second (step() then throws
  // StoppedOnRequest with the round kept as in flight). Null with overlap
  // (abandon() cancels, after the last checkpoint) or without a mesh.
  std::unique_ptr<StopRelay> stop_relay_;
  // Overlap: the round in flight (0: none), the inner step it was launched
  // at, and the round thread with what it got (under mu_).
  int64_t in_flight_ = 0, launched_at_ = 0;
  std::thread round_thread_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool round_done_ = false;
  std::optional<Round> round_result_;
  std::exception_ptr round_error_;
  // Last: destroyed first, so a copy in progress ends before what it reads goes.
  SnapshotCopier snapshot_copier_;

 public:
  // Tests: the copier of this node's snapshots (a sink without a mesh, a copy held open).
  SnapshotCopier& snapshot_copier_for_test() { return snapshot_copier_; }
};

}  // namespace intellect
