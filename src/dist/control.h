// The coordinator protocol: typed messages carried in `control` frames.
//
// Payload: u8 message kind, then the kind's fields in a fixed order
// (little-endian; strings as u32 length + bytes with a per-field cap). The
// decoder checks every length against its cap before copying and refuses
// trailing bytes, so a malformed or hostile message is an Error naming the
// field, never a read past the buffer.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace intellect {

namespace control {

inline constexpr size_t kMaxName = 256;         // node names, addresses, reasons
inline constexpr size_t kMaxJson = 64 * 1024;   // data positions
inline constexpr size_t kMaxRing = 4096;        // nodes in one ring

// node -> coordinator: I want to join (address: where peers dial me).
struct Join {
  std::string name, address;
  uint32_t gpus = 1;
};
// coordinator -> node
struct Welcome {
  uint64_t node_id = 0, partition = 0, epoch = 0;
  int64_t outer_step = 0;  // the run's current outer step
  uint32_t heartbeat_ms = 2000, timeout_ms = 6000;
  std::string data_position;  // JSON, empty for a fresh partition
};
struct Heartbeat {
  uint64_t node_id = 0;
};
struct Leave {
  uint64_t node_id = 0;
  std::string reason;
};
// node -> coordinator: my inner steps for outer step `outer_step` are done.
struct Ready {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  std::string data_position;  // JSON: where this node's data stands
};
struct RingMember {
  uint64_t node_id = 0;
  std::string address;
};
// coordinator -> ring members: average with these nodes, in this order.
struct RingAnnounce {
  int64_t outer_step = 0;
  uint64_t epoch = 0, round = 0;
  std::vector<RingMember> members;
};
// node -> coordinator: the round failed here (a neighbour vanished or timed out).
struct RingFailed {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  uint64_t round = 0;
  std::string reason;
};
// node -> coordinator: hash of my outer parameters after the step.
struct OuterHash {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  uint64_t hash = 0;
};
// coordinator -> node: a request was refused (why, for the log).
struct Refused {
  std::string reason;
};
// node -> node, first on a ring connection: who is dialling, for which round,
// and which of the round's parallel rings (lanes) the connection carries.
struct PeerHello {
  uint64_t node_id = 0;
  uint64_t round = 0;
  uint32_t lane = 0;
};
constexpr uint32_t kMaxRingLanes = 64;

using Message = std::variant<Join, Welcome, Heartbeat, Leave, Ready, RingAnnounce, RingFailed, OuterHash, Refused,
                             PeerHello>;

std::vector<uint8_t> encode(const Message& m);
// `from` names the sender in errors.
Message decode(const std::vector<uint8_t>& payload, const std::string& from);
const char* name(const Message& m);

}  // namespace control
}  // namespace intellect
