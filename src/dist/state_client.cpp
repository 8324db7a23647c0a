#include "dist/state_client.h"

#include <algorithm>

#include "dist/mesh_outcomes.h"
#include "dist/round_buffers.h"
#include "dist/round_codec.h"
#include "util/error.h"

namespace intellect {

StateClient::StateClient(CoordinatorClient& coordinator, const std::atomic<bool>& cancel, StateClientOptions options)
    : coordinator_(coordinator),
      cancel_(cancel),
      opt_(std::move(options)),
      donor_id_(coordinator.welcome().donor_id),
      donor_address_(coordinator.welcome().donor_address),
      further_(coordinator.welcome().stripe_donors) {
  if (opt_.emulate_downlink_bytes_per_s > 0) downlink_ = std::make_shared<LinkPacer>(opt_.emulate_downlink_bytes_per_s);
}

std::variant<StateDownload, RewoundTo> StateClient::fetch(StateKind kind, int64_t outer_step,
                                                          std::chrono::milliseconds give_up, uint64_t shared_bytes) {
  StateDownload d;
  d.kind = kind;
  d.outer_step = outer_step;
  const Deadline deadline = deadline_in(give_up);
  std::string last_error = "no donor was assigned";
  for (;;) {
    if (coordinator_.evicted())
      throw EvictedFromRun("the coordinator no longer counts this node (evicted while it fetched the state)");
    if (opt_.stop && opt_.stop->load())
      throw StoppedOnRequest(str("stopped on request while fetching the ", state_kind_name(kind)));
    if (cancel_.load()) throw StoppedOnRequest("the node stops: gave up fetching state from a donor");
    if (donor_id_ != 0) {
      try {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - MeshClock::now());
        StateFetchOptions fo = fetch_options();
        fo.pending_limit = std::max(left, std::chrono::milliseconds(1));
        if (shared_bytes > 0) {
          fo.stripes.shared_bytes = shared_bytes;
          for (const control::Welcome::Donor& f : further_)
            if (f.id != donor_id_ && fo.stripes.addresses.size() < static_cast<size_t>(std::max(0, opt_.stripe_donors)))
              fo.stripes.addresses.push_back(f.address);
          fo.stripes.lanes = std::max(1, opt_.lanes / 2);
        }
        const auto t0 = MeshClock::now();
        fetch_state(d, donor_address_, opt_.credentials, opt_.state_timeout, fo);
        log(str("fetched the ", state_kind_name(kind), " of outer step ", d.outer_step, " (", d.total_bytes,
                " bytes) in ", std::chrono::duration<double>(MeshClock::now() - t0).count(), " s (",
                d.prepare_wait_s, " s of it waiting for the donor to prepare it) from node ",
                donor_id_, fo.stripes.addresses.empty()
                               ? std::string()
                               : str(" and ", fo.stripes.addresses.size(), " further donor(s), which sent ",
                                     d.striped_chunks, " of its ", d.n_chunks, " chunks")));
        return d;
      } catch (const Error& e) {
        last_error = e.what();
        log(str("fetching the ", state_kind_name(kind), " from node ", donor_id_, " failed with ", d.chunks_have,
                " of ", d.n_chunks, " chunks received: ", e.what()));
        if (dynamic_cast<const DonorHasOtherState*>(&e)) {
          // Not what this download started from (or nothing yet): the next
          // donor's own, from its first chunk.
          d = StateDownload{};
          d.kind = kind;
          d.outer_step = outer_step;
        }
        // Not at once: a donor that lacks a round may have it in a moment,
        // and each try costs it and the coordinator a dial.
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
    }
    if (MeshClock::now() > deadline)
      fail("could not fetch the ", state_kind_name(kind), " (outer step ", outer_step, "): ", last_error);
    if (std::optional<RewoundTo> back = switch_donor(deadline)) return *back;
    if (donor_id_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// The coordinator may name the same donor again: then it is tried again.
std::optional<RewoundTo> StateClient::switch_donor(Deadline deadline) {
  CoordinatorClient::Awaiting asking(coordinator_, control::DonorRequest{coordinator_.id(), donor_id_});
  for (;;) {
    std::variant<control::Message, RewoundTo> heard = coordinator_.next(deadline);
    if (const auto* back = std::get_if<RewoundTo>(&heard)) return *back;
    if (const auto* a = std::get_if<control::DonorAssign>(&std::get<control::Message>(heard))) {
      donor_id_ = a->donor_id;
      donor_address_ = a->donor_address;
      return std::nullopt;
    }
  }
}

StateFetchOptions StateClient::fetch_options() const {
  StateFetchOptions fo;
  fo.lanes = opt_.lanes;
  fo.stop = opt_.stop;
  fo.downlink = downlink_;
  fo.log = opt_.log;
  return fo;
}

std::optional<StateDownload> StateClient::fetch_round_once(int64_t outer_step) {
  if (donor_id_ == 0) return std::nullopt;
  StateDownload d;
  d.kind = StateKind::round;
  d.outer_step = outer_step;
  try {
    fetch_state(d, donor_address_, opt_.credentials, opt_.state_timeout, fetch_options());
    return d;
  } catch (const AuthenticationFailed&) {
    throw;  // another run's donor, or one that does not admit this node: asking again will not help
  } catch (const DonorHasOtherState&) {
    return std::nullopt;  // not completed there yet, or already dropped
  } catch (const Error& e) {
    // Logged once per distinct failure: the caller asks again in a loop.
    const std::string why = str("round ", outer_step, " from donor ", donor_id_, " failed: ", e.what());
    if (why != last_fetch_error_) log(why);
    last_fetch_error_ = why;
    return std::nullopt;
  }
}

std::optional<int64_t> StateClient::donor_progress() {
  if (donor_id_ == 0) return std::nullopt;
  try {
    return fetch_progress(donor_address_, opt_.credentials, opt_.state_timeout);
  } catch (const AuthenticationFailed&) {
    throw;
  } catch (const Error& e) {
    log(str("progress from donor ", donor_id_, " not known: ", e.what()));
    return std::nullopt;
  }
}

StateDonor::StateDonor(const PeerCredentials& credentials, const std::string& host, bool rounds_applied_late,
                       std::chrono::milliseconds state_timeout, std::function<void(const std::string&)> log,
                       StateServerOptions server_options)
    : server_(std::make_unique<StateServer>(credentials, host, log, std::move(server_options))),
      rounds_applied_late_(rounds_applied_late),
      state_timeout_(state_timeout),
      log_(std::move(log)) {
  if (rounds_applied_late_) server_->set_snapshot_lag(1);
}

StateDonor::~StateDonor() {
  if (snapshot_worker_.joinable()) snapshot_worker_.join();
}

void StateDonor::publish_snapshot(int64_t outer_step, ByteBuffer bytes) {
  if (snapshot_worker_.joinable()) snapshot_worker_.join();  // the previous one (done: it was no longer busy)
  snapshot_busy_ = true;
  snapshot_worker_ = std::thread([this, outer_step, b = std::move(bytes)]() mutable {
    try {
      const auto t0 = std::chrono::steady_clock::now();
      server_->publish_snapshot(make_state_blob(StateKind::snapshot, outer_step, std::move(b), server_->chunk_bytes()));
      mesh_log(log_, str("snapshot of outer step ", outer_step, " hashed and served from ",
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s on"));
    } catch (const std::exception& e) {  // out of memory, say: joiners ask again, the trainer offers another
      mesh_log(log_, str("could not publish the snapshot of outer step ", outer_step, ": ", e.what()));
    }
    snapshot_busy_ = false;
  });
}

void StateDonor::keep_round(int64_t outer_step, ByteBuffer bytes) {
  // A round kept but never published (a retried or abandoned outer step):
  // its pages serve the next round.
  RoundBuffers::process().give(std::move(last_round_));
  last_round_ = std::move(bytes);
  last_round_step_ = outer_step;
}

void StateDonor::publish_round(int64_t outer_step, std::span<const float> averaged) {
  // The ring's own bytes when this node took part (or fetched the round);
  // fp32 only when it has nothing else (a ring of one).
  ByteBuffer bytes = last_round_step_ == outer_step ? std::move(last_round_) : encode_round_fp32(averaged);
  RoundBuffers::process().give(std::move(last_round_));  // a stale one's pages serve the next round
  last_round_step_ = -1;
  // A node that applies rounds one round late keeps one more for joiners.
  server_->publish_round(make_state_blob(StateKind::round, outer_step, std::move(bytes), server_->chunk_bytes()),
                         rounds_applied_late_ ? 3 : 2);
}

}  // namespace intellect
