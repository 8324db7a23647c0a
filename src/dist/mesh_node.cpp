#include "dist/mesh_node.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/ring_order.h"
#include "dist/round_codec.h"
#include "util/error.h"

namespace intellect {

namespace {

// Fault injection for the swarm tests: INTELLECT_MESH_TEST_KILL="<name>:<outer step>"
// kills this process (SIGKILL, no goodbye) once it holds that step's ring,
// i.e. in the middle of the all-reduce as its neighbours see it.
void test_kill_point(const std::string& name, int64_t outer_step) {
  const char* spec = std::getenv("INTELLECT_MESH_TEST_KILL");
  if (spec && std::string(spec) == name + ":" + std::to_string(outer_step)) ::raise(SIGKILL);
}

// Inside the mesh's parts an eviction ends a wait with EvictedFromRun, from
// wherever it is noticed; at MeshNode's boundary it becomes a value. `call`
// returns something a Result is made from.
template <class Result, class Call>
Result eviction_as_value(Call&& call) {
  try {
    return std::visit([](auto&& v) -> Result { return std::move(v); }, call());
  } catch (const EvictedFromRun& e) {
    return Evicted{e.what()};
  }
}

// The traffic and times of the attempt that was applied.
void take_attempt_stats(OuterRoundStats& stats, const OuterRoundStats& attempt) {
  stats.bytes_sent = attempt.bytes_sent;
  stats.bytes_received = attempt.bytes_received;
  stats.seconds = attempt.seconds;
  stats.rings = attempt.rings;
  stats.encode_s = attempt.encode_s;
  stats.recv_wait_s = attempt.recv_wait_s;
  stats.decode_s = attempt.decode_s;
  stats.send_s = attempt.send_s;
  stats.keep_s = attempt.keep_s;
}

}  // namespace

OuterRoundStats averaged_or_fail(RoundResult r) {
  if (auto* s = std::get_if<OuterRoundStats>(&r)) return *s;
  std::visit([](const auto& other) {
    if constexpr (!std::is_same_v<std::decay_t<decltype(other)>, OuterRoundStats>) fail(describe(other));
  }, r);
  return {};
}

namespace {
// Inbound connections a node lets wait for their handshake at once: a
// ring's K lanes come from one neighbour, but the direct pattern's from
// every member, all at the start of a round: 64 per lane (members beyond
// 65 would be refused in a burst and fail the round).
size_t pending_handshakes(const MeshNodeOptions& o) {
  return o.direct ? size_t{64} * static_cast<size_t>(std::max(1, o.rings)) : 64;
}
}  // namespace

MeshNode::MeshNode(MeshNodeOptions options)
    : opt_(std::move(options)), transport_(TransportOptions{opt_.credentials, std::chrono::milliseconds(10000),
                                                            opt_.message_timeout, size_t(128) << 20,
                                                            size_t(256) << 20, pending_handshakes(opt_), opt_.log,
                                                            opt_.unsealed_frames_for_benchmarks,
                                                            opt_.frame_openers, opt_.aead_library}) {
  const auto [lhost, lport] = split_host_port(opt_.listen, "mesh.listen");
  const uint16_t port = transport_.listen(lhost, lport);
  address_ = lhost + ":" + std::to_string(port);
  if (opt_.serve_state) {
    StateServerOptions so;
    so.emulate_link = opt_.emulate_link;
    so.chunk_bytes = opt_.state_chunk_bytes;
    donor_ = std::make_unique<StateDonor>(opt_.credentials, lhost, opt_.rounds_applied_late, opt_.state_timeout,
                                          opt_.log, std::move(so));
  }
  CoordinatorClientOptions co;
  co.coordinator = opt_.coordinator;
  co.name = opt_.name;
  co.address = address_;
  co.state_address = donor_ ? donor_->address() : "";
  co.settings = opt_.run_settings;
  co.join_timeout = opt_.join_timeout;
  co.reconnect_timeout = opt_.round_timeout;  // as long as a round may take: a coordinator restarted by hand takes a while
  co.message_timeout = opt_.message_timeout;
  co.log = opt_.log;
  coordinator_ = std::make_unique<CoordinatorClient>(transport_, std::move(co), cancel_, opt_.held_step);
  state_client_ = std::make_unique<StateClient>(
      *coordinator_, cancel_,
      StateClientOptions{opt_.credentials, opt_.state_timeout, opt_.log, opt_.stop, opt_.state_lanes,
                         opt_.state_stripe_donors, opt_.emulate_link.rate_bytes_per_s});
  RingRoundOptions ro;
  ro.compression = opt_.compression;
  ro.codec_block = opt_.codec_block;
  ro.sparse_k = opt_.sparse_k;
  ro.sparse_aggregation = opt_.sparse_aggregation;
  ro.chunk_elems = opt_.chunk_elems;
  ro.rings = opt_.rings;
  ro.direct = opt_.direct && opt_.compression != Compression::Sparse;
  ro.log = opt_.log;
  ro.codec_threads = opt_.codec_threads;
  ro.emulate_link = opt_.emulate_link;
  ro.message_timeout = opt_.message_timeout;
  ro.keep_round = opt_.serve_state;
  ring_options_ = ro;
  if (opt_.credentials.mode == AuthMode::node_keys) ro.signer = opt_.credentials.key;
  ro.attack_false_accusation = opt_.attack_false_accusation;
  ro.attack_alter_forwarded = opt_.attack_alter_forwarded;
  ring_ = std::make_unique<RingRound>(transport_, *coordinator_, cancel_, std::move(ro));
}

MeshNode::~MeshNode() = default;  // the coordinator client says goodbye before the state server stops

void MeshNode::leave(const std::string& reason) { coordinator_->leave(reason); }

std::optional<RewoundTo> MeshNode::poll_coordinator() {
  RoundCall call(*this, "poll_coordinator");
  return coordinator_->drain();
}

control::Ready MeshNode::ready_for(int64_t outer_step, const std::string& data_position,
                                   std::span<const float>& input, std::span<const float> residual,
                                   std::vector<float>& attacked) {
  control::Ready ready{id(), outer_step, data_position};
  ready.link_to = measured_.to;  // what the last ring measured, for the coordinator's ring order
  ready.link_mbit = static_cast<float>(measured_.mbit);
  const std::span<const float> honest = input;
  if (opt_.attack_scale != 1.0) {  // intellect_chaos --byzantine: what a dishonest node sends instead
    attacked.assign(input.begin(), input.end());
    for (float& v : attacked) v = static_cast<float>(v * opt_.attack_scale);
    input = attacked;
  }
  ring_->set_commitment(nullptr);
  if (opt_.announce_norms) {
    const bool dense = opt_.compression != Compression::Sparse;
    // The node's whole codec budget: nothing else runs while it commits (the
    // ring waits for every member's Ready), and one thread per ring made the
    // commitment (an encode and a hash pass over all of it) as slow as the
    // ring itself.
    const int threads = lane_codec_threads(opt_.codec_threads, 1);
    if (dense && !input.empty()) {
      // The norm comes from the commitment's pass (each leaf still in cache
      // from its encoding), not from a pass of its own.
      const CommitLayout layout = dense_commit_layout(ring_options_, input.size());
      double ss = 0.0;
      // The direct pattern sends these very encodings (no encode in the round).
      commitment_ = commit_leaves(input, layout, threads, &ss, ring_options_.direct, std::move(commitment_.encoded));
      ready.norm = static_cast<float>(std::sqrt(ss) * opt_.attack_announce);
      ready.commitment = commitment_.root;
      // intellect_chaos --byzantine: announces a commitment to its honest
      // pseudo-gradient, then reveals (and sends) the leaves of another.
      if (opt_.attack_commit_unscaled) ready.commitment = commit_leaves(honest, layout, threads).root;
      ring_->set_commitment(&commitment_);
    } else {
      const Announcement an = announce_contribution(input, threads, residual, !dense);
      ready.norm = static_cast<float>(an.norm * opt_.attack_announce);
      ready.commitment = an.commitment;
    }
  }
  return ready;
}

std::variant<control::RingAnnounce, LateForRing, RewoundTo> MeshNode::wait_for_ring(int64_t outer_step,
                                                                                    uint64_t after,
                                                                                    const control::Ready& ready,
                                                                                    Deadline deadline) {
  if (ring_->has_newer_ring()) {
    std::optional<control::RingAnnounce> newer = ring_->take_newer_ring();
    if (newer->round > after) return *newer;
  }
  for (;;) {  // the next ring for this step; older announcements are stale
    std::variant<control::Message, RewoundTo> heard = coordinator_->next(deadline);
    if (const auto* back = std::get_if<RewoundTo>(&heard)) {
      // Back to the state this node holds: its Ready stands (said again,
      // in case the coordinator dropped it); any other is the caller's.
      if (back->outer_step != outer_step - 1) return *back;
      coordinator_->send(ready);
      continue;
    }
    const control::Message& m = std::get<control::Message>(heard);
    if (const auto* r = std::get_if<control::Refused>(&m))
      fail("the coordinator gave up on outer step ", outer_step, ": ", r->reason);
    if (const auto* l = std::get_if<control::Late>(&m); l && l->outer_step == outer_step)
      return LateForRing{outer_step};  // the ring formed without this node
    const auto* a = std::get_if<control::RingAnnounce>(&m);
    if (a && a->outer_step < outer_step) continue;  // a stale ring for a step this node has done
    if (a && a->round > after) return *a;
  }
}

void MeshNode::average_alone(std::span<const float> input, std::span<float> output, SparseRound* sparse) const {
  if (opt_.compression == Compression::Sparse) {
    sparse->sent.emplace_back();
    sparse_average_alone(input, sparse->residual, output,
                         opt_.codec_block ? opt_.codec_block : default_codec_block(Compression::Sparse), opt_.sparse_k,
                         &sparse->sent.back());
  } else {
    std::copy(input.begin(), input.end(), output.begin());
  }
}

void MeshNode::report_failed_attempt(const Error& e, const control::RingAnnounce& ring, uint64_t unreachable) {
  mesh_log(opt_.log, str("outer step ", ring.outer_step, " round ", ring.round, " failed: ", e.what()));
  control::RingFailed failed{id(), ring.outer_step, ring.round, e.what(), unreachable, 0, {}};
  if (const auto* c = dynamic_cast<const ContributionExceedsAnnouncement*>(&e))
    if (c->offender_rank >= 0 && static_cast<size_t>(c->offender_rank) < ring.members.size()) {
      failed.accused = ring.members[c->offender_rank].node_id;
      failed.evidence = c->evidence;
    }
  if (!ring_->has_newer_ring()) coordinator_->send(failed);
}

MeshNode::Verdict MeshNode::await_verdict(const control::RingAnnounce& ring, const control::Ready& ready) {
  // Said again after a reconnect (after the Ready it answers), so a commit
  // lost with a connection is sent again.
  CoordinatorClient::Awaiting done(*coordinator_, control::RoundDone{id(), ring.outer_step, ring.round});
  const Deadline deadline = deadline_in(opt_.round_timeout);
  for (;;) {
    std::variant<control::Message, RewoundTo> heard;
    try {
      heard = coordinator_->next(deadline);
    } catch (const EvictedFromRun&) {
      throw;
    } catch (const Error& e) {
      if (MeshClock::now() < deadline) throw;
      fail("outer step ", ring.outer_step, " round ", ring.round, " completed here, but the coordinator neither "
           "committed nor abandoned it within ", opt_.round_timeout.count(), " ms (mesh.round_timeout_ms), so its "
           "result is not applied: ", e.what());
    }
    if (const auto* back = std::get_if<RewoundTo>(&heard)) {
      // Back to the state this node holds: the round is forgotten and its
      // Ready stands (said again, as in wait_for_ring); any other is the caller's.
      if (back->outer_step != ring.outer_step - 1) return *back;
      coordinator_->send(ready);
      return Abandoned{};
    }
    const control::Message& m = std::get<control::Message>(heard);
    if (const auto* c = std::get_if<control::RoundCommit>(&m);
        c && c->outer_step == ring.outer_step && c->round == ring.round)
      return Committed{};
    if (const auto* r = std::get_if<control::Refused>(&m))
      fail("the coordinator gave up on outer step ", ring.outer_step, ": ", r->reason);
    if (const auto* l = std::get_if<control::Late>(&m); l && l->outer_step == ring.outer_step)
      return LateForRing{ring.outer_step};  // the ring was re-formed without this node
    if (const auto* a = std::get_if<control::RingAnnounce>(&m);
        a && a->outer_step == ring.outer_step && a->round > ring.round)
      return Abandoned{*a};
  }
}

RoundResult MeshNode::average(int64_t outer_step, const std::string& data_position, std::span<const float> input,
                              std::span<float> output, SparseRound* sparse, const std::function<void()>& restore_input) {
  RoundCall call(*this, "average");
  return eviction_as_value<RoundResult>(
      [&] { return average_in_ring(outer_step, data_position, input, output, sparse, restore_input); });
}

RoundResult MeshNode::average_in_ring(int64_t outer_step, const std::string& data_position,
                                          std::span<const float> input, std::span<float> output, SparseRound* sparse,
                                          const std::function<void()>& restore_input) {
  throw_if_cancelled("before a round");
  const bool in_place = !input.empty() && input.data() == output.data();
  if (in_place && !restore_input)
    fail("MeshNode::average: in place (input and output the same buffer) needs a way to rebuild the input for a "
         "retry (internal error)");
  const bool is_sparse = opt_.compression == Compression::Sparse;
  if (is_sparse && !sparse) fail("MeshNode::average: sparse compression needs the round's SparseRound (internal error)");
  if (is_sparse && !sparse->residual.empty() && sparse->residual.size() != input.size())
    fail("MeshNode::average: a residual of ", sparse->residual.size(), " values for ", input.size());
  std::vector<float> attacked;
  const auto commit_t0 = MeshClock::now();
  const control::Ready ready =
      ready_for(outer_step, data_position, input, is_sparse ? std::span<const float>(sparse->residual) : std::span<const float>(),
                attacked);
  CoordinatorClient::Awaiting awaiting(*coordinator_, ready);
  OuterRoundStats stats;
  stats.commit_s = std::chrono::duration<double>(MeshClock::now() - commit_t0).count();
  uint64_t last_round = 0;
  bool disowned = false;  // attack_disown_completed_round
  std::optional<control::RingAnnounce> replacement;  // announced while this node awaited a verdict
  for (int attempt = 0;; ++attempt) {
    const Deadline deadline = deadline_in(opt_.round_timeout);
    std::variant<control::RingAnnounce, LateForRing, RewoundTo> next =
        replacement ? std::variant<control::RingAnnounce, LateForRing, RewoundTo>(*replacement)
                    : wait_for_ring(outer_step, last_round, ready, deadline);
    replacement.reset();
    if (const auto* late = std::get_if<LateForRing>(&next)) return *late;
    if (const auto* back = std::get_if<RewoundTo>(&next)) return *back;
    const control::RingAnnounce& ring = std::get<control::RingAnnounce>(next);
    last_round = ring.round;
    if (ring.outer_step != outer_step)
      fail("the coordinator announced a ring for outer step ", ring.outer_step, " while this node is at ", outer_step);
    const auto me = std::find_if(ring.members.begin(), ring.members.end(),
                                 [&](const control::RingMember& r) { return r.node_id == id(); });
    if (me == ring.members.end()) fail("the announced ring does not include this node");
    test_kill_point(opt_.name, outer_step);
    stats.ring_size = ring.members.size();
    stats.round = ring.round;
    stats.retries = attempt;
    if (sparse) sparse->sent.clear();
    // In place, a failed attempt left the buffer part-averaged.
    if (attempt > 0 && in_place) restore_input();
    if (ring.members.size() == 1) {
      average_alone(input, output, sparse);
      return stats;
    }
    uint64_t unreachable = 0;  // the neighbour this node could not dial, for the coordinator
    std::optional<RingAttempt> got;
    try {
      std::variant<RingAttempt, LateForRing> attempt_result =
          ring_->run(ring, static_cast<size_t>(me - ring.members.begin()), input, output, sparse, deadline, &unreachable);
      // Left out of a re-formed ring: not a failure.
      if (const auto* late = std::get_if<LateForRing>(&attempt_result)) return *late;
      if (opt_.attack_disown_completed_round && !disowned) {
        disowned = true;
        fail("the round completed here, but this node says it failed (attack_disown_completed_round)");
      }
      got = std::move(std::get<RingAttempt>(attempt_result));
    } catch (const Error& e) {
      if (cancel_.load()) throw StoppedOnRequest(str("outer step ", outer_step, ": round given up (the node stops)"));
      report_failed_attempt(e, ring, unreachable);
      if (attempt + 1 > opt_.max_retries) throw;
      continue;
    }
    // Complete here; applied only on the coordinator's commit (mesh_node.h).
    Verdict verdict = await_verdict(ring, ready);
    if (const auto* late = std::get_if<LateForRing>(&verdict)) return *late;
    if (const auto* back = std::get_if<RewoundTo>(&verdict)) return *back;
    if (auto* abandoned = std::get_if<Abandoned>(&verdict)) {
      mesh_log(opt_.log, str("outer step ", outer_step, " round ", ring.round,
                             " completed here, but another member failed it: the coordinator abandoned it, and this "
                             "node redoes it with the others"));
      if (attempt + 1 > opt_.max_retries)
        fail("outer step ", outer_step, ": round ", ring.round, " was abandoned (another member failed it), and "
             "this node has retried ", opt_.max_retries, " times (mesh.max_retries)");
      replacement = std::move(abandoned->next);
      continue;
    }
    take_attempt_stats(stats, got->stats);
    // The ring measures the link to its successor for the coordinator's
    // ring order; the direct pattern uses every link at once (nothing to order).
    if (!ring_options_.direct) {
      stats.link_to = ring.members[static_cast<size_t>(me - ring.members.begin() + 1) % ring.members.size()].node_id;
      stats.link_mbit = link_rate_mbit(got->stats.bytes_sent, got->stats.send_s);
      if (stats.link_mbit > 0) measured_ = {stats.link_to, stats.link_mbit};
    }
    if (donor_) donor_->keep_round(outer_step, std::move(got->round_bytes));
    return stats;
  }
}

StateResult MeshNode::fetch_state(StateKind kind, int64_t outer_step, std::chrono::milliseconds give_up,
                                  uint64_t shared_bytes) {
  RoundCall call(*this, "fetch_state");
  return eviction_as_value<StateResult>([&] { return state_client_->fetch(kind, outer_step, give_up, shared_bytes); });
}

std::optional<StateDownload> MeshNode::fetch_round_once(int64_t outer_step) {
  RoundCall call(*this, "fetch_round_once");
  return state_client_->fetch_round_once(outer_step);
}

std::optional<int64_t> MeshNode::donor_progress() {
  RoundCall call(*this, "donor_progress");
  return state_client_->donor_progress();
}

void MeshNode::publish_snapshot(int64_t outer_step, ByteBuffer bytes) {
  if (donor_) donor_->publish_snapshot(outer_step, std::move(bytes));
}

void MeshNode::publish_round(int64_t outer_step, std::span<const float> averaged) {
  RoundCall call(*this, "publish_round");
  if (donor_) donor_->publish_round(outer_step, averaged);
}

void MeshNode::decode_round_into(const StateDownload& d, std::span<float> out) {
  RoundCall call(*this, "decode_round_into");
  decode_round(d.bytes, out, str("the donor's round ", d.outer_step));
  // Served on, so a late node passes on the same bytes.
  if (donor_) donor_->keep_round(d.outer_step, ByteBuffer(d.bytes.begin(), d.bytes.end()));
}

MeshNode::RoundCall::RoundCall(MeshNode& n, const char* what) : n_(n) {
  if (n_.round_callers_.fetch_add(1) != 0) {
    n_.round_callers_.fetch_sub(1);
    fail("MeshNode::", what, " called while another thread is in a round call: round calls are made by one "
         "thread at a time (mesh_node.h)");
  }
}

void MeshNode::throw_if_cancelled(const char* what) const {
  if (cancel_.load()) throw StoppedOnRequest(str("the node stops: gave up ", what));
}

void MeshNode::cancel() {
  cancel_ = true;
  ring_->abort_lanes();
}

void MeshNode::report_hash(int64_t outer_step, uint64_t hash) {
  coordinator_->send(control::OuterHash{id(), outer_step, hash});
}

}  // namespace intellect
