// The mesh's connections: authenticated, framed TCP between nodes.
//
// One libuv event-loop thread per Transport owns every socket and timer.
// Other threads (the trainer, the coordinator client) call the methods below,
// which hand work to the loop through a uv_async_t and a mutex-guarded queue
// and wait on a condition variable. Every wait has a deadline and every queue
// a byte budget:
//   - send() blocks while the connection's unsent bytes exceed
//     max_queued_bytes, until they drain or the deadline passes;
//   - received frames wait in a per-connection inbox of at most
//     max_inbox_bytes; beyond it the loop stops reading that socket, so TCP
//     pushes back on the sender instead of memory growing here.
// A connection is usable (its ConnId returned by connect() or announced by an
// `authenticated` event) only after the handshake in handshake.h. From then
// on every frame is sealed (frame_cipher.h): send() encrypts on the calling
// thread, in the connection's order (many lanes encrypt in parallel), and
// the loop thread opens each frame as it arrives, before recv() sees it
// (decryption off the receiving lane's critical path); with
// unsealed_frames_for_benchmarks (bench_allreduce --plaintext only) frames go
// as they are. Any failure of one connection (reset, EOF, bad frame, failed
// authentication, a frame that does not open, timeout) closes that
// connection with a logged reason; it never ends the process.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dist/auth.h"
#include "dist/handshake.h"
#include "dist/frame.h"
#include "util/error.h"

namespace intellect {

using ConnId = uint64_t;
constexpr ConnId kAnyConn = 0;  // recv() from whichever connection has a frame first

using MeshClock = std::chrono::steady_clock;
using Deadline = MeshClock::time_point;
inline Deadline deadline_in(std::chrono::milliseconds d) { return MeshClock::now() + d; }

struct TransportOptions {
  // A RunSecret converts to the shared-secret mode's credentials.
  PeerCredentials credentials;
  // From TCP connect (or accept) to both proofs verified.
  std::chrono::milliseconds handshake_timeout{10000};
  // A peer that leaves a frame half-sent, or accepts none of our queued bytes,
  // for this long is dropped.
  std::chrono::milliseconds io_timeout{60000};
  size_t max_queued_bytes = size_t{128} << 20;  // per connection: sent but not yet written
  size_t max_inbox_bytes = size_t{128} << 20;   // per connection: received but not yet recv()'d
  size_t max_pending_handshakes = 64;           // inbound connections not yet authenticated
  // Called on the loop thread for every dropped connection and failure;
  // default: stderr with a "[mesh]" prefix.
  std::function<void(const std::string&)> log;
  // BENCHMARKS ONLY (bench_allreduce --plaintext, which sets it in every
  // process it starts): frames after the handshake are neither encrypted nor
  // authenticated, so the cost of sealing can be measured against the same
  // build. The handshake still authenticates both ends, and refuses a peer
  // whose setting differs (handshake.h). No config key or message sets it:
  // intellect_train never does.
  bool unsealed_frames_for_benchmarks = false;
};

struct TransportEvent {
  enum class Kind { authenticated, closed };
  Kind kind;
  ConnId conn;
  bool inbound;        // the peer dialled us
  std::string peer;    // "ip:port"
  std::string reason;  // closed: why
  std::optional<PublicKey> peer_key;  // authenticated, node-key mode: who the peer is
};

struct Message {
  ConnId conn;
  Frame frame;
};

// "host:port" -> (host, port); fails with a message naming `what`.
std::pair<std::string, uint16_t> split_host_port(const std::string& s, const std::string& what);

struct TransportLoop;  // the loop thread's state (transport.cpp)

// The handshake failed on credentials: the peer's proof did not check
// (another run's secret, a key not on the allowlist, a tampered handshake),
// or the peer closed the connection right after this side's proof (it
// refused ours). Not a peer that is slow or gone, so retrying will not help.
struct AuthenticationFailed : Error {
  using Error::Error;
};

class Transport {
 public:
  explicit Transport(TransportOptions options);
  // Closes every connection and listener (unsent frames are dropped), stops
  // the loop and joins its thread. No other method may be running.
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Listens on a numeric IPv4/IPv6 address; port 0 picks a free port. Returns
  // the bound port.
  uint16_t listen(const std::string& host, uint16_t port);
  // Dials, authenticates and returns the connection; throws Error with the
  // reason on failure or when the deadline passes first, and
  // AuthenticationFailed when either side's proof did not check.
  ConnId connect(const std::string& host, uint16_t port, Deadline deadline);
  // Queues a frame (moved, not copied). Blocks while the connection's queue is
  // over budget; throws Error if the deadline passes (the frame is not sent),
  // the connection is closed, or the frame is invalid. A frame larger than
  // the whole budget goes out alone once the queue is empty.
  void send(ConnId conn, Frame frame, Deadline deadline);
  // The next frame from `conn` (or any connection with kAnyConn, oldest
  // first); nullopt when the deadline passes. Throws Error when that
  // connection is closed and its inbox is empty.
  std::optional<Message> recv(ConnId conn, Deadline deadline);
  // Connection events (authenticated, closed) in order; nullopt at the deadline.
  std::optional<TransportEvent> next_event(Deadline deadline);
  // Flushes what was queued, then closes. Unknown or closed ids are ignored.
  void close(ConnId conn, const std::string& reason = "closed by this node");

  bool is_open(ConnId conn) const;
  std::string close_reason(ConnId conn) const;  // empty while open
  std::string peer(ConnId conn) const;
  // The peer's node key (node-key mode, once authenticated; nullopt otherwise).
  std::optional<PublicKey> peer_key(ConnId conn) const;
  // The cipher suite of an authenticated connection.
  std::optional<CipherSuite> suite(ConnId conn) const;

 private:
  std::unique_ptr<TransportLoop> impl_;
};

}  // namespace intellect
