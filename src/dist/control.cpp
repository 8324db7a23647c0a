#include "dist/control.h"

#include "dist/ring_evidence.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "dist/bytes.h"
#include "dist/run_settings.h"
#include "util/error.h"

static_assert(intellect::kMaxEvidenceBytes == size_t{16} << 20,
              "frame.cpp's evidence frame limit follows kMaxEvidenceBytes");

namespace intellect::control {

namespace {

// Reasons are for the log; a long one (an error with its whole context) is
// cut to what the peer accepts rather than getting this node dropped.
std::string clip_reason(const std::string& r) {
  if (r.size() <= kMaxName) return r;
  size_t cut = kMaxName - 3;
  while (cut > 0 && (static_cast<unsigned char>(r[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
  return r.substr(0, cut) + "...";
}

// Message kinds on the wire; the values never change meaning.
enum Kind : uint8_t {
  kJoin = 1, kWelcome, kHeartbeat, kLeave, kReady, kRingAnnounce, kRingFailed, kOuterHash, kRefused, kPeerHello,
  kDonorRequest, kDonorAssign, kLate, kStateRequest, kStateInfo, kRejoin, kStatePending, kRewound, kRoundDone,
  kRoundCommit
};

constexpr uint64_t kMaxStateBytes = uint64_t{1} << 40;  // 1 TiB: far above any model we train

void put(ByteWriter& w, const Join& m) {
  w.u8(kJoin);
  w.str(m.name);
  w.str(m.address);
  w.u32(m.gpus);
  w.str(m.state_address);
  w.u64(static_cast<uint64_t>(m.held_step));
  w.str(m.settings);
}
void put(ByteWriter& w, const Welcome& m) {
  w.u8(kWelcome);
  w.u64(m.node_id);
  w.u64(m.partition);
  w.u64(m.epoch);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u32(m.heartbeat_ms);
  w.u32(m.timeout_ms);
  w.str(m.data_position);
  w.u64(m.donor_id);
  w.str(m.donor_address);
  w.u64(m.rewinds);
  w.u8(static_cast<uint8_t>(std::min(m.stripe_donors.size(), kMaxStripeDonors)));
  for (size_t i = 0; i < m.stripe_donors.size() && i < kMaxStripeDonors; ++i) {
    w.u64(m.stripe_donors[i].id);
    w.str(m.stripe_donors[i].address);
  }
}
void put_f64(ByteWriter& w, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  w.u64(bits);
}
void put(ByteWriter& w, const NodeStatus& s) {
  w.u8(kNodeStatusVersion);
  w.u64(static_cast<uint64_t>(s.inner_step));
  w.u64(static_cast<uint64_t>(s.total_steps));
  w.u8(static_cast<uint8_t>((s.has_loss ? 1 : 0) | (s.has_val_loss ? 2 : 0)));
  put_f64(w, s.has_loss ? s.loss : 0.0);
  put_f64(w, s.has_val_loss ? s.val_loss : 0.0);
  put_f64(w, s.tokens_per_s);
  w.u32(s.gpus);
  w.str(s.device);
  w.u64(s.memory_bytes);
  put_f64(w, s.wall_s);
  put_f64(w, s.outer_blocked_s);
  put_f64(w, s.eta_s);
  w.u64(static_cast<uint64_t>(s.outer_step));
  put_f64(w, s.allreduce_s);
  w.u64(s.outer_bytes);
  w.u32(s.outer_retries);
  put_f64(w, s.join_s);
  w.u64(s.join_bytes);
}
void put(ByteWriter& w, const Heartbeat& m) {
  w.u8(kHeartbeat);
  w.u64(m.node_id);
  w.u64(static_cast<uint64_t>(m.held_step));
  if (m.status) put(w, *m.status);
}
void put(ByteWriter& w, const Leave& m) {
  w.u8(kLeave);
  w.u64(m.node_id);
  w.str(clip_reason(m.reason));
}
void put(ByteWriter& w, const Ready& m) {
  w.u8(kReady);
  w.u64(m.node_id);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.str(m.data_position);
  w.u64(m.link_to);
  w.f32(m.link_mbit);
  w.f32(m.norm);
  w.bytes(m.commitment.data(), m.commitment.size());
}
void put(ByteWriter& w, const RingAnnounce& m) {
  w.u8(kRingAnnounce);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.epoch);
  w.u64(m.round);
  w.u32(static_cast<uint32_t>(m.members.size()));
  for (const RingMember& r : m.members) {
    w.u64(r.node_id);
    w.str(r.address);
    w.f32(r.norm);
    w.bytes(r.commitment.data(), r.commitment.size());
    w.str(r.name);
    w.bytes(r.key.data(), r.key.size());
  }
}
void put(ByteWriter& w, const RingFailed& m) {
  w.u8(kRingFailed);
  w.u64(m.node_id);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.round);
  w.str(clip_reason(m.reason));
  w.u64(m.unreachable);
  w.u64(m.accused);
  w.u32(static_cast<uint32_t>(m.evidence.size()));
  for (const std::vector<uint8_t>& e : m.evidence) {
    w.u32(static_cast<uint32_t>(e.size()));
    w.bytes(e.data(), e.size());
  }
}
void put(ByteWriter& w, const OuterHash& m) {
  w.u8(kOuterHash);
  w.u64(m.node_id);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.hash);
}
void put(ByteWriter& w, const RoundDone& m) {
  w.u8(kRoundDone);
  w.u64(m.node_id);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.round);
}
void put(ByteWriter& w, const RoundCommit& m) {
  w.u8(kRoundCommit);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.round);
}
void put(ByteWriter& w, const Refused& m) {
  w.u8(kRefused);
  w.str(clip_reason(m.reason));
}
void put(ByteWriter& w, const DonorRequest& m) {
  w.u8(kDonorRequest);
  w.u64(m.node_id);
  w.u64(m.exclude);
}
void put(ByteWriter& w, const DonorAssign& m) {
  w.u8(kDonorAssign);
  w.u64(m.donor_id);
  w.str(m.donor_address);
}
void put(ByteWriter& w, const Late& m) {
  w.u8(kLate);
  w.u64(static_cast<uint64_t>(m.outer_step));
}
void put(ByteWriter& w, const StateRequest& m) {
  w.u8(kStateRequest);
  w.u8(m.kind);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u32(m.first_chunk);
  w.bytes(m.digest.data(), m.digest.size());
  w.u32(m.end_chunk);
}
void put(ByteWriter& w, const StateInfo& m) {
  w.u8(kStateInfo);
  w.u8(m.kind);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.bytes(m.digest.data(), m.digest.size());
  w.u64(m.total_bytes);
  w.u64(m.chunk_bytes);
  w.u32(m.n_chunks);
}
void put(ByteWriter& w, const StatePending& m) {
  w.u8(kStatePending);
  w.u32(m.retry_ms);
}
void put(ByteWriter& w, const Rejoin& m) {
  w.u8(kRejoin);
  w.u64(m.node_id);
  w.str(m.name);
  w.str(m.address);
  w.str(m.state_address);
  w.u64(static_cast<uint64_t>(m.held_step));
}
void put(ByteWriter& w, const Rewound& m) {
  w.u8(kRewound);
  w.u64(static_cast<uint64_t>(m.outer_step));
  w.u64(m.rewinds);
}
void put(ByteWriter& w, const PeerHello& m) {
  w.u8(kPeerHello);
  w.u64(m.node_id);
  w.u64(m.round);
  w.u32(m.lane);
}

int64_t step_field(ByteReader& r, const char* field, const std::string& from = "") {
  const uint64_t v = r.u64(field);
  if (v > static_cast<uint64_t>(INT64_MAX))
    fail("control message", from.empty() ? "" : " from " + from, ": ", field, " out of range");
  return static_cast<int64_t>(v);
}

// An outer step or -1 (none).
int64_t held_field(ByteReader& r, const char* field) {
  const uint64_t v = r.u64(field);
  if (v == UINT64_MAX) return -1;
  if (v > static_cast<uint64_t>(INT64_MAX)) fail("control message: ", field, " out of range");
  return static_cast<int64_t>(v);
}

// A figure a node reports: finite and within [lo, hi], else the message is refused.
double f64_field(ByteReader& r, const char* field, double lo, double hi, const std::string& from) {
  const uint64_t bits = r.u64(field);
  double v;
  std::memcpy(&v, &bits, sizeof v);
  if (!(std::isfinite(v) && v >= lo && v <= hi))
    fail("control message from ", from, ": node status ", field, " = ", v, " is outside [", lo, ", ", hi, "]");
  return v;
}

constexpr double kMaxSeconds = 1e9;  // ~30 years
constexpr double kMaxLoss = 1e6;

NodeStatus status_block(ByteReader& r, const std::string& from) {
  const uint8_t version = r.u8("status version");
  if (version != kNodeStatusVersion)
    fail("control message from ", from, ": node status version ", int(version), ", expected ",
         int(kNodeStatusVersion), ": run the same intellect release on every node");
  NodeStatus s;
  s.inner_step = step_field(r, "inner_step", from);
  s.total_steps = step_field(r, "total_steps", from);
  const uint8_t flags = r.u8("status flags");
  if (flags > 3) fail("control message from ", from, ": node status flags ", int(flags));
  s.has_loss = flags & 1;
  s.has_val_loss = flags & 2;
  s.loss = f64_field(r, "loss", 0, kMaxLoss, from);
  s.val_loss = f64_field(r, "val_loss", 0, kMaxLoss, from);
  s.tokens_per_s = f64_field(r, "tokens_per_s", 0, 1e12, from);
  s.gpus = r.u32("gpus");
  if (s.gpus > 1024) fail("control message from ", from, ": node status with ", s.gpus, " GPUs");
  s.device = r.str("device", kMaxDevice);
  s.memory_bytes = r.u64("memory_bytes");
  s.wall_s = f64_field(r, "wall_s", 0, kMaxSeconds, from);
  s.outer_blocked_s = f64_field(r, "outer_blocked_s", 0, kMaxSeconds, from);
  s.eta_s = f64_field(r, "eta_s", -1, kMaxSeconds, from);
  s.outer_step = held_field(r, "outer_step");
  s.allreduce_s = f64_field(r, "allreduce_s", 0, kMaxSeconds, from);
  s.outer_bytes = r.u64("outer_bytes");
  s.outer_retries = r.u32("outer_retries");
  s.join_s = f64_field(r, "join_s", 0, kMaxSeconds, from);
  s.join_bytes = r.u64("join_bytes");
  // Encoded as 0 when absent: decode(encode(x)) == x only if that holds.
  if ((!s.has_loss && (s.loss != 0 || std::signbit(s.loss))) ||
      (!s.has_val_loss && (s.val_loss != 0 || std::signbit(s.val_loss))))
    fail("control message from ", from, ": node status carries a loss it says it does not have");
  return s;
}

}  // namespace

std::vector<uint8_t> encode(const Message& m) {
  ByteWriter w(64);
  std::visit([&](const auto& msg) { put(w, msg); }, m);
  return w.take();
}

namespace {

// One reader per message kind, the mirror of its put() above: every field
// bounded as it is read, the message refused (naming `from`) otherwise.
void get(ByteReader& r, Join& m, const std::string& from) {
  m.name = r.str("name", kMaxName);
  m.address = r.str("address", kMaxName);
  m.gpus = r.u32("gpus");
  if (m.gpus == 0 || m.gpus > 1024) fail("control message from ", from, ": join with ", m.gpus, " GPUs");
  m.state_address = r.str("state_address", kMaxName);
  m.held_step = held_field(r, "held_step");
  m.settings = r.str("settings", kMaxRunSettingsBytes);
}

void get(ByteReader& r, Welcome& m, const std::string& from) {
  m.node_id = r.u64("node_id");
  m.partition = r.u64("partition");
  m.epoch = r.u64("epoch");
  m.outer_step = step_field(r, "outer_step");
  m.heartbeat_ms = r.u32("heartbeat_ms");
  m.timeout_ms = r.u32("timeout_ms");
  m.data_position = r.str("data_position", kMaxJson);
  m.donor_id = r.u64("donor_id");
  m.donor_address = r.str("donor_address", kMaxName);
  m.rewinds = r.u64("rewinds");
  const uint8_t stripes = r.u8("stripe_donors");
  if (stripes > kMaxStripeDonors)
    fail("control message from ", from, ": welcome names ", int{stripes}, " further donors, at most ",
         kMaxStripeDonors);
  for (uint8_t i = 0; i < stripes; ++i) {
    Welcome::Donor d;
    d.id = r.u64("stripe donor id");
    d.address = r.str("stripe donor address", kMaxName);
    if (d.id == 0 || d.id == m.donor_id || d.address.empty())
      fail("control message from ", from, ": welcome names further donor ", d.id, " at '", d.address,
           "' (not a node, the donor itself, or no address)");
    m.stripe_donors.push_back(std::move(d));
  }
  if (m.heartbeat_ms == 0 || m.timeout_ms <= m.heartbeat_ms)
    fail("control message from ", from, ": welcome with heartbeat ", m.heartbeat_ms, " ms and timeout ",
         m.timeout_ms, " ms");
}

void get(ByteReader& r, Heartbeat& m, const std::string& from) {
  m.node_id = r.u64("node_id");
  m.held_step = held_field(r, "held_step");
  if (r.remaining() > 0) m.status = status_block(r, from);
}

void get(ByteReader& r, Rewound& m, const std::string& /*from*/) {
  m.outer_step = step_field(r, "outer_step");
  m.rewinds = r.u64("rewinds");
}

void get(ByteReader& r, Leave& m, const std::string& /*from*/) {
  m.node_id = r.u64("node_id");
  m.reason = r.str("reason", kMaxName);
}

void get(ByteReader& r, Ready& m, const std::string& from) {
  m.node_id = r.u64("node_id");
  m.outer_step = step_field(r, "outer_step");
  m.data_position = r.str("data_position", kMaxJson);
  m.link_to = r.u64("link_to");
  m.link_mbit = r.f32("link_mbit");
  // Up to 10 Tbit/s; a measurement that is not a rate is refused, not stored.
  if (!(m.link_mbit >= 0.0f && m.link_mbit <= 1e7f))
    fail("control message from ", from, ": link_mbit ", m.link_mbit, " is not a link rate");
  m.norm = r.f32("norm");
  if (!(m.norm == -1.0f || (m.norm >= 0.0f && std::isfinite(m.norm))))
    fail("control message from ", from, ": norm ", m.norm, " is neither a norm nor -1 (not announced)");
  r.bytes("commitment", m.commitment.data(), m.commitment.size());
}

void get(ByteReader& r, RingAnnounce& m, const std::string& from) {
  m.outer_step = step_field(r, "outer_step");
  m.epoch = r.u64("epoch");
  m.round = r.u64("round");
  const uint32_t n = r.u32("members");
  if (n == 0 || n > kMaxRing) fail("control message from ", from, ": a ring of ", n, " nodes");
  for (uint32_t i = 0; i < n; ++i) {
    RingMember mem;
    mem.node_id = r.u64("member node_id");
    mem.address = r.str("member address", kMaxName);
    mem.norm = r.f32("member norm");
    if (!(mem.norm == -1.0f || (mem.norm >= 0.0f && std::isfinite(mem.norm))))
      fail("control message from ", from, ": member norm ", mem.norm, " is neither a norm nor -1");
    r.bytes("member commitment", mem.commitment.data(), mem.commitment.size());
    mem.name = r.str("member name", kMaxName);
    r.bytes("member key", mem.key.data(), mem.key.size());
    m.members.push_back(std::move(mem));
  }
}

void get(ByteReader& r, RingFailed& m, const std::string& from) {
  m.node_id = r.u64("node_id");
  m.outer_step = step_field(r, "outer_step");
  m.round = r.u64("round");
  m.reason = r.str("reason", kMaxName);
  m.unreachable = r.u64("unreachable");
  m.accused = r.u64("accused");
  const uint32_t n = r.u32("evidence count");
  if (n > kMaxEvidenceMessages)
    fail("control message from ", from, ": ring-failed with ", n, " evidence messages (at most ",
         kMaxEvidenceMessages, ")");
  if (n > 0 && m.accused == 0) fail("control message from ", from, ": ring-failed with evidence but nobody accused");
  size_t total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t len = r.u32("evidence length");
    total += len;
    if (total > kMaxEvidenceBytes)
      fail("control message from ", from, ": ring-failed with more than ", kMaxEvidenceBytes, " bytes of evidence");
    const uint8_t* p = r.view("evidence", len);
    m.evidence.emplace_back(p, p + len);
  }
}

void get(ByteReader& r, OuterHash& m, const std::string& /*from*/) {
  m.node_id = r.u64("node_id");
  m.outer_step = step_field(r, "outer_step");
  m.hash = r.u64("hash");
}

void get(ByteReader& r, RoundDone& m, const std::string& /*from*/) {
  m.node_id = r.u64("node_id");
  m.outer_step = step_field(r, "outer_step");
  m.round = r.u64("round");
}

void get(ByteReader& r, RoundCommit& m, const std::string& /*from*/) {
  m.outer_step = step_field(r, "outer_step");
  m.round = r.u64("round");
}

void get(ByteReader& r, PeerHello& m, const std::string& from) {
  m.node_id = r.u64("node_id");
  m.round = r.u64("round");
  m.lane = r.u32("lane");
  if (m.lane >= kMaxRingLanes) fail("control message from ", from, ": ring lane ", m.lane, " is not below ",
                                     kMaxRingLanes);
}

void get(ByteReader& r, DonorRequest& m, const std::string& /*from*/) {
  m.node_id = r.u64("node_id");
  m.exclude = r.u64("exclude");
}

void get(ByteReader& r, DonorAssign& m, const std::string& /*from*/) {
  m.donor_id = r.u64("donor_id");
  m.donor_address = r.str("donor_address", kMaxName);
}

void get(ByteReader& r, StatePending& m, const std::string& from) {
  m.retry_ms = r.u32("retry_ms");
  if (m.retry_ms == 0 || m.retry_ms > 60000)
    fail("control message from ", from, ": retry_ms ", m.retry_ms, " is outside [1, 60000]");
}

void get(ByteReader& r, Rejoin& m, const std::string& /*from*/) {
  m.node_id = r.u64("node_id");
  m.name = r.str("name", kMaxName);
  m.address = r.str("address", kMaxName);
  m.state_address = r.str("state_address", kMaxName);
  m.held_step = held_field(r, "held_step");
}

void get(ByteReader& r, StateRequest& m, const std::string& from) {
  m.kind = r.u8("kind");
  if (m.kind < 1 || m.kind > 3) fail("control message from ", from, ": state kind ", int(m.kind));
  const uint64_t step = r.u64("outer_step");
  if (step != UINT64_MAX && step > static_cast<uint64_t>(INT64_MAX))
    fail("control message from ", from, ": outer_step out of range");
  m.outer_step = static_cast<int64_t>(step);
  m.first_chunk = r.u32("first_chunk");
  r.bytes("digest", m.digest.data(), m.digest.size());
  m.end_chunk = r.u32("end_chunk");
  if (m.end_chunk < m.first_chunk)
    fail("control message from ", from, ": state chunks [", m.first_chunk, ", ", m.end_chunk, ") run backwards");
}

void get(ByteReader& r, StateInfo& m, const std::string& from) {
  m.kind = r.u8("kind");
  if (m.kind < 1 || m.kind > 3) fail("control message from ", from, ": state kind ", int(m.kind));
  m.outer_step = step_field(r, "outer_step");
  r.bytes("digest", m.digest.data(), m.digest.size());
  m.total_bytes = r.u64("total_bytes");
  m.chunk_bytes = r.u64("chunk_bytes");
  m.n_chunks = r.u32("n_chunks");
  if (m.total_bytes > kMaxStateBytes || m.chunk_bytes == 0 || m.chunk_bytes > (uint64_t{32} << 20) ||
      m.n_chunks != (m.total_bytes + m.chunk_bytes - 1) / m.chunk_bytes)
    fail("control message from ", from, ": state of ", m.total_bytes, " bytes in ", m.n_chunks,
         " chunks of ", m.chunk_bytes, " is inconsistent");
}

template <typename T>
T read(ByteReader& r, const std::string& from) {
  T m;
  get(r, m, from);
  return m;
}

}  // namespace

Message decode(const std::vector<uint8_t>& payload, const std::string& from) {
  ByteReader r(payload, "control message from " + from);
  Message out;
  switch (r.u8("kind")) {
    case kJoin: out = read<Join>(r, from); break;
    case kWelcome: out = read<Welcome>(r, from); break;
    case kHeartbeat: out = read<Heartbeat>(r, from); break;
    case kRewound: out = read<Rewound>(r, from); break;
    case kLeave: out = read<Leave>(r, from); break;
    case kReady: out = read<Ready>(r, from); break;
    case kRingAnnounce: out = read<RingAnnounce>(r, from); break;
    case kRingFailed: out = read<RingFailed>(r, from); break;
    case kOuterHash: out = read<OuterHash>(r, from); break;
    case kRoundDone: out = read<RoundDone>(r, from); break;
    case kRoundCommit: out = read<RoundCommit>(r, from); break;
    case kRefused: out = Refused{r.str("reason", kMaxName)}; break;
    case kPeerHello: out = read<PeerHello>(r, from); break;
    case kDonorRequest: out = read<DonorRequest>(r, from); break;
    case kDonorAssign: out = read<DonorAssign>(r, from); break;
    case kLate: out = Late{step_field(r, "outer_step")}; break;
    case kStatePending: out = read<StatePending>(r, from); break;
    case kRejoin: out = read<Rejoin>(r, from); break;
    case kStateRequest: out = read<StateRequest>(r, from); break;
    case kStateInfo: out = read<StateInfo>(r, from); break;
    default: fail("control message from ", from, ": unknown kind ", int(payload.empty() ? 0 : payload[0]));
  }
  r.expect_end();
  return out;
}

const char* name(const Message& m) {
  static const char* names[] = {"join",        "welcome",      "heartbeat",   "leave",       "ready",
                                "ring-announce", "ring-failed", "outer-hash", "refused",     "peer-hello",
                                "donor-request", "donor-assign", "late",      "state-request", "state-info",
                                "rejoin",      "state-pending", "rewound",   "round-done",  "round-commit"};
  return names[m.index()];
}

}  // namespace intellect::control
