// Live state streaming: chunk messages parse only when whole and consistent;
// a StateServer serves snapshots, rounds and progress; a download checks each
// chunk's BLAKE2b, continues with a second donor serving the same blob, and
// refuses to mix in a different one.
#include "dist/state_stream.h"

#include <cstring>
#include <thread>

#include "dist/round_buffers.h"
#include "dist/round_codec.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

RunSecret secret() { return RunSecret(std::vector<uint8_t>(32, 9), "test secret"); }

std::vector<uint8_t> bytes_of(const StateDownload& d) { return {d.bytes.begin(), d.bytes.end()}; }

StateFetchOptions pending_for(int ms) {
  StateFetchOptions o;
  o.pending_limit = std::chrono::milliseconds(ms);
  return o;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + seed);
  return v;
}

TEST(StateStream, ChunksRoundTripAndMalformedOnesAreRefused) {
  StateChunkHeader h;
  h.kind = StateKind::round;
  h.outer_step = 12;
  h.index = 3;
  const std::vector<uint8_t> bytes = pattern(100, 1);
  h.count = 100;
  h.digest = blake2b_256(bytes);
  const std::vector<uint8_t> msg = encode_state_chunk(h, bytes);
  std::span<const uint8_t> got;
  const StateChunkHeader back = parse_state_chunk(msg, got, "t");
  EXPECT_EQ(back.outer_step, 12);
  EXPECT_EQ(back.index, 3u);
  EXPECT_EQ(back.digest, h.digest);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin(), bytes.end()));
  for (size_t cut = 0; cut < msg.size(); cut += 7) {
    std::span<const uint8_t> b;
    EXPECT_THROW(parse_state_chunk(std::span<const uint8_t>(msg).first(cut), b, "t"), Error) << cut;
  }
  std::vector<uint8_t> bad = msg;
  bad[5] = 9;  // kind
  std::span<const uint8_t> b;
  EXPECT_THROW(parse_state_chunk(bad, b, "t"), Error);
}

TEST(StateStream, ServerServesSnapshotsRoundsAndProgressWhileTheyChange) {
  StateServer server(secret(), "127.0.0.1", [](const std::string&) {});
  const std::vector<uint8_t> snap = pattern(10'500, 2);
  server.publish_snapshot(make_state_blob(StateKind::snapshot, 4, snap, 1000));
  server.publish_round(make_state_blob(StateKind::round, 4, pattern(3000, 3), 1000));
  server.set_progress(42);

  StateDownload d;
  fetch_state(d, server.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.outer_step, 4);
  EXPECT_EQ(d.n_chunks, 11u);
  EXPECT_EQ(bytes_of(d), snap);
  EXPECT_EQ(d.bad_chunks, 0u);
  EXPECT_EQ(fetch_progress(server.address(), secret(), std::chrono::milliseconds(5000)), 42);

  StateDownload r;
  r.kind = StateKind::round;
  r.outer_step = 4;
  fetch_state(r, server.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(bytes_of(r), pattern(3000, 3));
  StateDownload missing;
  missing.kind = StateKind::round;
  missing.outer_step = 5;
  EXPECT_NE(test::error_of([&] { fetch_state(missing, server.address(), secret(), std::chrono::milliseconds(5000)); })
                .find("refused"),
            std::string::npos);
  // A wrong secret learns nothing.
  StateDownload stranger;
  EXPECT_THROW(fetch_state(stranger, server.address(), RunSecret(std::vector<uint8_t>(32, 1), "other"),
                           std::chrono::milliseconds(2000)),
               Error);
}

// Donors take snapshots only when a joiner asks: the first request is told
// to wait and raises the flag the trainer polls; a snapshot older than the
// newest round is refreshed the same way; an idle one is freed.
TEST(StateStream, SnapshotsAreTakenOnDemandAndFreedWhenIdle) {
  StateServer server(secret(), "127.0.0.1", [](const std::string&) {});
  EXPECT_FALSE(server.snapshot_wanted());
  StateDownload d;
  std::string error;
  std::thread joiner([&] {
    try {
      fetch_state(d, server.address(), secret(), std::chrono::milliseconds(5000));
    } catch (const Error& e) {
      error = e.what();
    }
  });
  for (int i = 0; i < 200 && !server.snapshot_wanted(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(server.snapshot_wanted()) << "a joiner's request must ask the trainer for a snapshot";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the joiner waits meanwhile
  EXPECT_FALSE(d.started);
  server.publish_snapshot(make_state_blob(StateKind::snapshot, 6, pattern(5000, 1), 1000));
  EXPECT_FALSE(server.snapshot_wanted());
  joiner.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(d.outer_step, 6);
  EXPECT_EQ(bytes_of(d), pattern(5000, 1));

  // A round newer than the snapshot: the next joiner gets a fresh one.
  server.publish_round(make_state_blob(StateKind::round, 7, pattern(100, 2), 1000));
  StateDownload late;
  EXPECT_NE(test::error_of([&] {
              fetch_state(late, server.address(), secret(), std::chrono::milliseconds(5000), pending_for(500));
            }).find("still preparing"),
            std::string::npos);
  EXPECT_TRUE(server.snapshot_wanted());
  // But a download already under way finishes the blob it started.
  StateDownload resumed;
  resumed.outer_step = 6;
  fetch_state(resumed, server.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(bytes_of(resumed), pattern(5000, 1));

  server.drop_idle_snapshot(std::chrono::milliseconds(60000));
  StateDownload again;
  again.outer_step = 6;
  fetch_state(again, server.address(), secret(), std::chrono::milliseconds(5000));  // still there
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  server.drop_idle_snapshot(std::chrono::milliseconds(10));
  StateDownload gone;
  gone.outer_step = 6;
  EXPECT_THROW(fetch_state(gone, server.address(), secret(), std::chrono::milliseconds(5000)), Error);
}

// The eighth session's join on the H200: a joiner fetched the snapshot of
// outer step 3 for 42 s over a 1 Gbit/s link while the run did 8 more rounds;
// the donors kept only their 2 newest, so round 4 was gone and the joiner
// never caught up. Rounds a joiner still needs are now kept while it is
// served (within pin_idle), up to a byte budget.
TEST(StateStream, RoundsAJoinerStillNeedsAreKeptWhileItFetches) {
  auto rounds = [](int64_t from, int64_t to) {
    std::vector<int64_t> v;
    for (int64_t k = from; k <= to; ++k) v.push_back(k);
    return v;
  };
  {  // nobody fetching: the newest 2
    StateServer server(secret(), "127.0.0.1", [](const std::string&) {});
    for (int64_t k = 1; k <= 6; ++k) server.publish_round(make_state_blob(StateKind::round, k, pattern(100, k), 1000));
    EXPECT_EQ(server.rounds_held(), rounds(5, 6));
  }
  StateServerOptions so;
  so.pin_idle = std::chrono::milliseconds(400);
  StateServer server(secret(), "127.0.0.1", [](const std::string&) {}, so);
  server.publish_snapshot(make_state_blob(StateKind::snapshot, 3, pattern(5000, 1), 1000));
  StateDownload d;
  d.outer_step = 3;
  fetch_state(d, server.address(), secret(), std::chrono::milliseconds(5000));
  for (int64_t k = 4; k <= 11; ++k) server.publish_round(make_state_blob(StateKind::round, k, pattern(100, k), 1000));
  EXPECT_EQ(server.rounds_held(), rounds(4, 11)) << "every round after the snapshot a joiner fetched";
  StateDownload r;
  r.kind = StateKind::round;
  r.outer_step = 4;
  fetch_state(r, server.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(bytes_of(r), pattern(100, 4));
  // Nobody served for pin_idle: back to the newest 2 at the next round.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  server.publish_round(make_state_blob(StateKind::round, 12, pattern(100, 12), 1000));
  EXPECT_EQ(server.rounds_held(), rounds(11, 12));

  StateServerOptions tight = so;
  tight.max_pinned_round_bytes = 350;  // three rounds of 100 bytes
  StateServer small(secret(), "127.0.0.1", [](const std::string&) {}, tight);
  small.publish_snapshot(make_state_blob(StateKind::snapshot, 3, pattern(5000, 1), 1000));
  for (int64_t k = 4; k <= 9; ++k) small.publish_round(make_state_blob(StateKind::round, k, pattern(100, k), 1000));
  EXPECT_EQ(small.rounds_held(), rounds(7, 9)) << "within max_pinned_round_bytes, the newest first";
}

TEST(StateStream, ADownloadContinuesWithASecondDonorOnlyForTheSameBlob) {
  const std::vector<uint8_t> snap = pattern(7'777, 4);
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {});
  StateServer b(secret(), "127.0.0.1", [](const std::string&) {});
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 9, snap, 1000));
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 9, snap, 1000));
  StateDownload d;
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(5000));
  // As if donor a had died after three chunks: b supplies the rest.
  for (uint32_t i = 3; i < d.n_chunks; ++i) d.drop_chunk(i);
  std::fill(d.bytes.begin() + 3000, d.bytes.end(), 0);
  fetch_state(d, b.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(bytes_of(d), snap);
  EXPECT_EQ(b.chunks_served(), 5u) << "only the chunks that were missing";
  // A donor that has moved on to another snapshot, or has none, cannot
  // continue this download: the error says so by its type, and the caller
  // (MeshNode::fetch_state) starts over with that donor's own snapshot.
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 10, pattern(7'777, 5), 1000));
  d.drop_chunk(3);
  EXPECT_THROW(fetch_state(d, b.address(), secret(), std::chrono::milliseconds(5000)), DonorHasOtherState);
  StateServer empty(secret(), "127.0.0.1", [](const std::string&) {});
  EXPECT_THROW(fetch_state(d, empty.address(), secret(), std::chrono::milliseconds(5000)), DonorHasOtherState);
  // A fresh request to it is answered "pending" and asks its trainer for one.
  StateDownload fresh;
  EXPECT_THROW(fetch_state(fresh, empty.address(), secret(), std::chrono::milliseconds(5000), pending_for(300)), Error);
  EXPECT_TRUE(empty.snapshot_wanted());
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// A blob's digest binds its size, chunk size and every chunk's bytes in
// order, whatever number of threads hashed the chunks.
TEST(StateStream, BlobDigestBindsEveryChunkAndTheSizes) {
  std::vector<uint8_t> bytes(10 * 1000 + 7);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 31 + 7);
  const std::vector<Digest> one = chunk_digests(bytes, 1000, 1), many = chunk_digests(bytes, 1000, 5);
  ASSERT_EQ(one.size(), 11u);
  EXPECT_EQ(one, many);
  EXPECT_EQ(one[10], blake2b_256(std::span<const uint8_t>(bytes).subspan(10000)));
  const Digest d = blob_digest(bytes.size(), 1000, one);
  EXPECT_EQ(d, make_state_blob(StateKind::round, 3, bytes, 1000)->digest);
  std::vector<Digest> swapped = one;
  std::swap(swapped[0], swapped[1]);
  EXPECT_NE(blob_digest(bytes.size(), 1000, swapped), d);
  EXPECT_NE(blob_digest(bytes.size() + 1, 1000, one), d);
  EXPECT_NE(blob_digest(bytes.size(), 2000, one), d);
  bytes[5000] ^= 1;
  EXPECT_NE(blob_digest(bytes.size(), 1000, chunk_digests(bytes, 1000, 3)), d);
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// Lanes: a download on several connections at once, each asking for its own
// ranges of chunks, assembles the donor's bytes exactly, and the donor sends
// each chunk once.
TEST(StateLanes, SeveralLanesGiveIdenticalBytes) {
  const std::vector<uint8_t> snap = pattern(200 * 997 + 13, 6);  // a short last chunk
  for (int lanes : {1, 3, 8}) {
    StateServerOptions so;
    // Paced, so that the streams overlap whatever the machine's load.
    so.emulate_link.rate_bytes_per_s = 400e3;
    StateServer server(secret(), "127.0.0.1", [](const std::string&) {}, so);
    server.publish_snapshot(make_state_blob(StateKind::snapshot, 3, snap, 997));
    StateDownload d;
    StateFetchOptions fo;
    fo.lanes = lanes;
    fetch_state(d, server.address(), secret(), std::chrono::milliseconds(10000), fo);
    EXPECT_TRUE(d.done()) << lanes;
    EXPECT_EQ(d.n_chunks, 201u);
    EXPECT_EQ(bytes_of(d), snap) << lanes << " lane(s)";
    EXPECT_EQ(server.chunks_served(), 201u) << "each chunk once, with " << lanes << " lane(s)";
    EXPECT_EQ(server.peak_streams() > 1, lanes > 1) << lanes << " lane(s), " << server.peak_streams() << " at once";
  }
}

// A lane whose connection breaks mid-range dials again; its range's rest is
// fetched (by it or another lane) and the bytes are the donor's.
TEST(StateLanes, ALaneThatDiesMidTransferIsRetried) {
  const std::vector<uint8_t> snap = pattern(64 * 1000, 7);
  for (int lanes : {1, 4}) {
    StateServerOptions so;
    so.test_drop_connection_at = 20;
    StateServer server(secret(), "127.0.0.1", [](const std::string&) {}, so);
    server.publish_snapshot(make_state_blob(StateKind::snapshot, 5, snap, 1000));
    StateDownload d;
    StateFetchOptions fo;
    fo.lanes = lanes;
    fetch_state(d, server.address(), secret(), std::chrono::milliseconds(10000), fo);
    EXPECT_EQ(bytes_of(d), snap) << lanes << " lane(s)";
    EXPECT_EQ(d.bad_chunks, 0u);
    EXPECT_GE(d.redials, 1u) << "the lane whose connection broke dialled again";
  }
}

// A donor that dies mid-transfer: the fetch fails with an error that says
// what happened, keeps every chunk it checked, and a second donor serving
// the same blob supplies only the rest.
TEST(StateLanes, ADonorThatDiesMidTransferFailsCleanlyAndAnotherFinishes) {
  const std::vector<uint8_t> snap = pattern(200 * 1000, 8);
  auto a = std::make_unique<StateServer>(secret(), "127.0.0.1", [](const std::string&) {}, [] {
    StateServerOptions so;
    so.emulate_link.rate_bytes_per_s = 100e3;  // two seconds for the whole
    return so;
  }());
  a->publish_snapshot(make_state_blob(StateKind::snapshot, 11, snap, 1000));
  StateDownload d;
  std::string error;
  std::thread joiner([&] {
    error = test::error_of([&] { fetch_state(d, a->address(), secret(), std::chrono::milliseconds(5000)); });
  });
  for (int i = 0; i < 500 && a->chunks_served() < 30; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  a.reset();  // the donor is gone: its connections close, its port refuses
  joiner.join();
  EXPECT_NE(error, "") << "a download from a dead donor cannot succeed";
  EXPECT_TRUE(error.find("closed") != std::string::npos || error.find("connect") != std::string::npos) << error;
  EXPECT_GT(d.chunks_have, 0u);
  EXPECT_LT(d.chunks_have, d.n_chunks);
  const uint32_t had = d.chunks_have;

  StateServer b(secret(), "127.0.0.1", [](const std::string&) {});
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 11, snap, 1000));
  fetch_state(d, b.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(bytes_of(d), snap);
  EXPECT_EQ(b.chunks_served(), d.n_chunks - had) << "only the chunks the first donor had not delivered";
}

// A chunk that does not match its BLAKE2b is refused and fetched again; past
// max_bad the donor is given up with an error that names the check.
TEST(StateLanes, ACorruptedChunkIsRefused) {
  const std::vector<uint8_t> snap = pattern(40 * 1000, 9);
  {
    StateServerOptions so;
    so.test_corrupt_chunk = 17;
    StateServer server(secret(), "127.0.0.1", [](const std::string&) {}, so);
    server.publish_snapshot(make_state_blob(StateKind::snapshot, 2, snap, 1000));
    StateDownload d;
    fetch_state(d, server.address(), secret(), std::chrono::milliseconds(5000));
    EXPECT_EQ(bytes_of(d), snap);
    EXPECT_EQ(d.bad_chunks, 1u);
  }
  {
    StateServerOptions so;
    so.test_corrupt_chunk = 17;
    StateServer server(secret(), "127.0.0.1", [](const std::string&) {}, so);
    server.publish_snapshot(make_state_blob(StateKind::snapshot, 2, snap, 1000));
    StateDownload d;
    StateFetchOptions fo;
    fo.max_bad = 0;
    const std::string error =
        test::error_of([&] { fetch_state(d, server.address(), secret(), std::chrono::milliseconds(5000), fo); });
    EXPECT_NE(error.find("BLAKE2b"), std::string::npos) << error;
    EXPECT_EQ(d.have.at(17), 0) << "the corrupted chunk is never taken";
    EXPECT_FALSE(d.done());
  }
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// Stripes: further donors send the chunks of the prefix every node holds
// alike; the rest comes from the joiner's own donor, whose digest decides.
std::vector<uint8_t> with_prefix(const std::vector<uint8_t>& prefix, size_t tail, uint8_t seed) {
  std::vector<uint8_t> v = prefix;
  const std::vector<uint8_t> t = pattern(tail, seed);
  v.insert(v.end(), t.begin(), t.end());
  return v;
}

StateServerOptions paced(double bytes_per_s) {
  StateServerOptions so;
  so.emulate_link.rate_bytes_per_s = bytes_per_s;
  return so;
}

StateFetchOptions striped(std::vector<std::string> further, uint64_t shared_bytes,
                          std::vector<std::string>* log = nullptr) {
  StateFetchOptions fo;
  fo.lanes = 2;
  fo.stripes.addresses = std::move(further);
  fo.stripes.shared_bytes = shared_bytes;
  fo.stripes.lanes = 2;
  fo.stripes.pending_limit = std::chrono::milliseconds(5000);
  static std::mutex mu;
  fo.log = [log](const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    if (log) log->push_back(m);
  };
  return fo;
}

bool logged(const std::vector<std::string>& log, const std::string& what) {
  for (const std::string& m : log)
    if (m.find(what) != std::string::npos) return true;
  return false;
}

TEST(StateStripes, FurtherDonorsSendSharedChunksAndTheBytesAreTheDonors) {
  const std::vector<uint8_t> prefix = pattern(120 * 1000, 1);
  // Other tails, of other lengths (the donors' own moments and headers).
  const std::vector<uint8_t> a_blob = with_prefix(prefix, 60 * 1000 + 7, 2), b_blob = with_prefix(prefix, 60 * 1000 + 9, 3),
                             c_blob = with_prefix(prefix, 61 * 1000, 4);
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {}, paced(200e3));
  StateServer b(secret(), "127.0.0.1", [](const std::string&) {}, paced(200e3));
  StateServer c(secret(), "127.0.0.1", [](const std::string&) {}, paced(200e3));
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 9, a_blob, 1000));
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 9, b_blob, 1000));
  c.publish_snapshot(make_state_blob(StateKind::snapshot, 9, c_blob, 1000));
  std::vector<std::string> log;
  StateDownload d;
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(10000),
              striped({b.address(), c.address()}, prefix.size(), &log));
  EXPECT_EQ(bytes_of(d), a_blob);
  EXPECT_GT(b.chunks_served(), 0u) << "a further donor sent part of the prefix";
  EXPECT_GT(c.chunks_served(), 0u);
  EXPECT_EQ(d.striped_chunks, b.chunks_served() + c.chunks_served());
  EXPECT_EQ(a.chunks_served() + d.striped_chunks, d.n_chunks) << "each chunk once";
  for (uint32_t i = 0; i < d.n_chunks; ++i)
    if (d.striped[i]) {
      EXPECT_LT(i, 120u) << "only shared chunks come from further donors";
    }
  EXPECT_FALSE(logged(log, "does not match")) << "nothing was fetched twice";
}

TEST(StateStripes, AFurtherDonorWithOtherBytesIsCaughtAndTheDonorsOwnAreFetched) {
  const std::vector<uint8_t> prefix = pattern(60 * 1000, 1);
  const std::vector<uint8_t> a_blob = with_prefix(prefix, 20 * 1000, 2);
  std::vector<uint8_t> b_blob = a_blob;
  b_blob[1500] ^= 1;  // chunk 1 differs: a faulty or dishonest further donor
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {}, paced(100e3));
  StateServer b(secret(), "127.0.0.1", [](const std::string&) {}, paced(100e3));
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 3, a_blob, 1000));
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 3, b_blob, 1000));
  std::vector<std::string> log;
  StateDownload d;
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(10000), striped({b.address()}, prefix.size(), &log));
  EXPECT_EQ(bytes_of(d), a_blob) << "the donor's digest decides";
  EXPECT_GT(b.chunks_served(), 0u);
  EXPECT_TRUE(logged(log, "does not match")) << "the mismatch is said";
  EXPECT_EQ(d.striped_chunks, 0u) << "every chunk a further donor sent was fetched again from the donor";
}

TEST(StateStripes, FurtherDonorsElsewhereAreLeftOutAndOneAtTheStepTakesASnapshot) {
  const std::vector<uint8_t> prefix = pattern(100 * 1000, 1);
  const std::vector<uint8_t> a_blob = with_prefix(prefix, 10 * 1000, 2);
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {}, paced(50e3));  // two seconds alone
  StateServer moved_on(secret(), "127.0.0.1", [](const std::string&) {}, paced(50e3));
  StateServer at_step(secret(), "127.0.0.1", [](const std::string&) {}, paced(50e3));
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 9, a_blob, 1000));
  moved_on.publish_round(make_state_blob(StateKind::round, 10, pattern(100, 5), 1000));
  moved_on.publish_snapshot(make_state_blob(StateKind::snapshot, 10, with_prefix(pattern(100 * 1000, 7), 5, 1), 1000));
  at_step.publish_round(make_state_blob(StateKind::round, 9, pattern(100, 5), 1000));  // at step 9, no snapshot yet
  std::atomic<bool> done{false};
  std::thread trainer([&] {  // at_step's trainer: takes a snapshot when asked
    while (!done && !at_step.snapshot_wanted()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!done) at_step.publish_snapshot(make_state_blob(StateKind::snapshot, 9, with_prefix(prefix, 3, 8), 1000));
  });
  std::vector<std::string> log;
  StateDownload d;
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(10000),
              striped({moved_on.address(), at_step.address()}, prefix.size(), &log));
  done = true;
  trainer.join();
  EXPECT_EQ(bytes_of(d), a_blob);
  EXPECT_EQ(moved_on.chunks_served(), 0u) << "a donor at another step sends nothing";
  EXPECT_TRUE(logged(log, "does not help")) << "and is said to be left out";
  EXPECT_GT(at_step.chunks_served(), 0u) << "a donor at the step took a snapshot and helped";
  EXPECT_EQ(d.striped_chunks, at_step.chunks_served());
}

// The joiner's downlink (emulated) caps the whole download whatever the
// donors' uplinks add up to.
TEST(StateStripes, TheJoinersDownlinkLimitsTheDownload) {
  const std::vector<uint8_t> prefix = pattern(150 * 1000, 1);
  const std::vector<uint8_t> blob = with_prefix(prefix, 50 * 1000, 2);
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {}, paced(1e6));
  StateServer b(secret(), "127.0.0.1", [](const std::string&) {}, paced(1e6));
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 2, blob, 1000));
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 2, blob, 1000));
  StateDownload d;
  StateFetchOptions fo = striped({b.address()}, prefix.size());
  fo.downlink = std::make_shared<LinkPacer>(200e3);  // 200 kB at 200 kB/s: a second at least
  const auto t0 = std::chrono::steady_clock::now();
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(10000), fo);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(bytes_of(d), blob);
  EXPECT_GT(b.chunks_served(), 0u);
  EXPECT_GE(s, 0.9) << "the downlink carries 200 kB/s";
}

// A buffer given back serves the next request of about its size (its
// memory, not a fresh allocation); one spare at most, the last given; a
// request under half a spare's capacity takes a fresh buffer; off, nothing
// is kept.
TEST(RoundBuffers, TheLastBufferGivenBackServesTheNextRoundOfItsSize) {
  RoundBuffers pool;
  ByteBuffer a = pool.take(1'000'000);
  EXPECT_EQ(a.size(), 1'000'000u);
  const uint8_t* mem = a.data();
  pool.give(std::move(a));
  EXPECT_GE(pool.held_bytes(), 1'000'000u);
  ByteBuffer small = pool.take(400'000);  // under half the spare: fresh
  EXPECT_NE(small.data(), mem);
  EXPECT_EQ(pool.reused(), 0u);
  ByteBuffer b = pool.take(999'000);
  EXPECT_EQ(b.data(), mem);
  EXPECT_EQ(b.size(), 999'000u);
  EXPECT_EQ(pool.reused(), 1u);
  EXPECT_EQ(pool.held_bytes(), 0u);
  ByteBuffer larger = pool.take(1'000'001);  // nothing spare: fresh
  pool.give(std::move(b));
  pool.give(std::move(small));  // the last given replaces the spare
  EXPECT_EQ(pool.held_bytes(), 400'000u);
  pool.set_enabled(false);
  EXPECT_EQ(pool.held_bytes(), 0u);
  pool.give(std::move(larger));
  EXPECT_EQ(pool.held_bytes(), 0u);
  EXPECT_NE(pool.take(1'000'000).data(), nullptr);
  EXPECT_EQ(pool.reused(), 1u);
}

// The path a node's kept rounds take: a round written into place
// (PlannedRound), kept by the state server, trimmed when newer ones come;
// the trimmed round's memory is where the next round is written, and what
// the server still serves is untouched.
TEST(RoundBuffers, ARoundTheServerTrimsIsWhereTheNextRoundIsWritten) {
  RoundBuffers& pool = RoundBuffers::process();
  pool.set_enabled(true);
  StateServer server(secret(), "127.0.0.1", [](const std::string&) {});
  const std::vector<PlannedRound::Piece> pieces = {{Compression::Int8, 300'000, 65536}};
  auto round = [&](uint8_t fill) {
    PlannedRound planned(300'000, pieces);
    std::memset(planned.payload(0), fill, planned.payload_bytes(0));
    return planned.finish();
  };
  ByteBuffer first = round(1);
  const uint8_t* first_mem = first.data();
  server.publish_round(make_state_blob(StateKind::round, 1, std::move(first), 1 << 16), 1);
  server.publish_round(make_state_blob(StateKind::round, 2, round(2), 1 << 16), 1);  // trims round 1
  const uint64_t reused = pool.reused();
  ByteBuffer third = round(3);
  EXPECT_EQ(third.data(), first_mem) << "round 3 is written where round 1 was";
  EXPECT_EQ(pool.reused(), reused + 1);
  const size_t third_bytes = third.size();
  server.publish_round(make_state_blob(StateKind::round, 3, std::move(third), 1 << 16), 1);
  // Round 3 is served as written (round 2's buffer is the spare now).
  StateDownload r;
  r.kind = StateKind::round;
  r.outer_step = 3;
  fetch_state(r, server.address(), secret(), std::chrono::milliseconds(5000));
  ASSERT_EQ(r.bytes.size(), third_bytes);
  EXPECT_EQ(r.bytes.back(), 3);
  EXPECT_EQ(server.rounds_held(), std::vector<int64_t>{3});
}

}  // namespace
}  // namespace intellect
