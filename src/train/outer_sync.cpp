#include "train/outer_sync.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <thread>

#include "ckpt/hf_export.h"
#include "dist/mesh_node.h"
#include "dist/message_buffers.h"
#include "dist/sparse.h"
#include "train/join_state.h"
#include "train/log.h"
#include "util/error.h"

namespace intellect {

const char* OuterSync::way_name(Way w) {
  switch (w) {
    case Way::ring: return "ring";
    case Way::round_from_donor: return "round from a donor";
    case Way::state_from_donor: return "the run's state from a donor";
  }
  return "?";
}

OuterSync::OuterSync(const Config& cfg, Backend& backend, MeshNode* mesh, std::vector<float>& params,
                     const std::atomic<bool>* stop, std::function<std::string()> data_position)
    : cfg_(cfg),
      backend_(backend),
      mesh_(mesh),
      params_(params),
      stop_(stop),
      data_position_(std::move(data_position)),
      overlap_(cfg.diloco.overlap != "none"),
      eager_(cfg.diloco.overlap == "eager"),
      fitted_standin_(eager_ && cfg.diloco.eager_standin == "fitted"),
      apply_on_arrival_(overlap_ && cfg.diloco.apply_on_arrival),
      apply_after_(overlap_ ? cfg.diloco.apply_after_steps : 0),
      in_place_(cfg.diloco.overlap == "none" && cfg.diloco.compression != "sparse" && !cfg.diloco.rotates_blocks()),
      snapshot_copier_([this](int64_t outer_step, ByteBuffer bytes) {
        if (mesh_) mesh_->publish_snapshot(outer_step, std::move(bytes));
      }) {
  const size_t n = backend_.layout().total();
  outer_ = std::make_unique<OuterOptimizer>(n, cfg_.diloco.outer_lr, cfg_.diloco.outer_momentum, cfg_.diloco.nesterov);
  n_ = n;
  if (!in_place_) pseudo_.resize(n);
  if (cfg_.diloco.compression == "sparse" || cfg_.diloco.rotates_blocks())
    ef_ = std::make_unique<ErrorFeedback>(n, cfg_.diloco.error_feedback_decay);
  if (cfg_.diloco.rotates_blocks()) {
    rotation_ = std::make_unique<BlockRotation>(
        n, cfg_.diloco.block_fraction, cfg_.diloco.block_seed,
        cfg_.train.steps % cfg_.diloco.inner_steps == 0 ? cfg_.train.steps / cfg_.diloco.inner_steps : 0);
    const Compression c = parse_compression(cfg_.diloco.ring_compression());
    rotation_codec_ = make_block_codec(c, default_codec_block(c));
  }
  if (params_.size() != n)
    fail("DiLoCo: the training loop's weights hold ", params_.size(), " values, the model ", n, " (internal error)");
  // Every boundary moves the weights both ways through params_: page-locked,
  // the GPU copies them by DMA at the bus's rate with no host pass (1.1 GB
  // took 0.35-0.45 s each way through staging on the 150m config).
  std::string why;
  pinned_ = backend_.pin_params_buffer(params_.data(), n, &why);
  if (pinned_) note(str("DiLoCo: the weights' host copy (", format_bytes(n * sizeof(float)),
                        ") is page-locked; outer-step copies run by DMA"));
  else if (cfg_.train.device != "cpu") note(str("DiLoCo: outer-step copies go through staging (", why, ")"));
  backend_.get_params(params_.data());
  // Three fp32 copies of the model live here and one in the loop's params_,
  // which doubles as the average: the loop's weights are not needed between
  // the pseudo-gradient and the outer step, which overwrites them. With
  // overlap the same four: the round thread writes the average into params_
  // while the inner steps run (the training thread downloads the weights
  // there only after it has taken and applied that average).
  const uint64_t copy = static_cast<uint64_t>(n) * sizeof(float);
  std::string budget =
      in_place_ ? str("DiLoCo host memory: 3 fp32 copies of the model (weights|pseudo-gradient|average, averaged in "
                      "place; outer parameters; momentum) = ", format_bytes(3 * copy))
      : overlap_ ? str("DiLoCo host memory (overlap ", cfg_.diloco.overlap, "): 4 fp32 copies of the model (weights|the round's average, "
                     "the pseudo-gradient in flight, outer parameters, momentum) = ", format_bytes(4 * copy))
               : str("DiLoCo host memory: 4 fp32 copies of the model (weights|average, pseudo-gradient, "
                     "outer parameters, momentum) = ", format_bytes(4 * copy));
  if (ef_) budget += str(", plus the error-feedback buffer (", format_bytes(copy), ")");
  if (rotation_) budget += str(", plus ", cfg_.diloco.compression, "'s two compact vectors (about ", format_bytes(2 * copy / rotation_->period()), ")");
  if (mesh_ && cfg_.diloco.all_reduce == "direct" && cfg_.mesh.announce_norms) {
    const Compression c = parse_compression(cfg_.diloco.ring_compression());
    const size_t values = rotation_ ? n / rotation_->period() : n;
    budget += str(", plus the commitment's encodings, which the direct pattern sends (about ",
                  format_bytes(codec_encoded_bytes(c, values, c == Compression::None ? 0 : default_codec_block(c))), ")");
  }
  if (mesh_)
    budget += str(", plus up to ", format_bytes(MessageBuffers::kMaxBytes),
                  " of message buffers kept for reuse (dist/message_buffers.h)");
  const int kept_rounds = overlap_ ? 3 : 2;
  if (cfg_.mesh.serve_state && mesh_)
    budget += str(", plus ", kept_rounds, " rounds' averages as the ring carried them and the buffer the next "
                  "is written into, the oldest one's recycled (dist/round_buffers.h) (",
                  format_bytes(cfg_.diloco.compression == "none" ? (kept_rounds + 1) * copy : (kept_rounds + 1) * copy / 4),
                  ") and, while a joiner fetches one, a snapshot (about ", format_bytes(4 * copy), ")");
  note(budget);
  // Which outer recipe runs: sparse defaults to SparseLoCo's (config.h), and
  // a config file that still names DiLoCo's Nesterov settings overrides it.
  if (rotation_)
    note(str("diloco.compression=", cfg_.diloco.compression, ": each round the same 1/", rotation_->period(), " of the ",
             rotation_->blocks(), " blocks of ", kRotationBlock, " values on every node (seed ", cfg_.diloco.block_seed,
             "; every block once per ", rotation_->period(), " rounds; the run's last outer step sends every "
             "block), ", compression_name(rotation_codec_->kind()),
             cfg_.diloco.all_reduce == "direct" ? " through the direct pattern" : " through the ring",
             "; error-feedback decay ",
             cfg_.diloco.error_feedback_decay, ", outer lr ", cfg_.diloco.outer_lr, ", outer momentum ",
             cfg_.diloco.outer_momentum, cfg_.diloco.nesterov ? " (Nesterov)" : "",
             mesh_ && cfg_.diloco.compression == "blocks2" && cfg_.diloco.all_reduce == "ring"
                 ? " (diloco.all_reduce=direct quantizes each contribution once, not each hop's partial sum: "
                   "closer to fp32 on the 150m, docs/PERFORMANCE.md)"
                 : ""));
  else if (ef_)
    note(str("diloco.compression=sparse: top-k at density ", cfg_.diloco.sparse_density, ", averaged over ",
             cfg_.diloco.sparse_aggregation == "mean" ? "all nodes" : "the nodes that sent each value",
             ", error-feedback decay ",
             cfg_.diloco.error_feedback_decay, ", outer lr ", cfg_.diloco.outer_lr, ", outer momentum ",
             cfg_.diloco.outer_momentum, cfg_.diloco.nesterov ? " (Nesterov)" : "",
             cfg_.diloco.outer_momentum == 0.0 && cfg_.diloco.error_feedback_decay < 1.0
                 ? " (SparseLoCo: the decayed buffer stands in for outer momentum)"
                 : ""));
  if (mesh_ && stop_ && !overlap_) stop_relay_ = std::make_unique<StopRelay>(*stop_, [this] { mesh_->cancel(); });
  if (overlap_)
    note(str("diloco.overlap=", cfg_.diloco.overlap, ": each outer step's all-reduce runs on a thread of its own "
             "while the next round's inner steps run; its result is applied at the next boundary (one round "
             "late); meanwhile each round starts from ",
             eager_ ? "the outer step this node's own pseudo-gradient would give"
                    : "where the last one ended (this node's own progress)"));
}

OuterSync::~OuterSync() {
  abandon();
  snapshot_copier_.wait();
  if (pinned_) backend_.unpin_params_buffer(params_.data());
}

size_t OuterSync::host_bytes() const {
  return (pseudo_.capacity() + outer_->params().capacity() + outer_->momentum().capacity()) * sizeof(float);
}

// In place, the round's input is δ = outer − weights in params_, which a
// failed attempt (or a donor's round, before a rewind) overwrites; the GPU
// still holds the weights (blocking: no inner step runs meanwhile), so δ is
// the same bits again. The training thread's (in place only without overlap).
void OuterSync::rebuild_pseudo_gradient() {
  backend_.get_params(params_.data());
  outer_->pseudo_gradient(params_.data(), params_.data());
}

// Where a node goes on after it took outer step k from a donor (joining, or
// late for its ring; with overlap, also where a late node that has just
// launched round k goes on): the others are already part-way through round
// k + 1's inner steps. Starting where the donor is (one step ahead, at least
// one step before the boundary (k + 1)·H) makes this node ready with them,
// so the next ring includes it without anyone waiting; its next
// pseudo-gradient then covers fewer inner steps.
int64_t OuterSync::line_up(int64_t k) {
  const int64_t H = cfg_.diloco.inner_steps, from = k * H;
  const std::optional<int64_t> p = mesh_ ? mesh_->donor_progress() : std::nullopt;
  if (!p || *p < from) return from;
  return std::min(*p + 1, (k + 1) * H - 1);
}

// The run's state from a donor: its snapshot, then every round completed
// since (the same outer steps on the same bytes as everyone else), at
// least up to outer step `at_least` (waiting for rounds still running).
// Host memory and round calls only: the rounds are applied to the fetched
// state with an outer optimizer of its own, params_ is the scratch for each
// round's average, and nothing of this node changes until apply_run_state.
std::variant<OuterSync::RunState, RewoundTo> OuterSync::fetch_run_state(int64_t at_least) {
  StateResult fetched =
      mesh_->fetch_state(StateKind::snapshot, -1, std::chrono::milliseconds(cfg_.mesh.round_timeout_ms),
                         join_state_shared_bytes(backend_.layout().total()));
  if (const auto* rw = std::get_if<RewoundTo>(&fetched)) return *rw;
  if (const auto* ev = std::get_if<Evicted>(&fetched)) throw EvictedFromRun(ev->reason);
  const StateDownload& d = std::get<StateDownload>(fetched);
  RunState got;
  // The snapshot's parse (a copy of the whole state into four arrays, about
  // a second at 150m) runs while the rounds since come over the link; they
  // are applied once both are here.
  const size_t n = backend_.layout().total();
  std::future<JoinState> parsed = std::async(std::launch::async, [&d, n] { return decode_join_state(d.bytes, n); });
  std::vector<StateDownload> rounds_got;
  int64_t k = d.outer_step;
  const int64_t from = k;
  mesh_->set_held_step(k);
  uint64_t round_bytes = 0;
  Clock::time_point give_up = Clock::now() + std::chrono::milliseconds(cfg_.mesh.round_timeout_ms);
  for (;;) {
    if (std::optional<StateDownload> r = mesh_->fetch_round_once(k + 1)) {
      round_bytes += r->bytes.size();
      rounds_got.push_back(std::move(*r));
      ++k;
      mesh_->set_held_step(k);
      continue;
    }
    if (k >= at_least) break;
    if (const std::optional<RewoundTo> r = mesh_->poll_coordinator()) {
      // The rounds this node waits for died with their holders: the run
      // goes on from an older step, which this node may already hold.
      note(str("the run went back to outer step ", r->outer_step, " while this node caught up (at ", k, ")"));
      at_least = r->outer_step;
      give_up = Clock::now() + std::chrono::milliseconds(cfg_.mesh.round_timeout_ms);
      continue;
    }
    // Behind the step this node must reach: the round is still running
    // (or retried) on the donor. Never go on from an older state: the
    // next outer step would start from other parameters than everyone's.
    if (Clock::now() > give_up)
      fail("could not catch up to outer step ", at_least, ": the donor's state is of outer step ", k,
           " and no donor has the rounds after it");
    if ((stop_ && stop_->load()) || mesh_->cancelled())
      throw StoppedOnRequest("stopped on request while catching up with the run");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  got.js = parsed.get();
  if (got.js.outer_step != from)
    fail("the donor's snapshot says outer step ", got.js.outer_step, " inside, ", from, " outside (a faulty donor)");
  OuterOptimizer caught_up(outer_->size(), cfg_.diloco.outer_lr, cfg_.diloco.outer_momentum, cfg_.diloco.nesterov);
  caught_up.swap_state(got.js.outer, got.js.momentum);
  const int64_t rounds = static_cast<int64_t>(rounds_got.size());
  for (int64_t i = 0; i < rounds; ++i) {
    decode_round_average(rounds_got[static_cast<size_t>(i)], from + i + 1);
    caught_up.step(params_.data(), nullptr);
  }
  caught_up.release_state(got.js.outer, got.js.momentum);
  got.js.outer_step = k;
  got.outer_step = k;
  got.state_bytes = d.bytes.size();
  got.summary = nlohmann::json{{"outer_step", k},
                               {"state_bytes", d.bytes.size()},
                               {"bad_chunks_refetched", d.bad_chunks},
                               {"lanes_redialled", d.redials},
                               {"chunks_from_further_donors", d.striped_chunks},
                               {"donor_prepare_wait_s", d.prepare_wait_s},
                               {"chunks", d.n_chunks},
                               {"rounds_caught_up", rounds},
                               {"round_bytes", round_bytes}};
  return got;
}

// The fetched state becomes this node's: outer parameters and momentum, the
// donor's AdamW moments (a warm start), and params_ = the outer parameters
// (the caller uploads them, or moves them first).
void OuterSync::apply_run_state(RunState& s) {
  finish_snapshot_copy(nullptr);
  outer_->swap_state(s.js.outer, s.js.momentum);
  backend_.set_optimizer_state(s.js.exp_avg, s.js.exp_avg_sq, s.js.adam_step);
  params_.assign(outer_->params().begin(), outer_->params().end());
  s.js = JoinState{};  // the old state and the moments' copy, freed
  // The residual was this node's unsent progress relative to its own past,
  // which the run's state replaces: a joiner starts empty.
  if (ef_) ef_->reset();
}

int64_t OuterSync::start(int64_t start_step, bool resumed, Resumed resumed_state) {
  // The state this node starts from on its own (step 0, or the resumed
  // checkpoint's outer step; with a round in flight, the one before it):
  // what it holds until it has the run's.
  const int64_t own_outer = held_outer_step(start_step, resumed_state.in_flight_step, cfg_.diloco.inner_steps);
  if (mesh_) mesh_->set_held_step(own_outer);
  std::optional<RunState> from_donor;
  if (mesh_ && mesh_->welcome().donor_id != 0) {
    // A run in progress: its state comes from a donor, streamed while the
    // others keep training; rounds completed meanwhile are applied from
    // their averaged pseudo-gradients, so this node arrives identical.
    note(str("joining a run in progress (outer step ", mesh_->welcome().outer_step,
             "): fetching the state from node ", mesh_->welcome().donor_id));
    if (resumed) note("the run's state replaces the resumed checkpoint");
    const Clock::time_point t_join = Clock::now();
    for (int64_t at_least = 0;;) {
      std::variant<RunState, RewoundTo> got = fetch_run_state(at_least);
      if (auto* s = std::get_if<RunState>(&got)) {
        from_donor = std::move(*s);
        break;
      }
      // Every holder of the run's newest state is gone. If the run goes
      // back to the state this node starts from, it goes on from that.
      const RewoundTo r = std::get<RewoundTo>(got);
      if (r.outer_step <= own_outer) {
        note(str("the run went back to outer step ", r.outer_step, ", which this node holds: no download"));
        break;
      }
      at_least = r.outer_step;
    }
    if (from_donor) from_donor->summary["seconds"] = seconds_since(t_join);
  }
  if (from_donor) {
    RunState& got = *from_donor;
    apply_run_state(got);
    backend_.set_params(params_.data());
    const int64_t k = got.outer_step;
    start_step = line_up(k);
    joined_ = got.summary;
    joined_["first_step"] = start_step + 1;
    note(str("joined at outer step ", k, " (step ", start_step, "): ", got.state_bytes / 1e6, " MB of state in ",
             got.summary["seconds"].get<double>(), " s, ", got.summary["bad_chunks_refetched"].get<uint64_t>(),
             " chunk(s) fetched again, ", got.summary["rounds_caught_up"].get<int64_t>(), " round(s) caught up (",
             got.summary["round_bytes"].get<uint64_t>() / 1e6, " MB)"));
    outer_done_ = k;
    return start_step;
  }
  if (!resumed_state.outer.empty()) {
    outer_->set_state(resumed_state.outer.data(), resumed_state.momentum.data());
    if (ef_ && !resumed_state.error_feedback.empty()) ef_->set(std::move(resumed_state.error_feedback));
    else if (ef_) note("the checkpoint holds no error-feedback buffer: sparse compression starts with an empty one");
  } else {
    outer_->init(params_.data());
    if (start_step > 0)
      note("the checkpoint holds no DiLoCo state: the outer parameters restart from the resumed weights");
  }
  // The outer step whose result the outer optimizer holds: what a snapshot
  // for a joiner is "as of" (outer parameters and momentum change only there).
  outer_done_ = own_outer;
  if (resumed_state.in_flight_step > 0 && !resumed_state.outer.empty()) {
    // The round that was in flight when the checkpoint was taken is part of
    // the state: launched again (it may find its ring gone and take the
    // average from a donor, like a late node), or done now without overlap.
    const int64_t k = resumed_state.in_flight_step;
    if (rotation_)
      fail("the checkpoint has outer step ", k, "'s round in flight (a run with diloco.overlap), and "
           "diloco.compression ", cfg_.diloco.compression,
           " runs without overlap: resume it with the compression it was saved with");
    if (resumed_state.in_flight.size() != n_)
      fail("the checkpoint's round in flight has ", resumed_state.in_flight.size(), " values, the model has ", n_);
    pseudo_.swap(resumed_state.in_flight);
    standin_scale_ = resumed_state.in_flight_standin_scale;
    note(str("the checkpoint had outer step ", k, "'s round in flight: ",
             overlap_ ? "launched again" : "done now (diloco.overlap is none)"));
    if (overlap_) {
      launch(k, start_step);
    } else {
      in_flight_ = k;
      launched_at_ = start_step;
      Round r = run_round(k, data_position_(), start_step);
      const nlohmann::json line = land(r, false, nlohmann::json::object());
      note(str("outer step ", k, " applied (hash ", line["hash"].get<std::string>(), ")"));
      if (in_place_) std::vector<float>().swap(pseudo_);  // from here on the rounds run in place
    }
  }
  return start_step;
}

// A snapshot for joiners, taken when one asks: outer parameters and
// momentum as of outer_done_, this node's current AdamW moments (a warm
// start for the joiner's inner optimizer; no two nodes' agree anyway).
// The training thread takes the moments (they change at every inner step);
// the copier thread copies them and the outer state into the wire format
// and hands the bytes to the donor, which hashes and serves them. The
// outer state is read where it lives: everything that changes it calls
// finish_snapshot_copy() first.
double OuterSync::publish_snapshot(int64_t steps_done) {
  const Clock::time_point tp = Clock::now();
  snapshot_copier_.wait();  // a copy before still reads snap_m_ and snap_v_
  JoinStateView js;
  js.outer_step = outer_done_;
  js.step = steps_done;
  backend_.get_optimizer_state(snap_m_, snap_v_, js.adam_step);
  js.outer = outer_->params();
  js.momentum = outer_->momentum();
  js.exp_avg = snap_m_;
  js.exp_avg_sq = snap_v_;
  snapshot_copier_.start(js, std::clamp(std::thread::hardware_concurrency(), 1u, 16u));
  return seconds_since(tp);
}

bool OuterSync::snapshot_wanted() const {
  return mesh_ && cfg_.mesh.serve_state && !snapshot_copier_.busy() && mesh_->snapshot_wanted();
}

void OuterSync::finish_snapshot_copy(nlohmann::json* parts) {
  const double waited = snapshot_copier_.wait();
  if (waited > 0.0 && parts) (*parts)["snapshot_wait_s"] = waited;
}

// A late node's round k from a donor into params_: got (true), no live node
// has it (false), or the run went back meanwhile.
std::variant<bool, RewoundTo> OuterSync::round_from_donor(int64_t k) {
  try {
    StateResult fetched =
        mesh_->fetch_state(StateKind::round, k, std::chrono::milliseconds(cfg_.mesh.round_timeout_ms));
    if (const auto* rw = std::get_if<RewoundTo>(&fetched)) return *rw;
    if (const auto* ev = std::get_if<Evicted>(&fetched)) throw EvictedFromRun(ev->reason);
    decode_round_average(std::get<StateDownload>(fetched), k);
    note(str("outer step ", k, ": late for the ring; took the round's average from a donor"));
    return true;
  } catch (const EvictedFromRun&) {
    throw;
  } catch (const StoppedOnRequest&) {
    throw;
  } catch (const Error& e) {
    note(str("outer step ", k, ": no donor has that round (", e.what(),
             "); taking the run's state from a donor instead"));
    return false;
  }
}

void OuterSync::decode_round_average(const StateDownload& d, int64_t k) {
  if (!rotation_) {
    mesh_->decode_round_into(d, params_);
    return;
  }
  // The donor's round holds the selected blocks only, as its ring carried
  // them; which blocks they are follows from k (a round of another size is
  // refused by the decoder: not this run's rotation).
  const BlockSelection sel = rotation_->select(k);
  blocks_out_.resize(sel.values);
  mesh_->decode_round_into(d, blocks_out_);
  sel.scatter(blocks_out_, params_);
}

// A rotation's outer step k moves only the blocks round k averaged (StepMask).
OuterSync::RotationMask OuterSync::rotation_mask(int64_t k) const {
  RotationMask rm;
  if (!rotation_) return rm;
  const BlockSelection sel = rotation_->select(k);
  rm.moves = sel.chosen();
  rm.block = sel.block;
  return rm;
}

void OuterSync::prepare_blocks(Round& r) {
  if (r.blocks_prepared) return;
  r.blocks = rotation_->select(r.k);
  blocks_in_.resize(r.blocks.values);
  blocks_out_.resize(r.blocks.values);
  rotation_prepare(r.blocks, pseudo_, ef_->residual(), blocks_in_, *rotation_codec_);
  r.blocks_prepared = true;
}

int64_t OuterSync::take_skip_to() {
  const int64_t s = skip_to_;
  skip_to_ = 0;
  return s;
}

// Round r.k by r.way: nullopt when it got it (params_ holds the average, or
// r.state the run's state), else what turned it away. A round from a donor
// that no live node has any more falls through to the run's state.
std::optional<OuterSync::Turn> OuterSync::try_way(Round& r, int64_t take_at_least, const std::string& data_position) {
  for (;;) {
    switch (r.way) {
      case Way::ring: {
        if (rotation_) {
          // A block rotation: the selected blocks, already through the ring's codec, through the dense ring.
          prepare_blocks(r);
          RoundResult got = mesh_->average(r.k, data_position, blocks_in_, blocks_out_);
          if (const auto* stats = std::get_if<OuterRoundStats>(&got)) {
            r.rs = *stats;
            r.blocks.scatter(blocks_out_, params_);
            return std::nullopt;
          }
          if (const auto* late = std::get_if<LateForRing>(&got)) return *late;
          if (const auto* back = std::get_if<RewoundTo>(&got)) return *back;
          throw EvictedFromRun(std::get<Evicted>(got).reason);
        }
        if (ef_) r.sparse.residual = ef_->residual();  // read only: the training thread commits later
        // Not in place, pseudo_ stays as it was, for a retry. In place
        // (params_ holds δ and becomes the average), a retry or another
        // attempt after a rewind downloads the weights again and rebuilds δ.
        const std::span<const float> input = r.in_place ? std::span<const float>(params_) : std::span<const float>(pseudo_);
        if (r.in_place && r.input_used) rebuild_pseudo_gradient();
        r.input_used = true;
        RoundResult got = mesh_->average(r.k, data_position, input, params_, ef_ ? &r.sparse : nullptr,
                                         r.in_place ? std::function<void()>([this] { rebuild_pseudo_gradient(); })
                                                    : std::function<void()>());
        if (const auto* stats = std::get_if<OuterRoundStats>(&got)) {
          r.rs = *stats;
          return std::nullopt;
        }
        if (const auto* late = std::get_if<LateForRing>(&got)) return *late;
        if (const auto* back = std::get_if<RewoundTo>(&got)) return *back;
        throw EvictedFromRun(std::get<Evicted>(got).reason);
      }
      case Way::round_from_donor: {
        const std::variant<bool, RewoundTo> got = round_from_donor(r.k);
        if (const auto* back = std::get_if<RewoundTo>(&got)) return *back;
        if (std::get<bool>(got)) return std::nullopt;
        // No live node has that round any more (those that did are gone):
        // take the run's state afresh, as a joiner does.
        r.way = Way::state_from_donor;
        continue;
      }
      case Way::state_from_donor: {
        std::variant<RunState, RewoundTo> got = fetch_run_state(take_at_least);
        if (const auto* back = std::get_if<RewoundTo>(&got)) return *back;
        r.state = std::move(std::get<RunState>(got));
        r.k = r.state->outer_step;
        return std::nullopt;
      }
    }
  }
}

// Round k's average of pseudo_ into params_: in the ring; or late for it
// (the round's average from a donor); or the run's state afresh from a
// donor, of at least `take_at_least`. Then the average is checked and
// published for joiners and late nodes. Host buffers and round calls only
// (with overlap this runs on the round thread).
OuterSync::Round OuterSync::run_round(int64_t k, const std::string& data_position, int64_t steps_done,
                                      bool in_place) {
  Round r;
  r.k = k;
  r.in_place = in_place;
  const Clock::time_point t0 = Clock::now();
  if (mesh_) {
    int64_t take_at_least = k;
    for (;;) {
      const std::optional<Turn> turn = try_way(r, take_at_least, data_position);
      if (!turn) break;
      if (std::holds_alternative<LateForRing>(*turn)) {
        // The ring went on without this node: its pseudo-gradient is
        // dropped and the round's average comes from a donor, as for a joiner.
        r.late = true;
        r.way = Way::round_from_donor;
        continue;
      }
      const int64_t back_to = std::get<RewoundTo>(*turn).outer_step;
      if (back_to < k) {
        // Back to a step no newer than this node's: it holds the state
        // step k starts from, and its pseudo-gradient is still good.
        note(str("the run went back to outer step ", back_to, ": outer step ", k,
                 " is done again, from this node's own state"));
        // Others without this state will ask this node for it while it
        // waits for its ring, where it cannot take a snapshot: one now.
        // (With overlap the training thread is free meanwhile and takes
        // one when asked, also while it waits for this round.)
        if (cfg_.mesh.serve_state && !overlap_) publish_snapshot(steps_done);
        r.late = false;
        r.way = Way::ring;
      } else {
        note(str("the run went back to outer step ", back_to, ": taking that state from a donor"));
        r.late = true;
        r.way = Way::state_from_donor;
        take_at_least = back_to;
      }
    }
  } else {
    if (rotation_) {  // alone, a block rotation still sends only its blocks (to itself), as in a swarm
      prepare_blocks(r);
      r.blocks.scatter(blocks_in_, params_);
    } else if (ef_) {  // alone, sparse still compresses: the same SparseLoCo as a swarm
      r.sparse.sent.emplace_back();
      sparse_average_alone(pseudo_, ef_->residual(), params_, default_codec_block(Compression::Sparse),
                           sparse_k_for_density(cfg_.diloco.sparse_density, default_codec_block(Compression::Sparse)),
                           &r.sparse.sent.back());
    } else {
      if (!r.in_place) std::copy(pseudo_.begin(), pseudo_.end(), params_.begin());  // alone: the average is its own
    }
  }
  r.allreduce_s = seconds_since(t0);
  if (!r.state) {
    Clock::time_point tp = Clock::now();
    outer_->check_finite(params_.data());
    r.parts["check_s"] = seconds_since(tp);
    if (mesh_ && cfg_.mesh.serve_state) {
      // What a late node or a joiner will fetch: this round's average (the
      // ring's int8 bytes), published before the step overwrites it. The
      // snapshot only when a joiner asks for one.
      tp = Clock::now();
      mesh_->publish_round(k, params_);
      mesh_->drop_idle_snapshot();
      r.publish_s = seconds_since(tp);
      r.parts["publish_s"] = r.publish_s;
    }
    // This node holds outer step k from here on (with overlap, as outer
    // step k - 1 and round k's average, which it serves): a coordinator
    // must not think step k lost while it waits for the next boundary.
    if (mesh_) mesh_->set_held_step(k);
  }
  if (mesh_ && r.rs.ring_size > 1) {
    r.parts["ring_encode_s"] = r.rs.encode_s;
    r.parts["ring_recv_wait_s"] = r.rs.recv_wait_s;
    r.parts["ring_decode_s"] = r.rs.decode_s;
    r.parts["ring_send_s"] = r.rs.send_s;
    // Outside the ring's seconds, inside the outer step's: the commitment
    // announced before it, and the round gathered for joiners after it
    // (0 when the ring wrote it in place).
    r.parts["commit_s"] = r.rs.commit_s;
    r.parts["round_kept_s"] = r.rs.keep_s;
  }
  return r;
}

void OuterSync::launch(int64_t k, int64_t steps_done) {
  in_flight_ = k;
  launched_at_ = steps_done;
  const std::string position = data_position_();  // the loader is the training thread's
  {
    std::lock_guard<std::mutex> lock(mu_);
    round_done_ = false;
    round_result_.reset();
    round_error_ = nullptr;
  }
  const int threads = static_cast<int>(cfg_.train.threads);
  round_thread_ = std::thread([this, k, position, steps_done, threads] {
    // Its own OpenMP team (the finite check) no larger than the training thread's.
    if (threads > 0) omp_set_num_threads(threads);
    std::optional<Round> got;
    std::exception_ptr error;
    try {
      got = run_round(k, position, steps_done);
    } catch (...) {
      error = std::current_exception();  // evicted, stopped, failed: the training thread's to handle
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      round_result_ = std::move(got);
      round_error_ = error;
      round_done_ = true;
    }
    done_cv_.notify_all();
  });
}

// Waits for the round in flight. A joiner that asks for a snapshot
// meanwhile gets one (a ring may be waiting for that joiner).
// The round thread's own deadlines (mesh.round_timeout_ms and the
// coordinator's) bound this wait: the thread always ends, with a result or
// an error.
void OuterSync::wait_round_done(int64_t steps_done) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!round_done_) {
    done_cv_.wait_for(lock, std::chrono::milliseconds(20));
    if (!round_done_ && snapshot_wanted()) {
      lock.unlock();
      const double s = publish_snapshot(steps_done);
      note(str("step ", steps_done, ": took a snapshot of outer step ", outer_done_, " for a joiner in ", s,
               " s while waiting for outer step ", in_flight_, "'s round"));
      lock.lock();
    }
  }
}

OuterSync::Round OuterSync::take(int64_t steps_done, double* waited) {
  const Clock::time_point t0 = Clock::now();
  wait_round_done(steps_done);
  round_thread_.join();
  *waited = seconds_since(t0);
  if (round_error_) {
    std::exception_ptr e = round_error_;
    round_error_ = nullptr;
    in_flight_ = 0;
    std::rethrow_exception(e);
  }
  Round r = std::move(*round_result_);
  round_result_.reset();
  return r;
}

void OuterSync::abandon() {
  if (!round_thread_.joinable()) return;
  if (mesh_) mesh_->cancel();
  round_thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  round_error_ = nullptr;  // StoppedOnRequest, most likely: the node stops anyway
  round_result_.reset();
}

void OuterSync::commit_error_feedback(const Round& r) {
  if (!ef_ || r.state) return;  // the run's state: apply_run_state empties it
  // A block rotation, late: δ stays in the weights (keep_unsent_progress), not in the buffer.
  if (rotation_ && r.late) return;
  if (r.late) ef_->commit_none(pseudo_.data());  // nothing of it was averaged: all of it waits
  else if (rotation_) ef_->commit_blocks(pseudo_.data(), r.blocks, blocks_in_);
  else ef_->commit_sent(pseudo_.data(), r.sparse.sent);
}

// The new outer parameters' hash on a thread of its own: the copies and
// passes the boundary does meanwhile only read them.
std::future<uint64_t> OuterSync::hash_outer_params() const {
  return std::async(std::launch::async, [this] { return outer_->params_hash(); });
}

uint64_t OuterSync::settle(const Round& r, std::future<uint64_t> outer_hash) {
  const uint64_t hash = outer_hash.get();
  if (mesh_ && !r.late) mesh_->report_hash(r.k, hash);
  outer_done_ = r.k;
  if (mesh_) mesh_->set_held_step(r.k);
  return hash;
}

nlohmann::json OuterSync::metrics(const Round& r, uint64_t hash, nlohmann::json parts) const {
  for (auto& [name, v] : r.parts.items()) parts[name] = v;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  nlohmann::json m{{"outer_step", r.k},
                        {"late", r.late},
                        {"publish_s", r.publish_s},
                        {"ring_size", r.rs.ring_size},
                        {"rings", r.rs.rings},
                        {"bytes_sent", r.rs.bytes_sent},
                        {"bytes_received", r.rs.bytes_received},
                        {"allreduce_s", r.allreduce_s},
                        {"retries", r.rs.retries},
                        {"link_to", r.rs.link_to},
                        {"link_mbit", r.rs.link_mbit},
                        {"rewinds", mesh_ ? mesh_->rewinds() : 0},
                        {"hash", hex},
                        {"way", way_name(r.way)},
                        {"overlap", cfg_.diloco.overlap},
                        {"compression", cfg_.diloco.compression},
                        {"error_feedback_rms", ef_ ? ef_->rms() : 0.0},
                        {"parts", parts}};
  // blocks4: how many values this round's blocks held (0: late, nothing of it sent).
  if (rotation_) m["values_sent"] = r.late || r.state ? 0 : r.blocks.values;
  return m;
}

nlohmann::json OuterSync::step(int64_t steps_done) {
  return overlap_ ? step_overlapped(steps_done) : step_blocking(steps_done);
}

nlohmann::json OuterSync::step_blocking(int64_t steps_done) {
  const int64_t k = steps_done / cfg_.diloco.inner_steps;
  // Each part of the step is timed: what the training thread waits for.
  nlohmann::json parts;
  Clock::time_point tp = Clock::now();
  auto lap = [&](const char* name) {
    parts[name] = seconds_since(tp);
    tp = Clock::now();
  };
  backend_.get_params(params_.data());
  lap("download_s");
  outer_->pseudo_gradient(params_.data(), in_place_ ? params_.data() : pseudo_.data());
  lap("pseudo_gradient_s");
  Round r;
  try {
    r = run_round(k, data_position_(), steps_done, in_place_);
  } catch (const StoppedOnRequest&) {
    keep_round_in_flight(k, steps_done);
    throw;
  }
  finish_snapshot_copy(&parts);
  tp = Clock::now();
  commit_error_feedback(r);
  if (r.state) {
    apply_run_state(*r.state);  // late, and the run's state was taken afresh
  } else {
    RotationMask rm = rotation_mask(r.k);
    outer_->apply(params_.data(), params_.data(), rm.get());  // params_ held the average
    // blocks4: the blocks not averaged this round keep this node's progress
    // (all of them when late: its δ was in no average).
    if (rotation_) keep_unsent_progress(r.late ? nullptr : &r.blocks, outer_->params(), pseudo_, params_);
    lap("nesterov_s");
  }
  std::future<uint64_t> outer_hash = hash_outer_params();
  backend_.set_params(params_.data());
  lap("upload_s");
  if (r.late) skip_to_ = line_up(r.k);
  const uint64_t hash = settle(r, std::move(outer_hash));
  return metrics(r, hash, parts);
}

// Without overlap, a round a stop request gave up: kept as the round in
// flight, as overlap keeps one, for the checkpoint the stop writes. Its
// pseudo-gradient is rebuilt from the weights (the GPU still holds them:
// no inner step ran since the boundary; in place, params_ may hold part of
// an average). start() does it on resume, from this node's own state (late
// by then: the round's average from a donor).
void OuterSync::keep_round_in_flight(int64_t k, int64_t steps_done) {
  if (pseudo_.size() != n_) pseudo_.resize(n_);
  backend_.get_params(params_.data());
  outer_->pseudo_gradient(params_.data(), pseudo_.data());
  in_flight_ = k;
  launched_at_ = steps_done;
  standin_scale_ = 1.0f;
  note(str("outer step ", k, "'s round given up on a stop request: the checkpoint keeps it as in flight, done on "
           "resume"));
}

// Where a round starts with overlap, from the outer state applied last (θ,
// momentum) and the pseudo-gradient δ of the round before, whose average
// is still in flight: eager, the outer step δ alone would give (the same
// arithmetic as the real one, which uses the average); delayed, θ - δ
// (where that round ended, when it started at θ). out may alias delta.
void OuterSync::round_start(const float* delta, float* out) const {
  outer_->start(delta, out, eager_, standin_scale_);
}

// With overlap, at the end of round k (steps_done = k·H), round k - 1 in
// flight. θ = the outer parameters, δ = a round's own pseudo-gradient, s =
// a round's local start, e = the weights now:
//   s_k = start(θ_{k-2}, δ_{k-1})  (recomputed: the outer state has not changed since)
//   δ_k = s_k - e_k
//   θ_{k-1} = OuterOpt(θ_{k-2}, avg δ_{k-1})   (the same on every node)
//   s_{k+1} = start(θ_{k-1}, δ_k)  (uploaded; round k + 1's inner steps run from it)
// and round k's all-reduce of δ_k is launched.
nlohmann::json OuterSync::step_overlapped(int64_t steps_done) {
  const int64_t k = steps_done / cfg_.diloco.inner_steps;
  nlohmann::json parts;
  Clock::time_point tp = Clock::now();
  auto lap = [&](const char* name) {
    parts[name] = seconds_since(tp);
    tp = Clock::now();
  };
  if (in_flight_ == 0) {
    // The first boundary (or the first after taking the run's state): no
    // round to apply; this round started at θ itself.
    if (outer_done_ != k - 1)
      fail("DiLoCo overlap: at outer step ", k, " the outer state is of step ", outer_done_, " (internal error)");
    backend_.get_params(params_.data());
    lap("download_s");
    // δ = θ - e into pseudo_ and the next start into params_, one pass.
    outer_->next_start(outer_->params().data(), params_.data(), pseudo_.data(), params_.data(), eager_,
                       standin_scale_);
    lap("pseudo_gradient_s");
    backend_.set_params(params_.data());
    lap("upload_s");
    launch(k, steps_done);
    lap("launch_s");
    return nlohmann::json{{"launched", k}, {"overlap", cfg_.diloco.overlap}, {"parts", parts}};
  }
  if (in_flight_ != k - 1)
    fail("DiLoCo overlap: at outer step ", k, " the round in flight is that of step ", in_flight_, " (internal error)");
  const int64_t previous = in_flight_;
  double waited = 0.0;
  Round r = take(steps_done, &waited);
  parts["wait_s"] = waited;
  finish_snapshot_copy(&parts);
  tp = Clock::now();
  commit_error_feedback(r);  // while pseudo_ is still δ_{k-1}
  // The run's state taken afresh (late, and nobody had the round): of the
  // step in flight, this round's progress still counts; of a newer one, the
  // node starts over from it, as a joiner does.
  bool keep = true;
  float next_scale = standin_scale_;
  if (r.state) {
    round_start(pseudo_.data(), pseudo_.data());  // pseudo_ = s_k, before the outer state changes
    next_scale = 1.0f;  // no average of this node's own δ to fit against
    keep = r.k == previous;
    apply_run_state(*r.state);
  } else {
    // pseudo_ = s_k (from the state before the step), and outer step k - 1
    // with the average params_ holds: one pass (with the fitted stand-in,
    // also how well δ_{k-1} predicted its average: round k + 1's scale).
    OuterOptimizer::StandinFit fit;
    outer_->apply_after_start(params_.data(), pseudo_.data(), pseudo_.data(), eager_, standin_scale_,
                              fitted_standin_ ? &fit : nullptr);
    if (fitted_standin_) next_scale = fit.scale();
  }
  lap("outer_step_s");
  in_flight_ = 0;
  std::future<uint64_t> outer_hash = hash_outer_params();
  if (keep) {
    backend_.get_params(params_.data());  // e_k
    lap("download_s");
    // δ_k = s_k - e_k into pseudo_, s_{k+1} into params_: one pass.
    outer_->next_start(pseudo_.data(), params_.data(), pseudo_.data(), params_.data(), eager_, next_scale);
    lap("pseudo_gradient_s");
  }
  const float applied_scale = standin_scale_;
  standin_scale_ = next_scale;  // the scale s_{k+1} was made with, kept with round k
  backend_.set_params(params_.data());
  lap("upload_s");
  const uint64_t hash = settle(r, std::move(outer_hash));  // reported before the next round's Ready
  lap("hash_wait_s");  // what of the hash the copies and pass 2 did not hide
  // Where a late node goes on: decided before the next round's calls start.
  if (r.late) skip_to_ = line_up(keep ? k : r.k);
  if (keep) {
    launch(k, steps_done);
    lap("launch_s");
  }
  nlohmann::json m = metrics(r, hash, parts);
  m["launched"] = keep ? k : 0;
  if (eager_) m["standin_scale"] = {{"applied", applied_scale}, {"next", next_scale}};
  return m;
}

// A round taken at the end (or, without overlap, a checkpoint's round in
// flight done at start): outer step applied, and the weights moved onto
// the new outer parameters: exactly them when no inner step ran since the
// round was launched, else with the progress since its start kept on top.
nlohmann::json OuterSync::land(Round& r, bool exact, nlohmann::json parts) {
  const size_t n = pseudo_.size();
  finish_snapshot_copy(&parts);
  Clock::time_point tp = Clock::now();
  auto lap = [&](const char* name) {
    parts[name] = seconds_since(tp);
    tp = Clock::now();
  };
  commit_error_feedback(r);  // while pseudo_ is still the round's δ
  if (r.state) {
    apply_run_state(*r.state);  // the run's state: the node's own progress is dropped
    lap("outer_step_s");
  } else {
    // pseudo_ = the local start s of the round in progress, and the step: one pass.
    RotationMask rm = rotation_mask(r.k);
    outer_->apply_after_start(params_.data(), pseudo_.data(), pseudo_.data(), eager_, standin_scale_, nullptr,
                              rm.get());
    lap("outer_step_s");
    if (exact) {
      params_.assign(outer_->params().begin(), outer_->params().end());
    } else {
      backend_.get_params(params_.data());
      lap("download_s");
      const float* theta = outer_->params().data();
      const float* s = pseudo_.data();
      float* p = params_.data();
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
      for (size_t i = 0; i < n; ++i) p[i] = theta[i] - (s[i] - p[i]);
    }
  }
  std::future<uint64_t> outer_hash = hash_outer_params();
  backend_.set_params(params_.data());
  lap("upload_s");
  in_flight_ = 0;
  const uint64_t hash = settle(r, std::move(outer_hash));
  return metrics(r, hash, parts);
}

nlohmann::json OuterSync::apply_if_arrived(int64_t steps_done) {
  if (in_flight_ == 0) return nullptr;
  const bool due = apply_after_ > 0 && steps_done - launched_at_ >= apply_after_;
  if (!apply_on_arrival_ && !due) return nullptr;
  double due_wait = 0.0;
  if (due) {
    const Clock::time_point t0 = Clock::now();
    wait_round_done(steps_done);
    due_wait = seconds_since(t0);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!round_done_ || round_error_ || !round_result_ || round_result_->late || round_result_->state)
      return nullptr;
  }
  nlohmann::json parts;
  double waited = 0.0;
  const int64_t after = steps_done - launched_at_;
  Round r = take(steps_done, &waited);
  parts["wait_s"] = waited + due_wait;
  nlohmann::json m = land(r, steps_done == launched_at_, parts);
  if (due) m["applied_after_steps"] = after;
  m["applied_on_arrival"] = !due;
  return m;
}

nlohmann::json OuterSync::finish(int64_t steps_done) {
  if (rotation_ && steps_done % cfg_.diloco.inner_steps == 0) {
    // A block rotation ends on the outer parameters every node shares, as every other
    // compression does at a boundary: the progress of the blocks not sent
    // lately (kept in this node's weights) is dropped, not evaluated.
    params_.assign(outer_->params().begin(), outer_->params().end());
    backend_.set_params(params_.data());
    note(str(cfg_.diloco.compression, ": the run ends on the outer parameters of outer step ", outer_done_,
             " (the weights every node shares)"));
  }
  if (!overlap_ || in_flight_ == 0) return nullptr;
  nlohmann::json parts;
  double waited = 0.0;
  Round r = take(steps_done, &waited);
  parts["wait_s"] = waited;
  return land(r, steps_done == launched_at_, parts);
}

}  // namespace intellect
