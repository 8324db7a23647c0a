// bench_state_transfer: the run's state as a joiner receives it, alone and
// end to end, in one process on loopback. A donor's StateServer serves a
// snapshot of S bytes in the JoinState format (outer parameters, momentum,
// AdamW moments: 16 bytes a parameter) and a client fetches it over the
// mesh's authenticated, encrypted transport. Per phase it prints seconds and
// MB/s:
//   snapshot  the donor's copy into the wire format (encode_join_state)
//   hash      the donor's BLAKE2b of every chunk (make_state_blob)
//   transfer  request to the last verified byte (fetch_state), the joiner's view
//   decode    the joiner's parse into the four arrays (decode_join_state)
// and, with an emulated link (--rate-mbit, --delay-ms: the donor's uplink,
// as mesh.emulate_link_* sets it in a run), the transfer's fraction of the link.
//   bench_state_transfer [--mb 1024] [--chunk-mib 4] [--lanes 4] [--repeats 3]
//                        [--rate-mbit 0] [--delay-ms 0]
#include <sodium.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dist/state_stream.h"
#include "train/join_state.h"
#include "util/error.h"

namespace {

using namespace intellect;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double cpu_seconds() {  // this process, all threads: user + system
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_state_transfer [--mb MB] [--chunk-mib C] [--lanes L] [--repeats R] [--rate-mbit X] "
               "[--delay-ms D]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double mb = 1024;
  size_t chunk_mib = 4;
  int lanes = 4, repeats = 3;
  double rate_mbit = 0;
  int delay_ms = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--mb") mb = std::atof(v.c_str());
    else if (a == "--chunk-mib") chunk_mib = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--lanes") lanes = std::atoi(v.c_str());
    else if (a == "--repeats") repeats = std::atoi(v.c_str());
    else if (a == "--rate-mbit") rate_mbit = std::atof(v.c_str());
    else if (a == "--delay-ms") delay_ms = std::atoi(v.c_str());
    else return usage();
  }
  if (mb <= 0 || chunk_mib < 1 || chunk_mib > 32 || lanes < 1 || lanes > 64 || repeats < 1 || rate_mbit < 0 ||
      delay_ms < 0)
    return usage();
  try {
    if (sodium_init() < 0) fail("libsodium failed to initialise");
    std::vector<uint8_t> key(32);
    randombytes_buf(key.data(), key.size());
    const RunSecret secret(key, "bench secret");
    const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 16u);

    // The donor's state: four arrays of n floats, as a node holds them.
    const size_t n = static_cast<size_t>(mb * 1e6) / 16;
    JoinState js;
    js.outer_step = 7;
    js.step = 700;
    js.adam_step = 700;
    for (std::vector<float>* a : {&js.outer, &js.momentum, &js.exp_avg, &js.exp_avg_sq}) {
      a->resize(n);
      for (size_t i = 0; i < n; ++i) (*a)[i] = static_cast<float>((i * 2654435761u) % 1000003) * 1e-6f;
    }
    const JoinStateView view{js.outer_step, js.step, js.adam_step, js.outer, js.momentum, js.exp_avg, js.exp_avg_sq};

    StateServerOptions so;
    so.emulate_link.rate_bytes_per_s = rate_mbit * 1e6 / 8;
    so.emulate_link.delay = std::chrono::milliseconds(delay_ms);
    StateServer server(secret, "127.0.0.1", [](const std::string& m) { std::fprintf(stderr, "[donor] %s\n", m.c_str()); },
                       so);
    std::printf("bench_state_transfer: %.1f MB of state (%zu parameters), %zu MiB chunks, %d lane(s), %u hardware "
                "threads, link %s, loopback, encrypted (%s)\n",
                16.0 * n / 1e6, n, chunk_mib, lanes, std::thread::hardware_concurrency(),
                so.emulate_link.on() ? so.emulate_link.describe().c_str() : "not emulated",
                aes256gcm_available() ? "aes-256-gcm" : "chacha20-poly1305");
    for (int r = 1; r <= repeats; ++r) {
      auto t = Clock::now();
      ByteBuffer bytes = encode_join_state(view, threads);
      const double snapshot_s = since(t);
      const double total = static_cast<double>(bytes.size());
      t = Clock::now();
      std::shared_ptr<const StateBlob> blob =
          make_state_blob(StateKind::snapshot, js.outer_step, std::move(bytes), chunk_mib << 20);
      const double hash_s = since(t);
      server.publish_snapshot(blob);

      StateDownload d;
      t = Clock::now();
      const double cpu0 = cpu_seconds();
      StateFetchOptions fo;
      fo.lanes = lanes;
      fetch_state(d, server.address(), secret, std::chrono::milliseconds(60000), fo);
      const double transfer_s = since(t), transfer_cpu = cpu_seconds() - cpu0;
      t = Clock::now();
      const JoinState got = decode_join_state(d.bytes, n, threads);
      const double decode_s = since(t);
      if (d.digest != blob->digest || d.bytes.size() != blob->bytes.size() ||
          std::memcmp(d.bytes.data(), blob->bytes.data(), d.bytes.size()) != 0 || got.exp_avg_sq != js.exp_avg_sq)
        fail("the joiner's bytes differ from the donor's");
      const double mbps = total / transfer_s / 1e6;
      std::printf("run %d: snapshot %.3f s (%.0f MB/s), hash %.3f s (%.0f MB/s), transfer %.3f s (%.0f MB/s",
                  r, snapshot_s, total / snapshot_s / 1e6, hash_s, total / hash_s / 1e6, transfer_s, mbps);
      if (so.emulate_link.rate_bytes_per_s > 0)
        std::printf(", %.1f%% of the link", 100.0 * total / transfer_s / so.emulate_link.rate_bytes_per_s);
      std::printf(", both ends' CPU %.2f s a GB), decode %.3f s (%.0f MB/s); joiner's total %.3f s, %llu chunk(s) "
                  "fetched again\n",
                  transfer_cpu / (total / 1e9), decode_s, total / decode_s / 1e6, transfer_s + decode_s,
                  static_cast<unsigned long long>(d.bad_chunks));
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_state_transfer: %s\n", e.what());
    return 1;
  }
}
