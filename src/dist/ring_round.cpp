#include "dist/ring_round.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <thread>

#include "dist/direct_allreduce.h"
#include "dist/round_codec.h"
#include "util/error.h"

namespace intellect {

namespace {

// The ring's two links over authenticated transport connections: data frames
// to the next node, from the previous one. (A WAN link for tests and
// benchmarks decorates it: link_emulation.h.)
class TransportRingLink final : public RingLink {
 public:
  TransportRingLink(Transport& t, ConnId next, ConnId prev) : t_(t), next_(next), prev_(prev) {}

  void send_to_next(std::span<const uint8_t> msg, RingClock::time_point deadline) override {
    send_owned_to_next(std::vector<uint8_t>(msg.begin(), msg.end()), deadline);
  }
  // The ring's messages are built for the wire: the frame takes the buffer
  // (a copy of every byte sent, and its fresh pages, otherwise).
  void send_owned_to_next(std::vector<uint8_t>&& msg, RingClock::time_point deadline) override {
    Frame f;
    f.type = FrameType::data;
    f.payload = std::move(msg);
    t_.send(next_, std::move(f), deadline);
  }
  std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) override {
    std::optional<Message> m = t_.recv(prev_, deadline);
    if (!m) fail("ring: no message from the previous node before the deadline");
    if (m->frame.type != FrameType::data) fail("ring: the previous node sent a ", frame_type_name(m->frame.type),
                                               " frame where ring data was expected");
    return std::move(m->frame.payload);
  }
  void abort() noexcept override {
    try {
      t_.close(next_, "ring round aborted");
      t_.close(prev_, "ring round aborted");
    } catch (...) {
    }
  }

 private:
  Transport& t_;
  ConnId next_, prev_;
};

}  // namespace

int lane_codec_threads(int node_threads, int lanes) {
  const int total = node_threads > 0 ? node_threads
                                     : static_cast<int>(std::clamp(std::thread::hardware_concurrency() / 2, 1u, 16u));
  return std::max(1, total / std::max(1, lanes));
}

CommitLayout dense_commit_layout(const RingRoundOptions& opt, size_t total) {
  CommitLayout l;
  l.compression = opt.compression;
  l.block = opt.compression == Compression::None ? 0 : opt.codec_block ? opt.codec_block : default_codec_block(opt.compression);
  l.chunk = opt.chunk_elems > 0 ? opt.chunk_elems
            : opt.compression != Compression::None ? size_t{1} << 18 : RingOptions{}.chunk_elems;
  l.lanes = static_cast<int>(std::clamp<size_t>(static_cast<size_t>(opt.rings), 1, std::max<size_t>(1, total)));
  return l;
}

// The attempt's connections, by lane and member (a ring uses its two
// neighbours', the direct pattern every other member's), closed when it
// ends (the reason says how).
struct RingRound::Connections {
  Transport& t;
  std::vector<std::vector<ConnId>> to, from;  // [lane][member index]; 0: none
  const char* reason = "round failed";
  Connections(Transport& transport, int lanes, size_t members)
      : t(transport), to(lanes, std::vector<ConnId>(members, 0)), from(lanes, std::vector<ConnId>(members, 0)) {}
  ~Connections() {
    for (size_t k = 0; k < to.size(); ++k)
      for (size_t j = 0; j < to[k].size(); ++j) {
        if (to[k][j]) t.close(to[k][j], reason);
        if (from[k][j]) t.close(from[k][j], reason);
      }
  }
};

RingRound::RingRound(Transport& transport, CoordinatorClient& coordinator, const std::atomic<bool>& cancel,
                     RingRoundOptions options)
    : transport_(transport), coordinator_(coordinator), cancel_(cancel), opt_(std::move(options)) {}

std::optional<control::RingAnnounce> RingRound::take_newer_ring() {
  std::optional<control::RingAnnounce> r;
  r.swap(newer_ring_);
  return r;
}

void RingRound::abort_lanes() {
  std::lock_guard<std::mutex> lock(lanes_mu_);
  if (lanes_)
    for (RingLink* l : *lanes_) l->abort();
}

// Connections that arrive for a later round are kept for it; a newer ring
// announced by the coordinator meanwhile supersedes this round (kept in
// newer_ring_).
std::variant<ConnId, LateForRing> RingRound::accept_peer(uint64_t peer_id, uint64_t round, uint32_t lane,
                                                         int64_t outer_step, Deadline deadline) {
  for (;;) {
    auto early = early_peers_.find({peer_id, round, lane});
    if (early != early_peers_.end()) {
      const ConnId c = early->second;
      early_peers_.erase(early);
      if (transport_.is_open(c)) return c;
    }
    if (MeshClock::now() > deadline)
      fail("ring: node ", peer_id, " did not connect before the deadline",
           opt_.direct ? " (with diloco.all_reduce direct every member dials every other; a node on the ring "
                         "pattern dials only its next one: set the same diloco.all_reduce on every node)"
                       : "");
    if (cancel_.load()) throw StoppedOnRequest("the node stops: gave up waiting for a ring neighbour");
    // The coordinator away (restarting): the ring it announced goes on; the
    // next wait for it reconnects.
    if (std::optional<control::Message> cm = coordinator_.poll()) {
      if (const auto* ring = std::get_if<control::RingAnnounce>(&*cm); ring && ring->round > round) {
        newer_ring_ = *ring;
        fail("ring round ", round, " superseded by round ", ring->round);
      }
      if (const auto* r = std::get_if<control::Refused>(&*cm)) fail("the coordinator gave up: ", r->reason);
      if (const auto* l = std::get_if<control::Late>(&*cm); l && l->outer_step == outer_step)
        return LateForRing{outer_step};  // the ring was re-formed without this node
    }
    std::optional<TransportEvent> ev = transport_.next_event(deadline_in(std::chrono::milliseconds(20)));
    if (!ev || ev->kind != TransportEvent::Kind::authenticated || !ev->inbound) continue;
    std::optional<Message> hello = transport_.recv(ev->conn, deadline);
    if (!hello || hello->frame.type != FrameType::control) {
      transport_.close(ev->conn, "no peer hello");
      continue;
    }
    const control::Message m = control::decode(hello->frame.payload, ev->peer);
    const auto* h = std::get_if<control::PeerHello>(&m);
    if (h && h->node_id == peer_id && h->round == round && h->lane == lane) return ev->conn;
    if (h && (h->round > round || (h->round == round && (h->node_id == peer_id || opt_.direct)))) {
      // Another lane of this round (the direct pattern: another member's),
      // or a neighbour already in a newer round.
      early_peers_[{h->node_id, h->round, h->lane}] = ev->conn;
      continue;
    }
    // A member of this round that is not our ring neighbour dials us when
    // it runs the direct pattern (every member dials every other).
    if (h && h->round == round && opt_.log)
      opt_.log(str("node ", h->node_id, " dialled this node for round ", round, " lane ", h->lane,
                            " without being its ring neighbour: it runs diloco.all_reduce direct, this node the "
                            "ring; set the same diloco.all_reduce on every node"));
    transport_.close(ev->conn, "not the expected ring neighbour for this round");
  }
}

// Dials each member in `to` once per lane (saying who is calling for which
// round and lane), then accepts each member in `from`'s lanes: a ring's
// next and previous node, or every other member (the direct pattern).
std::optional<LateForRing> RingRound::dial_peers(const control::RingAnnounce& ring, const std::vector<size_t>& to,
                                                 const std::vector<size_t>& from, int lanes, Connections& c,
                                                 Deadline deadline, uint64_t* unreachable) {
  // A live neighbour answers a dial at once; one we cannot reach within a
  // message timeout is reported as such (a partition between two live
  // nodes), before the others give up on their messages.
  const Deadline dial_by = std::min(deadline, deadline_in(opt_.message_timeout / 2));
  for (size_t j : to) {
    const control::RingMember& peer = ring.members[j];
    const auto [host, port] = split_host_port(peer.address, str("address of node ", peer.node_id));
    for (int k = 0; k < lanes; ++k) {
      try {
        c.to[k][j] = transport_.connect(host, port, dial_by);
      } catch (const Error&) {
        *unreachable = peer.node_id;
        throw;
      }
      coordinator_.send_on(c.to[k][j], control::PeerHello{coordinator_.id(), ring.round, static_cast<uint32_t>(k)});
    }
  }
  for (size_t j : from)
    for (int k = 0; k < lanes; ++k) {
      std::variant<ConnId, LateForRing> got =
          accept_peer(ring.members[j].node_id, ring.round, static_cast<uint32_t>(k), ring.outer_step, deadline);
      if (const auto* late = std::get_if<LateForRing>(&got)) return *late;
      c.from[k][j] = std::get<ConnId>(got);
    }
  return std::nullopt;
}

// Each lane's all-reduce of its segment on its own thread (lane 0 on this
// one). The first lane to fail aborts the others, which then fail fast
// instead of at their deadline; its error is the attempt's.
std::vector<RingStats> RingRound::run_lanes(const control::RingAnnounce& ring, size_t index, LaneLinks& lane_links,
                                            const std::vector<FlatRange>& segs, std::span<const float> input,
                                            std::span<float> output, SparseRound* sparse,
                                            std::vector<std::vector<RingCarried>>* carried,
                                            std::optional<PlannedRound>* planned, Deadline deadline) {
  std::vector<RingLink*>& links = lane_links.all;
  const int K = static_cast<int>(lane_links.ring.size() + lane_links.direct.size());
  const size_t n = ring.members.size();
  const bool is_sparse = opt_.compression == Compression::Sparse;
  std::vector<RingStats> lane_stats(K);
  // Audited when this node committed to this very input layout.
  RingAudit audit;
  const bool audited = !is_sparse && commitment_ && commitment_->total_elems == input.size() &&
                       commitment_->leaves.size() == static_cast<size_t>(K);
  if (audited) {
    audit.own = commitment_;
    for (const control::RingMember& m : ring.members) audit.roots.push_back(m.commitment);
  }
  std::vector<RingOptions> dense(is_sparse ? 0 : K);
  for (int k = 0; !is_sparse && k < K; ++k)
    dense[k] = dense_lane_options(ring, index, k, K, audited ? &audit : nullptr, deadline);
  if (planned) {
    // The round kept for joiners, laid out from every lane's cut before any
    // lane runs: each carried chunk is then written once, in place.
    std::vector<PlannedRound::Piece> pieces;
    std::vector<size_t> first(K);
    for (int k = 0; k < K; ++k) {
      first[k] = pieces.size();
      for (size_t count : ring_chunk_counts(dense[k], segs[k].size()))
        pieces.push_back({opt_.compression, count, dense[k].int8_block});
    }
    planned->emplace(input.size(), pieces);
    for (int k = 0; k < K; ++k) {
      dense[k].carried_into = &**planned;
      dense[k].carried_first_piece = first[k];
    }
  }
  std::vector<SparseSent> sent(is_sparse ? K : 0);
  std::mutex error_mu;
  std::exception_ptr first_error;
  auto segment = [&](auto span, int k) { return span.subspan(segs[k].begin, segs[k].size()); };
  auto run_lane = [&](int k) {
    try {
      std::vector<RingCarried>* keep = carried ? &(*carried)[k] : nullptr;
      if (is_sparse) {
        SparseRingOptions so;
        so.rank = static_cast<int>(index);
        so.world = static_cast<int>(n);
        so.round = ring.round;
        so.block = opt_.codec_block ? opt_.codec_block : default_codec_block(Compression::Sparse);
        so.k = opt_.sparse_k;
        so.aggregation = opt_.sparse_aggregation;
        for (const control::RingMember& m : ring.members) so.announced_norms.push_back(m.norm);
        so.chunk_blocks = opt_.chunk_elems > 0 ? std::max<size_t>(1, opt_.chunk_elems / so.block)
                                               : default_sparse_chunk_blocks(so.block, so.k, !opt_.signer.empty());
        so.lane = static_cast<uint32_t>(k);
        if (!opt_.signer.empty()) {
          so.signer = &opt_.signer;
          for (const control::RingMember& m : ring.members) so.member_keys.push_back(m.key);
        }
        so.attack_false_accusation = opt_.attack_false_accusation;
        so.attack_alter_forwarded = opt_.attack_alter_forwarded;
        so.message_timeout = opt_.message_timeout;
        so.deadline = deadline;
        const std::span<const float> res = sparse->residual.empty() ? sparse->residual : segment(sparse->residual, k);
        lane_stats[k] = sparse_allgather_average(*lane_links.ring[k], so, segment(input, k), res, segment(output, k),
                                                 &sent[k], keep);
        sent[k].offset += segs[k].begin;
      } else if (!lane_links.direct.empty()) {
        lane_stats[k] = direct_allreduce_average(lane_links.direct[k], dense[k], segment(input, k), segment(output, k),
                                                 audited ? commitment_ : nullptr, planned ? nullptr : keep);
      } else {
        lane_stats[k] = ring_allreduce_average(*lane_links.ring[k], dense[k], segment(input, k), segment(output, k),
                                               planned ? nullptr : keep);
      }
      for (EmulatedRingLink* e : lane_links.emulated[k]) e->drain(deadline);
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!first_error) first_error = std::current_exception();
      }
      for (auto& l : links) l->abort();
    }
  };
  // Registered for abort_lanes(), which aborts them from another thread.
  struct Registered {
    RingRound& r;
    Registered(RingRound& round, std::vector<RingLink*>& links) : r(round) {
      std::lock_guard<std::mutex> lock(r.lanes_mu_);
      r.lanes_ = &links;
      if (r.cancel_.load())
        for (RingLink* l : links) l->abort();
    }
    ~Registered() {
      std::lock_guard<std::mutex> lock(r.lanes_mu_);
      r.lanes_ = nullptr;
    }
  } registered(*this, links);
  std::vector<std::thread> lanes;
  for (int k = 1; k < K; ++k) lanes.emplace_back(run_lane, k);
  run_lane(0);
  for (std::thread& t : lanes) t.join();
  if (first_error) std::rethrow_exception(first_error);
  if (is_sparse) sparse->sent = std::move(sent);
  return lane_stats;
}

RingOptions RingRound::dense_lane_options(const control::RingAnnounce& ring, size_t index, int k, int lanes,
                                          const RingAudit* audit, Deadline deadline) const {
  RingOptions ro;
  ro.rank = static_cast<int>(index);
  ro.world = static_cast<int>(ring.members.size());
  ro.round = ring.round;
  ro.lane = static_cast<uint32_t>(k);
  ro.audit = audit;
  ro.compression = opt_.compression;
  if (opt_.compression != Compression::None)
    ro.int8_block = opt_.codec_block ? opt_.codec_block : default_codec_block(opt_.compression);
  if (opt_.chunk_elems > 0) ro.chunk_elems = opt_.chunk_elems;
  else if (opt_.compression != Compression::None) ro.chunk_elems = size_t{1} << 18;
  ro.codec_threads = lane_codec_threads(opt_.codec_threads, lanes);
  ro.message_timeout = opt_.message_timeout;
  ro.deadline = deadline;
  for (const control::RingMember& m : ring.members) ro.announced_norms.push_back(m.norm);
  if (!opt_.signer.empty()) {
    ro.signer = &opt_.signer;
    ro.prev_key = prev_key_;
    if (opt_.direct)
      for (const control::RingMember& m : ring.members) ro.member_keys.push_back(m.key);
  }
  ro.attack_false_accusation = opt_.attack_false_accusation;
  return ro;
}

std::variant<RingAttempt, LateForRing> RingRound::run(const control::RingAnnounce& ring, size_t index,
                                                      std::span<const float> input, std::span<float> output,
                                                      SparseRound* sparse, Deadline deadline, uint64_t* unreachable) {
  *unreachable = 0;
  // Never more rings than values (the size is the same on every node).
  const int K = static_cast<int>(std::clamp<size_t>(static_cast<size_t>(opt_.rings), 1, std::max<size_t>(1, input.size())));
  const size_t n = ring.members.size();
  const bool direct = opt_.direct && opt_.compression != Compression::Sparse;
  // Whom this node sends to and hears from: its ring neighbours, or (the
  // direct pattern) every other member.
  std::vector<size_t> to, from;
  if (direct) {
    for (size_t j = 0; j < n; ++j)
      if (j != index) to.push_back(j), from.push_back(j);
  } else {
    to.push_back((index + 1) % n);
    from.push_back((index + n - 1) % n);
  }
  Connections conns(transport_, K, n);
  if (std::optional<LateForRing> late = dial_peers(ring, to, from, K, conns, deadline, unreachable)) return *late;
  // One ring per segment; the node's pacing (a WAN link's capacity) is
  // shared out among them, and in the direct pattern among its peers too
  // (a node's uplink carries all of them at once).
  const std::vector<FlatRange> segs = ring_segments(input.size(), K);
  prev_key_ = transport_.peer_key(conns.from[0][from[0]]);
  std::vector<std::unique_ptr<TransportRingLink>> plain;
  std::vector<std::unique_ptr<EmulatedRingLink>> emulated_owned;
  LaneLinks links;
  links.emulated.resize(K);
  if (direct) links.direct.assign(K, std::vector<RingLink*>(n, nullptr));
  for (int k = 0; k < K; ++k)
    for (size_t i = 0; i < to.size(); ++i) {
      // A ring sends to its next node and hears its previous one; the
      // direct pattern's link with member j is both ways with j.
      const size_t j = to[i];
      plain.push_back(std::make_unique<TransportRingLink>(transport_, conns.to[k][j], conns.from[k][from[i]]));
      RingLink* link = plain.back().get();
      const LinkEmulation toward = opt_.emulate_link.toward(ring.members[j].name);
      if (toward.on()) {
        LinkEmulation lane = toward;
        lane.rate_bytes_per_s /= static_cast<double>(K) * static_cast<double>(to.size());
        lane.seed = lane.seed * 1000003 + ring.round * 64 + static_cast<uint64_t>(k) + (direct ? 4096 * (j + 1) : 0);
        emulated_owned.push_back(std::make_unique<EmulatedRingLink>(*plain.back(), lane));
        links.emulated[k].push_back(emulated_owned.back().get());
        link = emulated_owned.back().get();
      }
      links.all.push_back(link);
      if (direct) links.direct[k][j] = link;
      else links.ring.push_back(link);
    }
  std::vector<std::vector<RingCarried>> carried(K);
  // A lossy dense ring writes the round it carries straight into place
  // (PlannedRound); sparse and fp32 rounds are assembled after the ring.
  const bool lossy_dense =
      opt_.compression != Compression::None && is_ring_codec_byte(static_cast<uint8_t>(opt_.compression));
  std::optional<PlannedRound> planned;
  // Wall time of all lanes together: lanes start a little apart, so the
  // slowest lane's own time would understate the round.
  const auto t0 = RingClock::now();
  const std::vector<RingStats> lane_stats =
      run_lanes(ring, index, links, segs, input, output, sparse, opt_.keep_round ? &carried : nullptr,
                opt_.keep_round && lossy_dense ? &planned : nullptr, deadline);
  RingAttempt got;
  got.stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
  got.stats.rings = K;
  for (const RingStats& rs : lane_stats) {
    got.stats.bytes_sent += rs.bytes_sent;
    got.stats.bytes_received += rs.bytes_received;
    // The lanes run side by side: the slowest one's share is the round's.
    got.stats.encode_s = std::max(got.stats.encode_s, rs.encode_s);
    got.stats.recv_wait_s = std::max(got.stats.recv_wait_s, rs.recv_wait_s);
    got.stats.decode_s = std::max(got.stats.decode_s, rs.decode_s);
    got.stats.send_s = std::max(got.stats.send_s, rs.send_s);
  }
  if (planned) {
    got.round_bytes = planned->finish();
  } else if (opt_.keep_round) {
    // The round as the rings carried it, for joiners and late nodes.
    const auto keep_t0 = RingClock::now();
    RoundEncoder round(output.size());
    size_t body = 0;
    for (int k = 0; k < K; ++k) {
      if (carried[k].empty()) body += round_fp32_piece_bytes(segs[k].size());
      for (const RingCarried& c : carried[k]) body += round_piece_bytes(c);
    }
    round.reserve(body);  // the round is copied once, not at every doubling of a growing buffer
    for (int k = 0; k < K; ++k) {
      if (carried[k].empty()) {
        round.add_fp32(output.subspan(segs[k].begin, segs[k].size()));
        continue;
      }
      for (RingCarried& c : carried[k]) {
        round.add_carried(c);
        std::vector<uint8_t>().swap(c.encoded);  // one copy of the round at a time
      }
    }
    got.round_bytes = round.finish();
    got.stats.keep_s = std::chrono::duration<double>(RingClock::now() - keep_t0).count();
  }
  conns.reason = "round done";
  return got;
}

}  // namespace intellect
