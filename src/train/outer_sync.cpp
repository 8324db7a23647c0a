#include "train/outer_sync.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include "ckpt/hf_export.h"
#include "dist/mesh_node.h"
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
    : cfg_(cfg), backend_(backend), mesh_(mesh), params_(params), stop_(stop), data_position_(std::move(data_position)) {
  const size_t n = backend_.layout().total();
  outer_ = std::make_unique<OuterOptimizer>(n, cfg_.diloco.outer_lr, cfg_.diloco.outer_momentum, cfg_.diloco.nesterov);
  pseudo_.resize(n);
  backend_.get_params(params_.data());
  // Three fp32 copies of the model live here and one in the loop's params_,
  // which doubles as the average: the loop's weights are not needed between
  // the pseudo-gradient and the outer step, which overwrites them.
  const uint64_t copy = static_cast<uint64_t>(n) * sizeof(float);
  std::string budget = str("DiLoCo host memory: 4 fp32 copies of the model (weights|average, pseudo-gradient, "
                           "outer parameters, momentum) = ", format_bytes(4 * copy));
  if (cfg_.mesh.serve_state && mesh_)
    budget += str(", plus two rounds' averages as the ring carried them (",
                  format_bytes(cfg_.diloco.compression == "int8" ? 2 * copy / 4 : 2 * copy),
                  ") and, while a joiner fetches one, a snapshot (about ", format_bytes(4 * copy), ")");
  note(budget);
}

OuterSync::~OuterSync() = default;

size_t OuterSync::host_bytes() const {
  return (pseudo_.capacity() + outer_->params().capacity() + outer_->momentum().capacity()) * sizeof(float);
}

// After outer step k was taken from a donor (joining, or late for its
// ring), the others are already part-way through the next round's inner
// steps. Starting where the donor is (one step ahead, at least one step
// before the boundary) makes this node ready with them, so the next ring
// includes it without anyone waiting; its first pseudo-gradient then covers
// fewer inner steps.
int64_t OuterSync::line_up(int64_t k) {
  const int64_t H = cfg_.diloco.inner_steps, from = k * H;
  const std::optional<int64_t> p = mesh_ ? mesh_->donor_progress() : std::nullopt;
  if (!p || *p < from) return from;
  return std::min(*p + 1, (k + 1) * H - 1);
}

// The run's state from a donor: its snapshot, then every round completed
// since (the same outer steps on the same bytes as everyone else), at
// least up to outer step `at_least` (waiting for rounds still running).
OuterSync::RunState OuterSync::take_run_state(int64_t at_least) {
  const StateDownload d = mesh_->fetch_state(StateKind::snapshot, -1,
                                            std::chrono::milliseconds(cfg_.mesh.round_timeout_ms));
  JoinState js = decode_join_state(d.bytes, backend_.layout().total());
  outer_->set_state(js.outer.data(), js.momentum.data());
  backend_.set_optimizer_state(js.exp_avg, js.exp_avg_sq, js.adam_step);
  params_ = js.outer;
  int64_t k = js.outer_step, rounds = 0;
  mesh_->set_held_step(k);
  uint64_t round_bytes = 0;
  Clock::time_point give_up = Clock::now() + std::chrono::milliseconds(cfg_.mesh.round_timeout_ms);
  for (;;) {
    if (std::optional<StateDownload> r = mesh_->fetch_round_once(k + 1)) {
      mesh_->decode_round_into(*r, params_);  // the average, then (in place) the new weights
      round_bytes += r->bytes.size();
      outer_->step(params_.data(), params_.data());
      ++k;
      ++rounds;
      mesh_->set_held_step(k);
      continue;
    }
    if (k >= at_least) break;
    try {
      mesh_->poll_coordinator();
    } catch (const RunRewound& r) {
      // The rounds this node waits for died with their holders: the run
      // goes on from an older step, which this node may already hold.
      note(str("the run went back to outer step ", r.outer_step, " while this node caught up (at ", k, ")"));
      at_least = r.outer_step;
      give_up = Clock::now() + std::chrono::milliseconds(cfg_.mesh.round_timeout_ms);
      continue;
    }
    // Behind the step this node must reach: the round is still running
    // (or retried) on the donor. Never go on from an older state: the
    // next outer step would start from other parameters than everyone's.
    if (Clock::now() > give_up)
      fail("could not catch up to outer step ", at_least, ": the donor's state is of outer step ", k,
           " and no donor has the rounds after it");
    if (stop_ && stop_->load()) throw StoppedOnRequest("stopped on request while catching up with the run");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  backend_.set_params(params_.data());
  RunState got;
  got.outer_step = k;
  got.state_bytes = d.bytes.size();
  got.summary = nlohmann::json{{"outer_step", k},
                               {"state_bytes", d.bytes.size()},
                               {"bad_chunks_refetched", d.bad_chunks},
                               {"rounds_caught_up", rounds},
                               {"round_bytes", round_bytes}};
  return got;
}

int64_t OuterSync::start(int64_t start_step, bool resumed, const std::vector<float>& resumed_outer,
                         const std::vector<float>& resumed_momentum) {
  // The state this node starts from on its own (step 0, or the resumed
  // checkpoint's outer step): what it holds until it has the run's.
  const int64_t own_outer = start_step / cfg_.diloco.inner_steps;
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
      try {
        from_donor = take_run_state(at_least);
        break;
      } catch (const RunRewound& r) {
        // Every holder of the run's newest state is gone. If the run goes
        // back to the state this node starts from, it goes on from that.
        if (r.outer_step <= own_outer) {
          note(str("the run went back to outer step ", r.outer_step, ", which this node holds: no download"));
          break;
        }
        at_least = r.outer_step;
      }
    }
    if (from_donor) from_donor->summary["seconds"] = seconds_since(t_join);
  }
  if (from_donor) {
    const RunState& got = *from_donor;
    const int64_t k = got.outer_step;
    start_step = line_up(k);
    joined_ = got.summary;
    joined_["first_step"] = start_step + 1;
    note(str("joined at outer step ", k, " (step ", start_step, "): ", got.state_bytes / 1e6, " MB of state in ",
             got.summary["seconds"].get<double>(), " s, ", got.summary["bad_chunks_refetched"].get<uint64_t>(),
             " chunk(s) fetched again, ", got.summary["rounds_caught_up"].get<int64_t>(), " round(s) caught up (",
             got.summary["round_bytes"].get<uint64_t>() / 1e6, " MB)"));
  } else if (!resumed_outer.empty()) {
    outer_->set_state(resumed_outer.data(), resumed_momentum.data());
  } else {
    outer_->init(params_.data());
    if (start_step > 0)
      note("the checkpoint holds no DiLoCo state: the outer parameters restart from the resumed weights");
  }
  // The outer step whose result the outer optimizer holds: what a snapshot
  // for a joiner is "as of" (outer parameters and momentum change only there).
  outer_done_ = joined_.is_null() ? start_step / cfg_.diloco.inner_steps : joined_["outer_step"].get<int64_t>();
  return start_step;
}

// A snapshot for joiners, taken when one asks: outer parameters and
// momentum as of outer_done_, this node's current AdamW moments (a warm
// start for the joiner's inner optimizer; no two nodes' agree anyway).
double OuterSync::publish_snapshot(int64_t steps_done) {
  const Clock::time_point tp = Clock::now();
  JoinStateView js;
  js.outer_step = outer_done_;
  js.step = steps_done;
  backend_.get_optimizer_state(snap_m_, snap_v_, js.adam_step);
  js.outer = outer_->params();
  js.momentum = outer_->momentum();
  js.exp_avg = snap_m_;
  js.exp_avg_sq = snap_v_;
  mesh_->publish_snapshot(outer_done_, encode_join_state(js, std::clamp(std::thread::hardware_concurrency(), 1u, 16u)));
  return seconds_since(tp);
}

// A late node's round k from a donor; false when no live node has it.
bool OuterSync::round_from_donor(int64_t k) {
  try {
    const StateDownload r =
        mesh_->fetch_state(StateKind::round, k, std::chrono::milliseconds(cfg_.mesh.round_timeout_ms));
    mesh_->decode_round_into(r, params_);
    note(str("outer step ", k, ": late for the ring; took the round's average from a donor"));
    return true;
  } catch (const EvictedFromRun&) {
    throw;
  } catch (const StoppedOnRequest&) {
    throw;
  } catch (const RunRewound&) {
    throw;
  } catch (const Error& e) {
    note(str("outer step ", k, ": no donor has that round (", e.what(),
             "); taking the run's state from a donor instead"));
    return false;
  }
  }

int64_t OuterSync::take_skip_to() {
  const int64_t s = skip_to_;
  skip_to_ = 0;
  return s;
}

nlohmann::json OuterSync::step(int64_t steps_done) {
  int64_t k = steps_done / cfg_.diloco.inner_steps;
  bool resynced = false;  // late, and the run's state was taken afresh
  // Each part of the step is timed: what the training thread waits for.
  nlohmann::json parts;
  Clock::time_point tp = Clock::now();
  auto lap = [&](const char* name) {
    parts[name] = seconds_since(tp);
    tp = Clock::now();
  };
  backend_.get_params(params_.data());
  lap("download_s");
  outer_->pseudo_gradient(params_.data(), pseudo_.data());
  lap("pseudo_gradient_s");
  OuterRoundStats rs;
  const Clock::time_point t0 = Clock::now();
  bool late = false;
  Way way = Way::ring;
  if (mesh_) {
    // In the ring; or late for it (the round's average from a donor); or
    // the run's state afresh from a donor, of at least `take_at_least`.
    int64_t take_at_least = k;
    for (bool done = false; !done;) {
      try {
        switch (way) {
          case Way::ring:
            rs = mesh_->average(k, data_position_(), pseudo_, params_);  // pseudo_ stays as it was, for a retry
            break;
          case Way::round_from_donor:
            // No live node has that round any more (those that did are
            // gone): take the run's state afresh, as a joiner does.
            if (!round_from_donor(k)) {
              way = Way::state_from_donor;
              continue;
            }
            break;
          case Way::state_from_donor:
            k = take_run_state(take_at_least).outer_step;
            resynced = true;
            break;
        }
        done = true;
      } catch (const LateForRound&) {
        // The ring went on without this node: its inner steps are dropped
        // and the round's average comes from a donor, as for a joiner.
        late = true;
        way = Way::round_from_donor;
      } catch (const RunRewound& r) {
        if (r.outer_step < k) {
          // Back to a step no newer than this node's: it holds the state
          // step k starts from, and its pseudo-gradient is still good.
          note(str("the run went back to outer step ", r.outer_step, ": outer step ", k,
                   " is done again, from this node's own state"));
          // Others without this state will ask this node for it while it
          // waits for its ring, where it cannot take a snapshot: one now.
          if (cfg_.mesh.serve_state) publish_snapshot(steps_done);
          late = false;
          way = Way::ring;
        } else {
          note(str("the run went back to outer step ", r.outer_step, ": taking that state from a donor"));
          late = true;
          way = Way::state_from_donor;
          take_at_least = r.outer_step;
        }
      }
    }
    if (late) skip_to_ = line_up(k);
  } else {
    params_ = pseudo_;
  }
  const double allreduce_s = seconds_since(t0);
  tp = Clock::now();
  // params_ holds the average here (unless resynced: then the run's weights).
  double publish_s = 0.0;
  if (!resynced) {
    outer_->check_finite(params_.data());
    lap("check_s");
    if (mesh_ && cfg_.mesh.serve_state) {
      // What a late node or a joiner will fetch: this round's average (the
      // ring's int8 bytes), published before the step overwrites it. The
      // snapshot only when a joiner asks for one.
      mesh_->publish_round(k, params_);
      mesh_->drop_idle_snapshot();
      publish_s = seconds_since(tp);
      lap("publish_s");
    }
    outer_->apply(params_.data(), params_.data());
    lap("nesterov_s");
    backend_.set_params(params_.data());
    lap("upload_s");
  }
  if (mesh_ && rs.ring_size > 1) {
    parts["ring_encode_s"] = rs.encode_s;
    parts["ring_recv_wait_s"] = rs.recv_wait_s;
    parts["ring_decode_s"] = rs.decode_s;
    parts["ring_send_s"] = rs.send_s;
  }
  const uint64_t hash = outer_->params_hash();
  if (mesh_ && !late) mesh_->report_hash(k, hash);
  outer_done_ = k;
  if (mesh_) mesh_->set_held_step(k);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return nlohmann::json{{"outer_step", k},
                        {"late", late},
                        {"publish_s", publish_s},
                        {"ring_size", rs.ring_size},
                        {"rings", rs.rings},
                        {"bytes_sent", rs.bytes_sent},
                        {"bytes_received", rs.bytes_received},
                        {"allreduce_s", allreduce_s},
                        {"retries", rs.retries},
                        {"rewinds", mesh_ ? mesh_->rewinds() : 0},
                        {"hash", hex},
                        {"way", way_name(way)},
                        {"parts", parts}};
}

}  // namespace intellect
