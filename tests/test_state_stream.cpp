// Live state streaming: chunk messages parse only when whole and consistent;
// a StateServer serves snapshots, rounds and progress; a download checks each
// chunk's BLAKE2b, continues with a second donor serving the same blob, and
// refuses to mix in a different one.
#include "dist/state_stream.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

RunSecret secret() { return RunSecret(std::vector<uint8_t>(32, 9), "test secret"); }

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
  EXPECT_EQ(d.bytes, snap);
  EXPECT_EQ(d.bad_chunks, 0u);
  EXPECT_EQ(fetch_progress(server.address(), secret(), std::chrono::milliseconds(5000)), 42);

  StateDownload r;
  r.kind = StateKind::round;
  r.outer_step = 4;
  fetch_state(r, server.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(r.bytes, pattern(3000, 3));
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

TEST(StateStream, ADownloadContinuesWithASecondDonorOnlyForTheSameBlob) {
  const std::vector<uint8_t> snap = pattern(7'777, 4);
  StateServer a(secret(), "127.0.0.1", [](const std::string&) {});
  StateServer b(secret(), "127.0.0.1", [](const std::string&) {});
  a.publish_snapshot(make_state_blob(StateKind::snapshot, 9, snap, 1000));
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 9, snap, 1000));
  StateDownload d;
  fetch_state(d, a.address(), secret(), std::chrono::milliseconds(5000));
  // As if donor a had died after three chunks: b supplies the rest.
  d.next_chunk = 3;
  std::fill(d.bytes.begin() + 3000, d.bytes.end(), 0);
  fetch_state(d, b.address(), secret(), std::chrono::milliseconds(5000));
  EXPECT_EQ(d.bytes, snap);
  EXPECT_EQ(b.chunks_served(), 5u) << "only the chunks that were missing";
  // A donor that has moved on to another snapshot is refused mid-download.
  b.publish_snapshot(make_state_blob(StateKind::snapshot, 10, pattern(7'777, 5), 1000));
  d.next_chunk = 3;
  EXPECT_THROW(fetch_state(d, b.address(), secret(), std::chrono::milliseconds(5000)), Error);
}

}  // namespace
}  // namespace intellect
