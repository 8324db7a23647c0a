// A node's connection to the coordinator: it joins the run, keeps a
// heartbeat going on a thread of its own, reconnects (Rejoin) to a restarted
// coordinator and re-sends the request a caller is waiting on, and reads the
// control messages the coordinator sends, noting rewinds of the run and the
// node's eviction on the way. It carries no bulk data and knows nothing of
// rings or state: MeshNode's parts ask it for what they need.
//
// Threads. The heartbeat thread owns the connection's recovery: it beats
// (with held_step and status) and, when the connection is lost (its beat
// fails, or a caller tells it so), reconnects: it dials and rejoins holding
// no lock, and swaps the new connection in under link_mu_, re-sending the
// requests callers await. The caller of the reading calls (next, poll,
// drain, send, Awaiting): one thread at a time (MeshNode's round calls); it
// never reconnects itself: a request is queued (pending_, under link_mu_,
// held only for the push) and sent again by the reconnection, and a caller
// that needs the connection waits for the new one on link_cv_, with its own
// deadline, giving up at once on cancel or eviction. set_held_step,
// set_status, rewinds, evicted, leave: any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "dist/control.h"
#include "dist/mesh_outcomes.h"
#include "dist/transport.h"

namespace intellect {

struct CoordinatorClientOptions {
  std::string coordinator;  // "host:port"
  std::string name;
  std::string address;        // where peers dial this node, "host:port"
  std::string state_address;  // where its StateServer listens ("" when none)
  std::string settings;       // the run-wide settings, compared at the join (dist/run_settings.h; "": not compared)
  std::chrono::milliseconds join_timeout{30000};
  std::chrono::milliseconds reconnect_timeout{300000};  // a restarted coordinator gets this long to come back
  std::chrono::milliseconds message_timeout{60000};
  std::function<void(const std::string&)> log;
};

class CoordinatorClient {
 public:
  // Dials the coordinator (it may be restarting: until join_timeout), joins
  // and starts the heartbeat. `transport` and `cancel` outlive this object;
  // `held_step` is what the node holds at the join (-1: nothing).
  CoordinatorClient(Transport& transport, CoordinatorClientOptions options, const std::atomic<bool>& cancel,
                    int64_t held_step);
  ~CoordinatorClient();  // says goodbye (if not yet) and stops the heartbeat
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  const control::Welcome& welcome() const { return welcome_; }
  uint64_t id() const { return welcome_.node_id; }

  // The next control message; or, instead, the outer step the run went back
  // to (a Rewound message, or a rewind the heartbeat thread learned of on a
  // reconnect): reported once, never lost. Throws EvictedFromRun,
  // StoppedOnRequest (cancel), or Error when nothing arrives before
  // `deadline`. On a lost connection, waits (until `deadline`) for the one
  // the heartbeat thread reconnects.
  std::variant<control::Message, RewoundTo> next(Deadline deadline);
  // A message that has already arrived, without waiting (nullopt: none, or
  // the coordinator is away, which the heartbeat thread deals with).
  // Rewound messages are noted (drain or next report them) and returned
  // like any other.
  std::optional<control::Message> poll();
  // Reads whatever has arrived: the outer step the run went back to, if it
  // did (now or earlier, not yet reported).
  std::optional<RewoundTo> drain();

  // Sends; on a lost connection, waits for the heartbeat thread's new one
  // (until reconnect_timeout; cancel ends the wait) and sends again.
  void send(const control::Message& m);
  // A request the caller waits on an answer to: sent now, and again after a
  // reconnect, until the Awaiting object goes. With the connection lost it
  // is only queued (never waiting for the reconnection): the reconnection
  // sends it. They nest: after a reconnect
  // every live one is sent again, oldest first (a Ready, then the RoundDone
  // of a round completed in answer to it).
  class Awaiting {
   public:
    Awaiting(CoordinatorClient& c, const control::Message& request);
    ~Awaiting();
    Awaiting(const Awaiting&) = delete;
    Awaiting& operator=(const Awaiting&) = delete;

   private:
    CoordinatorClient& c_;
  };

  void leave(const std::string& reason);
  bool evicted() const { return evicted_.load(); }
  void set_held_step(int64_t outer_step) { held_step_ = outer_step; }
  int64_t held_step() const { return held_step_.load(); }
  void set_status(const control::NodeStatus& s) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_ = s;
  }
  uint64_t rewinds() const { return rewinds_.load(); }
  // Connection-level sends (ring hellos go through the same transport).
  void send_on(ConnId conn, const control::Message& m);

 private:
  void heartbeat_loop();
  // The heartbeat thread's: a new connection to a restarted coordinator, in
  // place of `stale`; fails if it does not come back within
  // reconnect_timeout, or when cancelled, or if it no longer knows this
  // node (EvictedFromRun). Re-sends the awaited requests.
  void reconnect(ConnId stale);
  // One rejoin attempt on a fresh connection `c`: true once the coordinator
  // took this node back; throws EvictedFromRun when it refused it.
  void rejoin(ConnId c);
  // A caller found `stale` lost: wakes the heartbeat thread and waits for
  // the connection that replaces it (returned), until `deadline`, cancel
  // (StoppedOnRequest) or eviction (EvictedFromRun).
  ConnId await_new_link(ConnId stale, Deadline deadline);
  // A caller found the connection lost: the heartbeat thread reconnects
  // now instead of at its next beat.
  void want_reconnect();
  // The heartbeat thread's pause: its period, or less when a caller wants a
  // reconnection or the client stops.
  void pause(std::chrono::milliseconds d);
  // A Rewound message, or a Welcome after a reconnect that counts more
  // rewinds than this node has seen (it missed the message).
  void note_rewind(int64_t outer_step, uint64_t rewinds);
  bool note_if_rewound(const control::Message& m);  // true: it was a Rewound
  // A pending rewind to s - 1 that a ring of s announced after it answers.
  void note_ring_after_rewind(const control::RingAnnounce& ring);
  void log(const std::string& m) const;

  Transport& transport_;
  CoordinatorClientOptions opt_;
  const std::atomic<bool>& cancel_;
  std::atomic<ConnId> coord_{0};  // written by the heartbeat thread (and the constructor) under link_mu_
  // Short holds only, never across a dial, a sleep or a network wait:
  // pending_, reconnect_wanted_, last_link_error_, and the swap of coord_.
  std::mutex link_mu_;
  std::condition_variable link_cv_;  // coord_ replaced, a reconnection wanted, eviction, stop
  std::vector<control::Message> pending_;  // what callers await answers to, oldest first
  bool reconnect_wanted_ = false;  // a caller saw the connection lost before the heartbeat did
  std::string last_link_error_;    // why the last reconnection failed ("" when none did), for callers' errors
  std::atomic<bool> beating_{false};  // the heartbeat thread runs (after the join): it reconnects
  control::Welcome welcome_;
  std::atomic<bool> stop_{false}, left_{false};
  std::atomic<bool> evicted_{false};  // the heartbeat thread learned the coordinator dropped this node
  std::atomic<int64_t> held_step_{-1};
  std::mutex status_mu_;
  std::optional<control::NodeStatus> status_;  // under status_mu_
  std::atomic<uint64_t> rewinds_{0};
  std::mutex rewind_mu_;
  std::optional<int64_t> rewound_to_;  // a rewind not yet reported to the caller (under rewind_mu_)
  std::optional<RewoundTo> take_rewind();
  std::thread heartbeat_;
};

// The mesh's log line: to `log`, or to stderr when there is none.
void mesh_log(const std::function<void(const std::string&)>& log, const std::string& m);

}  // namespace intellect
