// The coordinator: one event-driven loop that keeps the run's membership
// (joins, heartbeats, goodbyes, eviction of silent nodes), forms a ring for
// each outer step from the nodes that reported ready and announces it,
// re-forms it when a round fails, commits a round once every member still in
// the run completed it (members apply a round only then), and checks that
// every node ends the step with the same outer parameters. It carries no
// bulk data.
//
// Threads: run() is the loop thread and owns everything here but the
// RunStatus, which it fills (members, their reports, outer steps, joins,
// evictions) for the status server (`status_listen`), whose own thread
// copies it under its lock and renders the copy: no client can stall this
// loop.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "dist/control.h"
#include "dist/membership.h"
#include "dist/outer_steps.h"
#include "dist/ring_order.h"
#include "dist/transport.h"
#include "status/run_status.h"
#include "status/status_server.h"

namespace intellect {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:0";
  PeerCredentials credentials;  // the run secret (converts) or this node's key and the allowlist
  std::chrono::milliseconds heartbeat_interval{2000};
  MembershipOptions membership;   // heartbeat timeout, ready timeout
  int max_retries = 3;            // re-formed rounds per outer step
  // How long rings avoid a link a node reported it could not dial (then it
  // is tried again: partitions heal).
  std::chrono::milliseconds bad_link_ttl{30000};
  std::string state_file;         // persisted membership (empty: none)
  // How long no live node may hold the run's newest outer step before the
  // run goes back to the newest step one does hold (a holder that is only
  // slow to say so gets this long).
  std::chrono::milliseconds rewind_after{12000};
  // Order each ring by the link rates nodes measure (order_ring_by_rate in
  // ring_order.h); false: ascending ids, around failed links only.
  bool order_by_rate = true;
  // The run's dense rounds use the direct pattern (diloco.all_reduce
  // "direct", direct_allreduce.h): every member receives from every other,
  // so an accusation from any member against any other counts, as a ring
  // successor's against its predecessor does. (With node keys, evidence of
  // the direct pattern is judged whatever this says: it proves itself.)
  bool direct = false;
  // A node whose announced pseudo-gradient norm is above this many times the
  // median of the other ready nodes' norms is left out of that step's ring
  // (it takes the round from a donor, like a late node). 0: never.
  double norm_outlier_factor = 5.0;
  // The status page, /api/status and /metrics (status/status_server.h):
  // "PORT" (loopback) or "IPV4:PORT"; empty: off.
  std::string status_listen;
  std::string status_token_file;  // empty: no token
  std::string status_title = "intellect run";
  // BENCHMARKS ONLY (bench_allreduce --plaintext): frames after the
  // handshake unsealed (TransportOptions::unsealed_frames_for_benchmarks);
  // every node must be set alike.
  bool unsealed_frames_for_benchmarks = false;
  std::function<void(const std::string&)> log;
  std::function<void()> on_turn;  // tests: called at the start of every loop turn (to stall it)
};

class Coordinator {
 public:
  explicit Coordinator(CoordinatorOptions options);
  uint16_t port() const { return port_; }
  // Serves until `stop` is set.
  void run(const std::atomic<bool>& stop);
  // Outer steps whose hashes all agreed / disagreed (for tests and the log).
  // Atomic: other threads read them while run() counts.
  int64_t agreed_steps() const { return agreed_.load(); }
  int64_t disagreed_steps() const { return disagreed_.load(); }
  // "http://HOST:PORT/" of the status page; empty when it is off.
  std::string status_url() const;
  const RunStatus& status() const { return *status_; }

 private:
  void handle(ConnId conn, const control::Message& m, MembershipTime now);
  // One per kind of message (handle() dispatches; `already`: the connection
  // is bound to a node).
  void on_join(ConnId conn, bool already, const control::Join& j, MembershipTime now);
  void on_rejoin(ConnId conn, bool already, const control::Rejoin& rj, MembershipTime now);
  void on_heartbeat(ConnId conn, uint64_t id, const control::Heartbeat& h, MembershipTime now);
  void on_donor_request(ConnId conn, uint64_t id, const control::DonorRequest& dr);
  void on_ready(ConnId conn, uint64_t id, const control::Ready& r, MembershipTime now);
  void on_ring_failed(uint64_t id, const control::RingFailed& f, MembershipTime now);
  void on_round_done(ConnId conn, uint64_t id, const control::RoundDone& d);
  void on_outer_hash(uint64_t id, const control::OuterHash& o);
  control::Welcome welcome_for(const NodeRecord& n) const;
  void dispatch(const Message& m);
  void connection_closed(ConnId conn, const std::string& reason);
  void drop_node(uint64_t id, const std::string& why);
  // Node keys: the key a connection authenticated with binds the node id it
  // joins as. Empty string when it may take `id`, else why not.
  std::string bind_key(uint64_t id, ConnId conn);
  std::string who(uint64_t id) const;  // "node 3 (name, ed25519:...)" for the log
  // Evicts members whose key the allowlist no longer admits (its file changed
  // or SIGHUP): within one loop turn of the admission check seeing it.
  void evict_revoked_keys();
  // Nodes of `ring` whose announced norm is an outlier; says why in `why`.
  std::vector<uint64_t> norm_outliers(const Ring& ring, std::map<uint64_t, std::string>* why) const;
  // Refuses `id` for the rest of the run (its key too), telling it why.
  void ban(uint64_t id, const std::string& why);
  // A ring successor (`accuser`, rank `accuser_rank` of `ring`) says its
  // predecessor sent more than it announced. Node keys: the evidence is
  // judged (ring_evidence.h) and the accused or the accuser is refused;
  // without evidence nobody is, and rings avoid their link. Shared secret:
  // nothing can be proven, the accuser's word stands.
  void judge_accusation(uint64_t accuser, const control::RingFailed& f, const Ring& ring, size_t accuser_rank,
                        MembershipTime now);
  void announce(Ring ring);
  // Rewinds the run when every holder of its newest outer step is gone.
  void check_stranded(MembershipTime now);
  void reform_failed_rings(MembershipTime now);
  // Rounds every member still in the run completed (OuterSteps::take_committed):
  // their members are told to apply them.
  void commit_completed_rounds();
  LinkSet live_bad_links();
  LinkRates live_link_rates() const;  // the newest rate measured on each directed link between live members
  void send(ConnId conn, const control::Message& m);
  void persist();      // marks the state file stale; run() writes it once per turn
  void write_state();
  void log(const std::string& m);

  CoordinatorOptions opt_;
  Transport transport_;
  uint16_t port_ = 0;
  Membership members_;
  std::map<uint64_t, ConnId> conn_of_;   // node -> control connection
  std::map<ConnId, uint64_t> node_of_;
  std::map<uint64_t, PublicKey> key_of_;  // node -> its key (node-key mode; persisted)
  struct Announced {
    int64_t outer_step = -1;
    float norm = -1.0f;
    std::array<uint8_t, 32> commitment{};
  };
  std::map<uint64_t, Announced> announced_;  // node -> its newest Ready's announcement
  std::set<uint64_t> banned_ids_;            // refused for the rest of the run (persisted)
  // The settings every node must share: the first joiner's that gave any
  // (dist/run_settings.h; persisted). Empty until then.
  std::string run_settings_;
  double reference_norm_ = 0.0;              // the median norm of the newest announced ring
  std::set<std::pair<int64_t, uint64_t>> told_outlier_;  // (outer step, node) already left out and told
  std::set<PublicKey> banned_keys_;
  // A failed round is re-formed this long after its first report, when the
  // closed connections of the nodes that died with it have arrived.
  static constexpr std::chrono::milliseconds kReformDelay{200};
  OuterSteps steps_;  // outer steps with a ring: their phase, round and retries
  std::map<uint64_t, std::string> partition_position_;  // partition -> last reported data position
  std::map<std::pair<uint64_t, uint64_t>, MembershipTime> bad_links_;  // link -> until when it is avoided
  std::map<std::pair<uint64_t, uint64_t>, float> link_mbit_;  // (from, to) -> its newest measured rate
  uint64_t next_round_ = 1;
  std::atomic<int64_t> agreed_{0}, disagreed_{0};
  bool state_dirty_ = false;
  uint64_t rewinds_ = 0;
  std::optional<MembershipTime> stranded_since_;
  std::shared_ptr<RunStatus> status_;
  std::unique_ptr<StatusServer> status_server_;  // last: stops before what it reads goes
};

}  // namespace intellect
