#include "dist/transport.h"

#include <signal.h>
#include <uv.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <array>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dist/frame_openers.h"
#include "dist/message_buffers.h"
#include "dist/sealed_frame.h"
#include "util/error.h"

namespace intellect {

namespace {

constexpr size_t kReadChunk = 64 << 10;
constexpr size_t kMaxEvents = 4096;         // undrained events beyond this are dropped, oldest first
constexpr size_t kMaxClosedRecords = 4096;  // closed connections remembered for close_reason()
// What a received frame costs beyond its payload (its queue entry, its
// job), counted against the inbox budget, so a stream of empty frames is
// bounded like a stream of large ones.
constexpr size_t kFrameBookkeepingBytes = 64;

std::string uv_error(int rc) { return str(uv_err_name(rc), " (", uv_strerror(rc), ")"); }

sockaddr_storage parse_address(const std::string& host, uint16_t port, const char* what) {
  sockaddr_storage ss{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss)) == 0) return ss;
  if (uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) return ss;
  fail("cannot ", what, " '", host, "': not a numeric IPv4 or IPv6 address (host names are not "
       "resolved; give the node's IP)");
}

std::string address_text(const sockaddr_storage& ss) {
  char ip[64] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
    return str(ip, ":", port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    return str("[", ip, "]:", port);
  }
  return "?";
}

long long ms(std::chrono::milliseconds d) { return static_cast<long long>(d.count()); }

}  // namespace

// What caller threads see of one connection; guarded by TransportLoop::mu.
struct ConnShared {
  enum class State { handshaking, open, closed };
  State state = State::handshaking;
  bool inbound = false;
  std::string peer, reason;
  size_t queued = 0;  // bytes accepted by send() and not yet written (or cancelled)
  struct Received {
    uint64_t seq;  // delivery order across connections (recv(kAnyConn) takes the oldest)
    Frame frame;   // opened and verified
  };
  std::deque<Received> inbox;
  // Sealed frames handed to the openers (frame_openers.h), in arrival order:
  // positions rx_front, rx_front + 1, ... Each moves to the inbox once it and
  // every frame before it have opened, so recv() sees arrival order.
  struct Opening {
    enum class State { opening, opened, failed };
    State state = State::opening;
    size_t bytes = 0;     // counted in inbox_bytes: the payload once opened, plus bookkeeping
    Frame frame;          // opened: the plaintext
    std::string failure;  // failed: why, for the log and close_reason()
  };
  std::deque<Opening> opening;
  uint64_t rx_front = 0;  // the position of opening.front()
  // A frame did not open: what was behind it is discarded, later frames are
  // not opened, and the loop drops the connection (posted by the opener).
  bool rx_failed = false;
  // Bytes in the inbox and in `opening` (as they will be once opened), plus
  // kFrameBookkeepingBytes a frame: the budget against which the loop stops
  // reading this socket.
  size_t inbox_bytes = 0;
  bool close_requested = false;  // close() was called: send() refuses new frames
  bool read_paused = false;      // the loop stopped reading: inbox over budget
  bool resume_posted = false;  // a resume command is on its way to the loop
  bool auth_failed = false;    // closed because the peer's proof did not check, or it refused ours
  // Set once when the handshake finishes, immutable after.
  std::shared_ptr<const FrameCipher> tx;
  std::optional<PublicKey> peer_key;
  // Sending: one sender at a time per connection holds send_mu from taking a
  // position to queueing the frame, so frames reach the wire in position order.
  std::timed_mutex send_mu;
  uint64_t tx_next = 0;  // guarded by send_mu
};

// Loop-thread state of one connection: its two handles, the handshake and the
// decoder. Freed when both handles have closed.
struct Conn {
  TransportLoop* t = nullptr;
  ConnId id = 0;
  std::shared_ptr<ConnShared> sh;
  uv_tcp_t tcp;
  uv_timer_t timer;  // the watchdog: handshake deadline, stalled reads and writes
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  Handshake hs;
  FrameDecoder dec{FrameDecoder::Phase::handshake};
  uint64_t rx_next = 0;  // position of the next sealed frame from the peer: its AEAD nonce
  // Set when the handshake finishes; shared with the openers' jobs, so a
  // frame being opened keeps the key alive after the connection is freed.
  std::shared_ptr<const FrameCipher> rx;
  int handles_open = 0;
  bool closing = false, shutting_down = false, reading = false;
  uint64_t opened_ms = 0, last_read_ms = 0, last_write_ms = 0;
  size_t writes_in_flight = 0, last_write_queue = 0;
  std::unique_ptr<uint8_t[]> buf{new uint8_t[kReadChunk]};
  std::string close_reason;  // for a graceful close, until the flush completes

  Conn(AuthRole role, const PeerCredentials& cred, Handshake::OwnEphemeralCheck check)
      : hs(role, cred, std::move(check)) {}
};

struct WriteReq {
  uv_write_t req;
  Conn* c;
  FrameHeader header;
  std::vector<uint8_t> payload;
  std::array<uint8_t, kAeadTagBytes> tag;
  size_t accounted;  // bytes to give back to the connection's send budget
};

// The handle is the first member, so a close callback's uv_handle_t* is the
// Listener (tcp.data points at the loop for on_connection).
struct Listener {
  uv_tcp_t tcp;
};

struct TransportLoop {
  TransportOptions opt;
  uv_loop_t loop;
  uv_async_t wake;
  std::thread thread;
  uint64_t tick_ms = 0;

  // Shared with caller threads.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::function<void()>> commands;
  bool stopped = false;  // the shutdown command is queued: post() refuses more
  ConnId next_id = 1;
  uint64_t next_seq = 1;
  std::map<ConnId, std::shared_ptr<ConnShared>> shared;
  std::deque<ConnId> closed_order;
  std::deque<TransportEvent> events;

  // Opens sealed frames; its threads touch only ConnShared (under mu), the
  // job's own frame and cipher, and post() (see frame_opened).
  std::unique_ptr<FrameOpeners> openers;

  // Loop thread only.
  std::unordered_map<ConnId, Conn*> conns;
  std::vector<Listener*> listeners;
  std::set<EphemeralKey> challenges_out;  // our acceptor ephemerals of handshakes in progress
  size_t pending_inbound = 0;

  void log(const std::string& m) {
    if (opt.log) {
      opt.log(m);
    } else {
      std::cerr << "[mesh] " << m << "\n";
    }
  }

  bool post(std::function<void()> fn) {
    {
      std::lock_guard lk(mu);
      if (stopped) return false;
      commands.push_back(std::move(fn));
    }
    uv_async_send(&wake);
    return true;
  }

  static void on_wake(uv_async_t* a) {
    auto* t = static_cast<TransportLoop*>(a->data);
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lk(t->mu);
      batch.swap(t->commands);
    }
    for (auto& fn : batch) fn();
  }

  std::string peer_of(ConnId id) const {
    std::lock_guard lk(mu);
    auto it = shared.find(id);
    return it == shared.end() ? "?" : it->second->peer;
  }

  std::shared_ptr<ConnShared> find_shared(ConnId id) const {
    auto it = shared.find(id);
    return it == shared.end() ? nullptr : it->second;
  }

  void push_event(TransportEvent e) {
    if (events.size() >= kMaxEvents) events.pop_front();
    events.push_back(std::move(e));
  }

  // --- connection lifecycle (loop thread) ---------------------------------

  Conn* new_conn(ConnId id, AuthRole role, std::shared_ptr<ConnShared> sh) {
    auto* c = new Conn(role, opt.credentials, [this](const EphemeralKey& e) { return challenges_out.count(e) > 0; });
    c->hs.set_unsealed_frames_for_benchmarks(opt.unsealed_frames_for_benchmarks);
    c->t = this;
    c->id = id;
    c->sh = std::move(sh);
    uv_tcp_init(&loop, &c->tcp);
    uv_timer_init(&loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->opened_ms = c->last_read_ms = c->last_write_ms = uv_now(&loop);
    uv_timer_start(&c->timer, on_tick, tick_ms, tick_ms);
    conns[id] = c;
    return c;
  }

  static void on_handle_closed(uv_handle_t* h) {
    auto* c = static_cast<Conn*>(h->data);
    if (--c->handles_open == 0) {
      c->t->conns.erase(c->id);
      delete c;
    }
  }

  // Closes at once: queued writes are cancelled. Idempotent.
  void drop(Conn* c, const std::string& reason) {
    if (c->closing) return;
    c->closing = true;
    bool was_handshaking = !c->hs.done();
    if (c->hs.role() == AuthRole::acceptor) {
      challenges_out.erase(c->hs.own_ephemeral());
      if (was_handshaking) --pending_inbound;
    }
    bool was_open;
    {
      std::lock_guard lk(mu);
      was_open = c->sh->state == ConnShared::State::open;
      c->sh->state = ConnShared::State::closed;
      c->sh->reason = reason;
      closed_order.push_back(c->id);
      // Forget the oldest closed connections whose frames were all taken.
      while (closed_order.size() > kMaxClosedRecords) {
        auto it = shared.find(closed_order.front());
        if (it != shared.end() && (!it->second->inbox.empty() || !it->second->opening.empty())) break;
        if (it != shared.end()) shared.erase(it);
        closed_order.pop_front();
      }
      if (was_open)
        push_event({TransportEvent::Kind::closed, c->id, c->sh->inbound, c->sh->peer, reason, std::nullopt});
    }
    cv.notify_all();
    log(str(was_open ? "closed connection " : "dropped connection ", c->id, " ",
            c->sh->inbound ? "from " : "to ", c->sh->peer, ": ", reason));
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_handle_closed);
  }

  // Flushes queued writes, then closes; the watchdog bounds the flush.
  void close_gracefully(Conn* c, const std::string& reason) {
    if (c->closing || c->shutting_down) return;
    c->shutting_down = true;
    c->close_reason = reason;
    c->last_write_ms = uv_now(&loop);  // the flush gets a full io_timeout
    c->shutdown_req.data = c;
    int rc = uv_shutdown(&c->shutdown_req, reinterpret_cast<uv_stream_t*>(&c->tcp), on_shutdown);
    if (rc != 0) drop(c, reason);
  }

  static void on_shutdown(uv_shutdown_t* req, int) {
    auto* c = static_cast<Conn*>(req->data);
    c->t->drop(c, c->close_reason);
  }

  // The socket is connected (either direction): start reading and the handshake.
  void start_conn(Conn* c) {
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 30);
    int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
    if (rc != 0) return drop(c, str("cannot read from the socket: ", uv_error(rc)));
    c->reading = true;
    if (auto first = c->hs.start()) {
      challenges_out.insert(c->hs.own_ephemeral());
      write_frame(c, std::move(*first), 0, nullptr);
    }
  }

  static void on_connection(uv_stream_t* server, int status) {
    auto* t = static_cast<TransportLoop*>(server->data);
    if (status < 0) return t->log(str("accept failed: ", uv_error(status)));
    ConnId id;
    auto sh = std::make_shared<ConnShared>();
    sh->inbound = true;
    {
      std::lock_guard lk(t->mu);
      id = t->next_id++;
      t->shared[id] = sh;
    }
    Conn* c = t->new_conn(id, AuthRole::acceptor, sh);
    ++t->pending_inbound;
    int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp));
    if (rc != 0) return t->drop(c, str("accept failed: ", uv_error(rc)));
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      std::lock_guard lk(t->mu);
      sh->peer = address_text(ss);
    }
    if (t->pending_inbound > t->opt.max_pending_handshakes)
      return t->drop(c, str("more than ", t->opt.max_pending_handshakes,
                            " inbound connections are still authenticating; refusing this one"));
    t->start_conn(c);
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* c = static_cast<Conn*>(req->data);
    if (c->closing) return;
    if (status < 0) return c->t->drop(c, str("TCP connect failed: ", uv_error(status)));
    c->t->start_conn(c);
  }

  // --- reading ---------------------------------------------------------------

  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(h->data);
    *buf = uv_buf_init(reinterpret_cast<char*>(c->buf.get()), kReadChunk);
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
    auto* c = static_cast<Conn*>(s->data);
    TransportLoop* t = c->t;
    if (c->closing || nread == 0) return;
    if (nread < 0) {
      if (c->hs.awaiting_peer_proof()) {
        // An authentication failure, not a peer that is slow or gone: callers
        // that ask again later (donors, rounds) must not take it for "not yet".
        {
          std::lock_guard lk(t->mu);
          c->sh->auth_failed = true;
        }
        return t->drop(c, str("peer closed the connection during the handshake, right after this node's proof "
                              "and before proving itself (",
                              nread == UV_EOF ? std::string("end of stream") : uv_error(static_cast<int>(nread)),
                              "): it refused this node's credentials"));
      }
      if (nread == UV_EOF)
        return t->drop(c, c->dec.mid_frame() ? "peer closed the connection in the middle of a frame"
                          : c->hs.done()     ? "peer closed the connection"
                                             : "peer closed the connection during the handshake");
      return t->drop(c, str("read failed: ", uv_error(static_cast<int>(nread))));
    }
    c->last_read_ms = uv_now(&t->loop);
    const uint8_t* p = c->buf.get();
    size_t n = static_cast<size_t>(nread);
    try {
      while (n > 0 && !c->closing) {
        size_t k = c->dec.feed(p, n);
        p += k;
        n -= k;
        if (c->dec.failed()) return t->drop(c, str("protocol error: ", c->dec.error_message()));
        if (c->dec.ready()) t->on_frame(c, c->dec.take());
      }
    } catch (const std::exception& e) {  // allocation failure, or a bug: this connection only
      t->drop(c, str("error while handling a frame: ", e.what()));
    }
  }

  void on_frame(Conn* c, Frame f) {
    if (!c->hs.done()) {
      std::optional<Frame> reply = c->hs.on_frame(f);
      if (c->hs.failed()) {
        {
          std::lock_guard lk(mu);
          c->sh->auth_failed = true;
        }
        return drop(c, str("authentication failed: ", c->hs.failure()));
      }
      if (reply) write_frame(c, std::move(*reply), 0, nullptr);
      if (c->hs.done()) authenticated(c);
      return;
    }
    if (!c->rx) return deliver(c, std::move(f));  // unsealed_frames_for_benchmarks: as it came
    hand_to_openers(c, std::move(f));
  }

  // A sealed frame gets its position (its nonce) here, on the loop thread, in
  // arrival order, and is opened on an opener thread (frame_openers.h): the
  // loop thread reads and decodes every connection's bytes, so opening here
  // made it the ring's serial stage. Its bytes count against the inbox budget
  // from now on, so frames waiting to be opened pause reading like frames
  // waiting for recv().
  void hand_to_openers(Conn* c, Frame f) {
    const uint64_t position = c->rx_next++;
    const size_t bytes =
        (f.payload.size() >= kAeadTagBytes ? f.payload.size() - kAeadTagBytes : 0) + kFrameBookkeepingBytes;
    bool pause;
    {
      std::lock_guard lk(mu);
      if (c->sh->rx_failed) return;  // an earlier frame did not open: the drop is on its way
      if (c->sh->opening.empty()) c->sh->rx_front = position;
      c->sh->opening.push_back({ConnShared::Opening::State::opening, bytes, {}, {}});
      c->sh->inbox_bytes += bytes;
      pause = c->sh->inbox_bytes > opt.max_inbox_bytes && !c->sh->read_paused;
      if (pause) c->sh->read_paused = true;
    }
    if (pause) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
      c->reading = false;
    }
    // The job holds the connection's shared state and key, never the Conn,
    // which the loop frees when the connection closes.
    auto job = [t = this, id = c->id, sh = c->sh, rx = c->rx, position, frame = std::move(f)]() mutable {
      std::string failure;
      try {
        failure = open_frame(*rx, position, frame);
      } catch (const std::exception& e) {  // a bug or allocation failure: this connection only
        failure = str("frame ", position, " could not be opened: ", e.what());
      }
      try {
        t->frame_opened(id, *sh, position, std::move(frame), std::move(failure));
      } catch (const std::exception& e) {  // allocation failure: this connection only
        t->post([t, id, why = std::string(e.what())] {
          auto it = t->conns.find(id);
          if (it != t->conns.end()) t->drop(it->second, str("error while delivering an opened frame: ", why));
        });
      }
    };
    openers->run(std::move(job));
  }

  // An opener's result (any thread). Moves every frame at the front of the
  // connection's sequence that has opened into the inbox, in position order;
  // at a frame that failed, discards it and everything behind it and asks
  // the loop to drop the connection. A connection that closed meanwhile
  // still gets the frames that opened (recv() returns them before it
  // reports the close), as when they were opened on the loop thread.
  void frame_opened(ConnId id, ConnShared& sh, uint64_t position, Frame f, std::string failure) {
    using State = ConnShared::Opening::State;
    std::string drop_reason;
    {
      std::lock_guard lk(mu);
      if (sh.rx_failed || position < sh.rx_front || position - sh.rx_front >= sh.opening.size())
        return;  // discarded behind a frame that failed
      ConnShared::Opening& slot = sh.opening[position - sh.rx_front];
      slot.state = failure.empty() ? State::opened : State::failed;
      slot.frame = std::move(f);
      slot.failure = std::move(failure);
      while (!sh.opening.empty() && sh.opening.front().state == State::opened) {
        sh.inbox.push_back({next_seq++, std::move(sh.opening.front().frame)});
        sh.opening.pop_front();
        ++sh.rx_front;
      }
      if (!sh.opening.empty() && sh.opening.front().state == State::failed) {
        drop_reason = std::move(sh.opening.front().failure);
        sh.rx_failed = true;
        for (const auto& o : sh.opening) sh.inbox_bytes -= o.bytes;
        sh.opening.clear();
      }
    }
    cv.notify_all();
    if (!drop_reason.empty())
      post([this, id, drop_reason] {
        auto it = conns.find(id);
        if (it != conns.end()) drop(it->second, drop_reason);
      });
  }

  // An opened frame into the connection's inbox; reading pauses over budget.
  void deliver(Conn* c, Frame f) {
    size_t bytes = f.payload.size() + kFrameBookkeepingBytes;
    bool pause;
    {
      std::lock_guard lk(mu);
      c->sh->inbox.push_back({next_seq++, std::move(f)});
      c->sh->inbox_bytes += bytes;
      pause = c->sh->inbox_bytes > opt.max_inbox_bytes && !c->sh->read_paused;
      if (pause) c->sh->read_paused = true;
    }
    cv.notify_all();
    if (pause) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
      c->reading = false;
    }
  }

  void authenticated(Conn* c) {
    c->dec.set_phase(FrameDecoder::Phase::established);
    if (c->hs.role() == AuthRole::acceptor) {
      challenges_out.erase(c->hs.own_ephemeral());
      --pending_inbound;
    }
    const SessionKeys& keys = c->hs.session();
    std::shared_ptr<const FrameCipher> tx;  // both null when unsealed (benchmarks only)
    if (!keys.unsealed_for_benchmarks) {
      tx = std::make_shared<const FrameCipher>(keys.suite, keys.send, opt.aead_library);
      c->rx = std::make_shared<const FrameCipher>(keys.suite, keys.recv, opt.aead_library);
    }
    {
      std::lock_guard lk(mu);
      c->sh->tx = std::move(tx);
      c->sh->peer_key = c->hs.peer_key();
      c->sh->state = ConnShared::State::open;
      push_event({TransportEvent::Kind::authenticated, c->id, c->sh->inbound, c->sh->peer, "", c->sh->peer_key});
    }
    cv.notify_all();
  }

  void resume_reading(ConnId id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn* c = it->second;
    {
      std::lock_guard lk(mu);
      c->sh->resume_posted = false;
      if (c->sh->inbox_bytes > opt.max_inbox_bytes / 2) return;  // refilled meanwhile
      c->sh->read_paused = false;
    }
    if (c->closing || c->reading) return;
    c->last_read_ms = uv_now(&loop);  // the pause was ours, not the peer's
    int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
    if (rc != 0) return drop(c, str("cannot resume reading: ", uv_error(rc)));
    c->reading = true;
  }

  // --- writing ---------------------------------------------------------------

  void give_back(Conn* c, size_t bytes) {
    if (bytes == 0) return;
    {
      std::lock_guard lk(mu);
      c->sh->queued -= bytes;
    }
    cv.notify_all();
  }

  // A handshake frame goes out as it is (tag null); an application frame was
  // sealed by send(): its header (which counts the tag) and tag come along.
  void write_frame(Conn* c, Frame f, size_t accounted, const SealedFrame* sealed) {
    if (c->closing || c->shutting_down) return give_back(c, accounted);
    auto* w = new WriteReq;
    w->c = c;
    w->header = sealed ? sealed->header : encode_frame_header(f.type, f.payload.size());
    if (sealed) w->tag = sealed->tag;
    w->payload = std::move(f.payload);
    w->accounted = accounted;
    w->req.data = w;
    uv_buf_t bufs[3];
    unsigned n = 0;
    bufs[n++] = uv_buf_init(reinterpret_cast<char*>(w->header.data()), kFrameHeaderSize);
    if (!w->payload.empty())
      bufs[n++] = uv_buf_init(reinterpret_cast<char*>(w->payload.data()), static_cast<unsigned>(w->payload.size()));
    if (sealed) bufs[n++] = uv_buf_init(reinterpret_cast<char*>(w->tag.data()), kAeadTagBytes);
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), bufs, n, on_write);
    if (rc != 0) {
      delete w;
      give_back(c, accounted);
      return drop(c, str("write failed: ", uv_error(rc)));
    }
    if (c->writes_in_flight++ == 0) c->last_write_ms = uv_now(&loop);
  }

  static void on_write(uv_write_t* req, int status) {
    auto* w = static_cast<WriteReq*>(req->data);
    Conn* c = w->c;
    TransportLoop* t = c->t;
    --c->writes_in_flight;
    c->last_write_ms = uv_now(&t->loop);
    t->give_back(c, w->accounted);
    MessageBuffers::process().give(std::move(w->payload));  // sent: its pages serve a later message
    delete w;
    if (status < 0 && status != UV_ECANCELED) t->drop(c, str("write failed: ", uv_error(status)));
  }

  // --- the watchdog ----------------------------------------------------------

  static void on_tick(uv_timer_t* timer) {
    auto* c = static_cast<Conn*>(timer->data);
    TransportLoop* t = c->t;
    if (c->closing) return;
    uint64_t now = uv_now(&t->loop);
    if (!c->hs.done() && now - c->opened_ms > static_cast<uint64_t>(t->opt.handshake_timeout.count()))
      return t->drop(c, str("no completed handshake within ", ms(t->opt.handshake_timeout),
                            " ms (handshake_timeout)"));
    const uint64_t io = static_cast<uint64_t>(t->opt.io_timeout.count());
    if (c->reading && c->dec.mid_frame() && now - c->last_read_ms > io)
      return t->drop(c, str("peer stalled in the middle of a frame: no bytes for ",
                            ms(t->opt.io_timeout), " ms (io_timeout)"));
    // libuv reports no partial progress of a write; a shrinking write queue is progress too.
    size_t wq = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->tcp));
    if (wq != c->last_write_queue) {
      c->last_write_queue = wq;
      c->last_write_ms = now;
    }
    if ((c->writes_in_flight > 0 || c->shutting_down) && now - c->last_write_ms > io)
      return t->drop(c, str("peer accepted none of our queued data for ", ms(t->opt.io_timeout),
                            " ms (io_timeout)"));
  }

  // --- shutdown --------------------------------------------------------------

  void shutdown_loop() {
    for (Listener* l : listeners)
      uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp),
               [](uv_handle_t* h) { delete reinterpret_cast<Listener*>(h); });
    listeners.clear();
    std::vector<Conn*> all;
    for (auto& [id, c] : conns) all.push_back(c);
    for (Conn* c : all) drop(c, "this node's transport shut down");
    uv_close(reinterpret_cast<uv_handle_t*>(&wake), nullptr);
  }
};

Transport::Transport(TransportOptions options) : impl_(new TransportLoop) {
  TransportLoop* t = impl_.get();
  t->opt = std::move(options);
  if (t->opt.credentials.empty())
    fail("Transport needs credentials (TransportOptions::credentials: the run secret or a node key)");
  if (t->opt.handshake_timeout.count() <= 0 || t->opt.io_timeout.count() <= 0)
    fail("Transport timeouts must be positive (handshake_timeout ", ms(t->opt.handshake_timeout),
         " ms, io_timeout ", ms(t->opt.io_timeout), " ms)");
  if (t->opt.max_queued_bytes == 0 || t->opt.max_inbox_bytes == 0)
    fail("Transport byte budgets (max_queued_bytes, max_inbox_bytes) must be positive");
  // The watchdog ticks a few times per shortest timeout, so a timeout fires
  // within ~25% of its nominal time.
  auto shortest = std::min(t->opt.handshake_timeout, t->opt.io_timeout);
  t->tick_ms = std::clamp<uint64_t>(static_cast<uint64_t>(shortest.count()) / 4, 5, 1000);
  if (t->opt.frame_openers < -1)
    fail("TransportOptions::frame_openers must be -1 (from the hardware), 0 (open on the loop thread) or a "
         "thread count; got ", t->opt.frame_openers);
  t->openers = std::make_unique<FrameOpeners>(t->opt.frame_openers < 0 ? FrameOpeners::default_threads()
                                                                        : static_cast<size_t>(t->opt.frame_openers));
  int rc = uv_loop_init(&t->loop);
  if (rc != 0) fail("cannot start the network event loop: ", uv_error(rc));
  uv_async_init(&t->loop, &t->wake, TransportLoop::on_wake);
  t->wake.data = t;
  if (t->opt.unsealed_frames_for_benchmarks)
    t->log("BENCHMARK-ONLY MODE: unsealed_frames_for_benchmarks is set; frames after the handshake are neither "
           "encrypted nor authenticated (peers must be set alike)");
  t->thread = std::thread([t] {
    // A write to a socket the peer closed raises SIGPIPE in the writing
    // thread; blocked here, it becomes an EPIPE error for that connection
    // instead of killing the process.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    uv_run(&t->loop, UV_RUN_DEFAULT);
  });
}

Transport::~Transport() {
  TransportLoop* t = impl_.get();
  // The openers first, while the loop still runs: a job that finishes now
  // may still post a drop to it. Frames the loop hands over after this are
  // opened on the loop thread (FrameOpeners::run after stop()).
  t->openers->stop();
  {
    std::lock_guard lk(t->mu);
    t->commands.push_back([t] { t->shutdown_loop(); });
    t->stopped = true;
  }
  uv_async_send(&t->wake);
  t->thread.join();
  uv_loop_close(&t->loop);
}

uint16_t Transport::listen(const std::string& host, uint16_t port) {
  TransportLoop* t = impl_.get();
  sockaddr_storage addr = parse_address(host, port, "listen on");
  std::promise<uint16_t> result;
  auto fut = result.get_future();
  bool posted = t->post([t, addr, host, port, &result] {
    auto* l = new Listener;
    uv_tcp_init(&t->loop, &l->tcp);
    l->tcp.data = t;
    auto fail_with = [&](const char* what, int rc) {
      uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp),
               [](uv_handle_t* h) { delete reinterpret_cast<Listener*>(h); });
      result.set_exception(std::make_exception_ptr(
          Error(str("cannot listen on ", host, ":", port, ": ", what, " failed: ", uv_error(rc),
                    rc == UV_EADDRINUSE ? "; another process uses this port, pick another" : ""))));
    };
    int rc = uv_tcp_bind(&l->tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (rc != 0) return fail_with("bind", rc);
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), 128, TransportLoop::on_connection);
    if (rc != 0) return fail_with("listen", rc);
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&l->tcp, reinterpret_cast<sockaddr*>(&bound), &len);
    t->listeners.push_back(l);
    uint16_t p = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                             : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    result.set_value(p);
  });
  if (!posted) fail("cannot listen: the transport is shutting down");
  return fut.get();
}

ConnId Transport::connect(const std::string& host, uint16_t port, Deadline deadline) {
  TransportLoop* t = impl_.get();
  sockaddr_storage addr = parse_address(host, port, "connect to");
  auto sh = std::make_shared<ConnShared>();
  sh->peer = address_text(addr);
  ConnId id;
  {
    std::lock_guard lk(t->mu);
    id = t->next_id++;
    t->shared[id] = sh;
  }
  bool posted = t->post([t, id, sh, addr] {
    Conn* c = t->new_conn(id, AuthRole::initiator, sh);
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, reinterpret_cast<const sockaddr*>(&addr),
                            TransportLoop::on_connect);
    if (rc != 0) t->drop(c, str("TCP connect failed: ", uv_error(rc)));
  });
  if (!posted) fail("cannot connect to ", sh->peer, ": the transport is shutting down");
  std::unique_lock lk(t->mu);
  bool settled = t->cv.wait_until(lk, deadline, [&] { return sh->state != ConnShared::State::handshaking; });
  if (!settled) {
    lk.unlock();
    close(id, "connect deadline passed");
    fail("connecting to ", sh->peer, " did not complete (TCP + authentication) before the deadline; "
         "is the node up and reachable?");
  }
  if (sh->state == ConnShared::State::closed) {
    if (sh->auth_failed)
      throw AuthenticationFailed(str("cannot connect to ", sh->peer, ": ", sh->reason,
                                     t->opt.credentials.mode == AuthMode::shared_secret
                                         ? " (do both sides hold the same run secret?)"
                                         : " (is each side's key on the other's allowlist?)"));
    fail("cannot connect to ", sh->peer, ": ", sh->reason);
  }
  return id;
}

void Transport::send(ConnId conn, Frame frame, Deadline deadline) {
  TransportLoop* t = impl_.get();
  const FrameTypeInfo* info = frame_type_info(static_cast<uint16_t>(frame.type));
  if (!info || info->handshake)
    fail("cannot send a frame of type ", static_cast<unsigned>(frame.type), " (", frame_type_name(frame.type),
         "): only application types may be sent on an authenticated connection");
  const bool unsealed = t->opt.unsealed_frames_for_benchmarks;  // the handshake made sure the peer agrees
  // The header fails now if the frame is too large, before it takes a position.
  auto sealed = std::make_shared<SealedFrame>(unsealed ? SealedFrame{encode_frame_header(frame.type, frame.payload.size()), {}}
                                                       : sealed_frame_header(frame.type, frame.payload.size()));
  const size_t bytes = kFrameHeaderSize + frame.payload.size() + (unsealed ? 0 : kAeadTagBytes);
  std::shared_ptr<ConnShared> sh;
  {
    std::lock_guard lk(t->mu);
    sh = t->find_shared(conn);
  }
  if (!sh) fail("send on unknown connection id ", conn);
  // Held from taking a position to posting the write, so positions hit the
  // wire in order; bounded by the deadline like every other wait.
  std::unique_lock order(sh->send_mu, std::defer_lock);
  if (!order.try_lock_until(deadline))
    fail("sending to ", t->peer_of(conn), " timed out waiting for another thread's send on the same "
         "connection");
  std::unique_lock lk(t->mu);
  if (sh->state == ConnShared::State::handshaking)
    fail("send on connection ", conn, " to ", sh->peer, " before it authenticated");
  if (sh->close_requested && sh->state != ConnShared::State::closed)
    fail("cannot send to ", sh->peer, ": close() was already called on this connection");
  const size_t budget = t->opt.max_queued_bytes;
  bool ok = t->cv.wait_until(lk, deadline, [&] {
    return sh->state == ConnShared::State::closed || sh->queued == 0 || sh->queued + bytes <= budget;
  });
  if (sh->state == ConnShared::State::closed)
    fail("cannot send to ", sh->peer, ": the connection is closed (", sh->reason, ")");
  if (!ok)
    fail("sending ", bytes, " bytes to ", sh->peer, " timed out: ", sh->queued,
         " bytes are still queued (budget ", budget, "); the peer is not reading fast enough");
  sh->queued += bytes;
  std::shared_ptr<const FrameCipher> tx = sh->tx;
  lk.unlock();
  // Encrypt here, on the sender's thread, in place.
  if (tx) seal_frame(*tx, sh->tx_next++, frame.payload, *sealed);
  auto payload = std::make_shared<Frame>(std::move(frame));
  bool posted = t->post([t, conn, payload, bytes, sh, sealed = tx ? sealed : std::shared_ptr<SealedFrame>()] {
    auto it = t->conns.find(conn);
    if (it == t->conns.end()) {
      std::lock_guard g(t->mu);
      sh->queued -= bytes;
      return;
    }
    t->write_frame(it->second, std::move(*payload), bytes, sealed.get());
  });
  if (!posted) fail("cannot send to ", sh->peer, ": the transport is shutting down");
}

std::optional<Message> Transport::recv(ConnId conn, Deadline deadline) {
  TransportLoop* t = impl_.get();
  std::unique_lock lk(t->mu);
  std::shared_ptr<ConnShared> from;
  ConnId from_id = 0;
  auto pick = [&]() -> bool {
    if (conn != kAnyConn) {
      from = t->find_shared(conn);
      if (!from) fail("recv on unknown connection id ", conn);
      from_id = conn;
      // A closed connection's frames still being opened come first.
      return !from->inbox.empty() || (from->state == ConnShared::State::closed && from->opening.empty());
    }
    uint64_t best = UINT64_MAX;
    for (auto& [id, sh] : t->shared)
      if (!sh->inbox.empty() && sh->inbox.front().seq < best) {
        best = sh->inbox.front().seq;
        from = sh;
        from_id = id;
      }
    return from != nullptr;
  };
  if (!t->cv.wait_until(lk, deadline, pick)) return std::nullopt;
  if (from->inbox.empty())
    fail("connection ", conn, " to ", from->peer, " is closed: ", from->reason);
  Message m{from_id, std::move(from->inbox.front().frame)};
  from->inbox.pop_front();
  from->inbox_bytes -= m.frame.payload.size() + kFrameBookkeepingBytes;
  bool resume = from->read_paused && !from->resume_posted && from->inbox_bytes <= t->opt.max_inbox_bytes / 2;
  if (resume) from->resume_posted = true;
  lk.unlock();
  if (resume) t->post([t, from_id] { t->resume_reading(from_id); });
  return m;
}

std::optional<TransportEvent> Transport::next_event(Deadline deadline) {
  TransportLoop* t = impl_.get();
  std::unique_lock lk(t->mu);
  if (!t->cv.wait_until(lk, deadline, [&] { return !t->events.empty(); })) return std::nullopt;
  TransportEvent e = std::move(t->events.front());
  t->events.pop_front();
  return e;
}

void Transport::close(ConnId conn, const std::string& reason) {
  TransportLoop* t = impl_.get();
  {
    std::lock_guard lk(t->mu);
    if (auto sh = t->find_shared(conn)) sh->close_requested = true;
  }
  t->post([t, conn, reason] {
    auto it = t->conns.find(conn);
    if (it != t->conns.end()) t->close_gracefully(it->second, reason);
  });
}

bool Transport::is_open(ConnId conn) const {
  std::lock_guard lk(impl_->mu);
  auto sh = impl_->find_shared(conn);
  return sh && sh->state == ConnShared::State::open;
}

std::string Transport::close_reason(ConnId conn) const {
  std::lock_guard lk(impl_->mu);
  auto sh = impl_->find_shared(conn);
  if (!sh) return "unknown connection";
  return sh->state == ConnShared::State::closed ? sh->reason : "";
}

std::optional<PublicKey> Transport::peer_key(ConnId conn) const {
  std::lock_guard lk(impl_->mu);
  auto sh = impl_->find_shared(conn);
  return sh ? sh->peer_key : std::nullopt;
}

std::optional<CipherSuite> Transport::suite(ConnId conn) const {
  std::lock_guard lk(impl_->mu);
  auto sh = impl_->find_shared(conn);
  if (!sh || !sh->tx) return std::nullopt;
  return sh->tx->suite();
}

std::string Transport::peer(ConnId conn) const {
  std::lock_guard lk(impl_->mu);
  auto sh = impl_->find_shared(conn);
  return sh ? sh->peer : "";
}

std::pair<std::string, uint16_t> split_host_port(const std::string& s, const std::string& what) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    fail(what, ": expected host:port, got '", s, "'");
  const std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) fail(what, ": bad port in '", s, "'");
  return {host, static_cast<uint16_t>(p)};
}

}  // namespace intellect
