// The mesh's connections: authenticated, framed TCP between nodes.
//
// Threads and what each owns:
//   - the loop thread (one libuv event loop per Transport) owns every socket,
//     timer and handshake, reads and decodes every connection's bytes (a
//     frame's size limit is checked on its header, before its payload is
//     buffered: frame.h), and gives each sealed frame its position in its
//     direction (its AEAD nonce) in arrival order;
//   - the opener threads (frame_openers.h; TransportOptions::frame_openers,
//     sized from the cores) open (decrypt and authenticate) those frames,
//     several at once, of one connection or of many. Each holds only the
//     frame, the connection's receive key and its shared state (ConnShared,
//     under the transport's mutex), never the loop's per-connection state,
//     so a connection may close and be freed while its frames are opened.
//     The results are put back in position order per connection: recv()
//     sees a connection's frames in the order they arrived, and a frame that
//     does not open stops that connection's delivery at that frame, discards
//     what came after it, and makes the loop close the connection with the
//     frame's position in the log line;
//   - other threads (the trainer, the coordinator client, lanes) call the
//     methods below, which hand work to the loop through a uv_async_t and a
//     mutex-guarded queue and wait on a condition variable. send() seals on
//     the calling thread, in the connection's order (many lanes seal in
//     parallel).
// Every wait has a deadline and every queue a bound:
//   - send() blocks while the connection's unsent bytes exceed
//     max_queued_bytes, until they drain or the deadline passes;
//   - received frames, whether waiting for an opener or for recv(), count
//     against a per-connection inbox of at most max_inbox_bytes; beyond it
//     the loop stops reading that socket, so TCP pushes back on the sender
//     instead of memory growing here. The openers' queue is capped in jobs
//     as well; when it is full the loop thread opens the frame itself.
// A connection is usable (its ConnId returned by connect() or announced by an
// `authenticated` event) only after the handshake in handshake.h. From then
// on every frame is sealed (frame_cipher.h); with
// unsealed_frames_for_benchmarks (bench_allreduce --plaintext only) frames go
// as they are and are delivered by the loop thread. Any failure of one
// connection (reset, EOF, bad frame, failed authentication, a frame that does
// not open, timeout) closes that connection with a logged reason; it never
// ends the process. Frames that arrived before a close are still delivered
// (opened first), then recv() reports the close.
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
  // Threads that open sealed frames (frame_openers.h): -1 sizes the pool
  // from the hardware (FrameOpeners::default_threads); 0 opens every frame on
  // the loop thread (the design before the pool, kept for comparison and
  // tests); N > 0 gives N threads.
  int frame_openers = -1;
  // Which library seals and opens this transport's frames (frame_cipher.h):
  // OpenSSL, the fast one; libsodium is kept to compare against
  // (bench_allreduce --aead libsodium) and to check OpenSSL's frames with an
  // independent implementation. The bytes on the wire are the same, so two
  // ends may differ.
  AeadLibrary aead_library = AeadLibrary::openssl;
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
  // Stops the openers (frames being opened finish, queued ones are
  // dropped), closes every connection and listener (unsent frames are
  // dropped), stops the loop and joins its threads. No other method may be
  // running.
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
