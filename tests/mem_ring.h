// In-memory ring links for the ring tests: one FIFO channel per ring edge,
// one thread per rank, with injectable faults.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/ring_allreduce.h"
#include "dist/sparse_allgather.h"
#include "util/error.h"

namespace intellect::memring {

class Channel {
 public:
  void send(std::span<const uint8_t> m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) fail("channel closed by the peer");
    q_.emplace_back(m.begin(), m.end());
    cv_.notify_all();
  }
  std::vector<uint8_t> recv(RingClock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return closed_ || !q_.empty(); })) fail("receive timed out");
    if (closed_) fail("channel closed by the peer");
    auto m = std::move(q_.front());
    q_.pop_front();
    return m;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> q_;
  bool closed_ = false;
};

// Rank r sends on channel r and receives on channel r − 1. Faults: after
// `die_after` sends the link fails and closes (a crashed peer); after
// `stall_after` sends it silently drops everything (a hung peer); `corrupt`
// rewrites each outgoing message (a tampering or broken peer).
struct MemLink : RingLink {
  Channel *out = nullptr, *in = nullptr;
  int die_after = -1, stall_after = -1;
  std::function<void(std::vector<uint8_t>&)> corrupt;
  std::atomic<uint64_t> bytes{0};
  std::atomic<int> sent{0};
  void send_to_next(std::span<const uint8_t> m, RingClock::time_point) override {
    const int k = sent++;
    // The ring aborts the link (closing both channels) when this throws.
    if (die_after >= 0 && k >= die_after) fail("link died (injected)");
    if (stall_after >= 0 && k >= stall_after) return;
    bytes += m.size();
    if (corrupt) {
      std::vector<uint8_t> c(m.begin(), m.end());
      corrupt(c);
      out->send(c);
      return;
    }
    out->send(m);
  }
  std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) override { return in->recv(deadline); }
  void abort() noexcept override {
    out->close();
    in->close();
  }
};

struct Ring {
  std::vector<std::unique_ptr<Channel>> ch;
  std::vector<std::unique_ptr<MemLink>> links;
  explicit Ring(int n) {
    for (int i = 0; i < n; ++i) ch.push_back(std::make_unique<Channel>());
    for (int i = 0; i < n; ++i) {
      links.push_back(std::make_unique<MemLink>());
      links[i]->out = ch[i].get();
      links[i]->in = ch[(i + n - 1) % n].get();
    }
  }
};

// Every pair of ranks linked both ways, for the direct pattern
// (direct_allreduce.h): link(i, j) sends on channel i→j and receives on
// channel j→i; aborting it closes both, as closing a connection would.
struct Mesh {
  std::vector<std::vector<std::unique_ptr<Channel>>> ch;    // [from][to]
  std::vector<std::vector<std::unique_ptr<MemLink>>> link;  // [rank][peer], null on the diagonal
  explicit Mesh(int n) : ch(n), link(n) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) ch[i].push_back(i == j ? nullptr : std::make_unique<Channel>());
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        link[i].push_back(nullptr);
        if (i == j) continue;
        link[i][j] = std::make_unique<MemLink>();
        link[i][j]->out = ch[i][j].get();
        link[i][j]->in = ch[j][i].get();
      }
  }
  std::vector<RingLink*> peers(int r) {
    std::vector<RingLink*> p;
    for (auto& l : link[r]) p.push_back(l.get());
    return p;
  }
};

// What each rank of one run_ring got: its output, the messages it carried,
// and what ended it ("" and null when it finished; the exception itself for
// tests that look into it).
struct RingRun {
  std::vector<std::vector<float>> out;
  std::vector<std::vector<RingCarried>> carried;
  std::vector<std::string> errors;
  std::vector<std::exception_ptr> failures;
  double seconds = 0;
};

// One thread per rank running body(rank, out, carried), which may throw
// Error: each rank's output, carried chunks and error, and the wall time.
template <class Body>
RingRun run_ranks(int n, size_t values, Body body) {
  RingRun res;
  res.out.assign(n, std::vector<float>(values, -7.0f));
  res.carried.assign(n, {});
  res.errors.assign(n, "");
  res.failures.assign(n, nullptr);
  const auto t0 = RingClock::now();
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        body(r, res.out[r], res.carried[r]);
      } catch (const Error& e) {
        res.errors[r] = e.what();
        res.failures[r] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  res.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
  return res;
}

// Every rank's ring_allreduce_average, a thread each, with base's options:
// rank and world set, then adjust(rank, options) for anything per rank
// (keys, audits, injected misbehaviour).
template <class Adjust>
RingRun run_ring(Ring& ring, const std::vector<std::vector<float>>& in, const RingOptions& base, Adjust adjust) {
  const int n = static_cast<int>(in.size());
  return run_ranks(n, in[0].size(), [&](int r, std::vector<float>& out, auto& carried) {
    RingOptions o = base;
    o.rank = r;
    o.world = n;
    adjust(r, o);
    ring_allreduce_average(*ring.links[r], o, in[r], out, &carried);
  });
}

inline RingRun run_ring(Ring& ring, const std::vector<std::vector<float>>& in, const RingOptions& base) {
  return run_ring(ring, in, base, [](int, RingOptions&) {});
}

// The same for the sparse all-gather (sparse_allgather_average, no
// residual): adjust(rank, options) sets keys, norms, misbehaviour.
template <class Adjust>
RingRun run_sparse_ring(Ring& ring, const std::vector<std::vector<float>>& in, const SparseRingOptions& base,
                        Adjust adjust) {
  const int n = static_cast<int>(in.size());
  return run_ranks(n, in[0].size(), [&](int r, std::vector<float>& out, auto& carried) {
    SparseRingOptions o = base;
    o.rank = r;
    o.world = n;
    adjust(r, o);
    sparse_allgather_average(*ring.links[r], o, in[r], {}, out, nullptr, &carried);
  });
}

// The accusation each rank raised, if any: the offender it named and the
// evidence it handed over (offender -1: none).
struct Accusations {
  std::vector<std::vector<std::vector<uint8_t>>> evidence;
  std::vector<int> offender;
};
inline Accusations accusations_of(const RingRun& run) {
  Accusations a;
  a.evidence.assign(run.failures.size(), {});
  a.offender.assign(run.failures.size(), -1);
  for (size_t r = 0; r < run.failures.size(); ++r) {
    if (!run.failures[r]) continue;
    try {
      std::rethrow_exception(run.failures[r]);
    } catch (const ContributionExceedsAnnouncement& e) {
      a.evidence[r] = e.evidence;
      a.offender[r] = e.offender_rank;
    } catch (...) {
    }
  }
  return a;
}

// A copy of every message each rank receives (received[r]), taken through
// the links' corrupt hooks; it must outlive the ring's use.
struct ReceivedLog {
  std::mutex mu;
  std::vector<std::vector<std::vector<uint8_t>>> received;
  explicit ReceivedLog(Ring& ring) : received(ring.links.size()) {
    const size_t n = ring.links.size();
    for (size_t r = 0; r < n; ++r) {
      const size_t next = (r + 1) % n;
      ring.links[r]->corrupt = [this, next](std::vector<uint8_t>& m) {
        std::lock_guard<std::mutex> lock(mu);
        received[next].push_back(m);
      };
    }
  }
};

}  // namespace intellect::memring
