// bench_allreduce: N processes on loopback average S floats over the mesh's
// ring (coordinator in this process, nodes forked), with fp32 or int8, and
// report per round: wall time, bytes on the wire per node against the
// 2(N-1)/N·S·bytes lower bound, and achieved bandwidth. --rate-mbit paces
// each node's sending to play a WAN link's capacity.
//   bench_allreduce [--nodes 4] [--elems 16777216] [--rounds 3]
//                   [--compression none|int8|int4|int2|sparse|both] [--density 0.01] [--rate-mbit 0]
//                   [--delay-ms 0] [--rings 1] [--chunk 0] [--codec-threads 0] [--auth secret|keys]
//                   [--plaintext] [--openers -1] [--aead openssl|libsodium] [--all-reduce ring|direct]
// (--no-buffer-reuse: every message and every kept round a fresh
// allocation, as before message_buffers.h and round_buffers.h, for comparison;
// --no-round-buffer-reuse: kept rounds only.)
// (--all-reduce direct: dense rounds over the direct pattern,
// direct_allreduce.h, instead of the ring; the same bytes per node.)
// (--auth keys: every process gets a node key of its own, so ring messages
// are signed (ring_evidence.h); secret: the shared run secret, unsigned.)
// (--plaintext: BENCHMARK ONLY. Every process of this benchmark, coordinator
// included, sends its frames after the handshake neither encrypted nor
// authenticated (TransportOptions::unsealed_frames_for_benchmarks), so the
// cost of sealing is this build with and without it. The handshake still
// authenticates, and refuses any peer not set alike.)
// (--openers N: threads per process that open sealed frames
// (TransportOptions::frame_openers): -1 sized from the cores, 0 the loop
// thread opens every frame itself, the design before the opener pool.)
// (--aead: the library that seals and opens the nodes' frames
// (TransportOptions::aead_library): openssl, the default, or libsodium, the
// one before; the same AES-256-GCM or ChaCha20-Poly1305 on the wire.)
// (both = none and int8; sparse is the all-gather of top-k contributions at
// --density, whose bytes grow with N: its "lower bound" column is the ring's.)
#include <sodium.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sys/stat.h>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/coordinator.h"
#include "dist/frame_openers.h"
#include "dist/mesh_node.h"
#include "dist/message_buffers.h"
#include "dist/round_buffers.h"
#include "dist/ring_round.h"
#include "dist/sparse.h"
#include "util/error.h"
#include "util/file.h"
#include "util/rng.h"

namespace {

using namespace intellect;

int usage() {
  std::fprintf(stderr,
               "usage: bench_allreduce [--nodes N] [--elems S] [--rounds R] [--compression none|int8|int4|int2|sparse|both] "
               "[--density D] "
               "[--rate-mbit X] [--delay-ms D] [--rings K] [--chunk VALUES] [--codec-threads T] "
               "[--auth secret|keys] [--plaintext] [--openers N] [--aead openssl|libsodium] [--all-reduce ring|direct] "
               "[--no-buffer-reuse] [--no-round-buffer-reuse]\n");
  return 2;
}

struct BenchOptions {
  int nodes = 4, rounds = 3;
  size_t elems = size_t(1) << 24;
  std::string compression = "both";
  double density = 0.01;
  double rate_mbit = 0.0;
  int rings = 1;
  size_t chunk = 0;
  int delay_ms = 0;
  int codec_threads = 0;
  std::string auth = "secret";
  bool plaintext = false;
  int openers = -1;
  std::string aead = "openssl";
  std::string pattern = "ring";
};

// 0 when the command line is good; else the exit status (usage printed).
// The buffer-reuse switches act at once: the forked nodes inherit them.
int parse_options(int argc, char** argv, BenchOptions& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--plaintext") {
      o.plaintext = true;
      continue;
    }
    if (a == "--no-round-buffer-reuse") {
      RoundBuffers::process().set_enabled(false);  // kept rounds only; messages still recycled
      continue;
    }
    if (a == "--no-buffer-reuse") {
      MessageBuffers::process().set_max_bytes(0);
      RoundBuffers::process().set_enabled(false);
      continue;
    }
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--nodes") o.nodes = std::atoi(v.c_str());
    else if (a == "--elems") o.elems = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--rounds") o.rounds = std::atoi(v.c_str());
    else if (a == "--compression") o.compression = v;
    else if (a == "--density") o.density = std::atof(v.c_str());
    else if (a == "--rate-mbit") o.rate_mbit = std::atof(v.c_str());
    else if (a == "--rings") o.rings = std::atoi(v.c_str());
    else if (a == "--chunk") o.chunk = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--delay-ms") o.delay_ms = std::atoi(v.c_str());
    else if (a == "--codec-threads") o.codec_threads = std::atoi(v.c_str());
    else if (a == "--auth") o.auth = v;
    else if (a == "--openers") o.openers = std::atoi(v.c_str());
    else if (a == "--aead") o.aead = v;
    else if (a == "--all-reduce") o.pattern = v;
    else return usage();
  }
  if (o.nodes < 2 || o.rounds < 1 || o.elems < 1 || o.rings < 1 || o.rings > 16 || o.codec_threads < 0 ||
      o.openers < -1 || (o.auth != "secret" && o.auth != "keys") || (o.aead != "openssl" && o.aead != "libsodium") ||
      (o.pattern != "ring" && o.pattern != "direct"))
    return usage();
  return 0;
}

double cpu_seconds() {  // this process, all threads: user + system
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// One node (a forked process): joins, averages its seeded vector
// `o.rounds` times with `compression`, writes one JSON line per round to `out`.
int run_node(int rank, const std::string& coordinator, const PeerCredentials& credentials, const BenchOptions& b,
             const std::string& compression, const std::string& out) {
  MeshNodeOptions o;
  o.coordinator = coordinator;
  o.name = "bench-" + std::to_string(rank);
  o.credentials = credentials;
  o.compression = parse_compression(compression);
  o.sparse_k = sparse_k_for_density(b.density, default_codec_block(Compression::Sparse));
  o.emulate_link.rate_bytes_per_s = b.rate_mbit * 1e6 / 8;
  o.emulate_link.delay = std::chrono::milliseconds(b.delay_ms);
  o.emulate_link.seed = static_cast<uint64_t>(rank) + 1;
  o.rings = b.rings;
  o.direct = b.pattern == "direct";
  o.chunk_elems = b.chunk;
  o.codec_threads = b.codec_threads;
  o.unsealed_frames_for_benchmarks = b.plaintext;
  o.frame_openers = b.openers;
  o.aead_library = b.aead == "libsodium" ? AeadLibrary::libsodium : AeadLibrary::openssl;
  o.log = [](const std::string&) {};
  MeshNode node(o);
  const size_t elems = b.elems;
  std::vector<float> in(elems), avg(elems);
  for (size_t i = 0; i < elems; ++i) in[i] = static_cast<float>(1e-3 * normal01(rank + 1, i));
  std::ofstream f(out);
  for (int r = 1; r <= b.rounds; ++r) {
    const double cpu0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    SparseRound sparse;  // no residual: each round sends the same top-k
    const OuterRoundStats s =
        averaged_or_fail(node.average(r, "", in, avg, o.compression == Compression::Sparse ? &sparse : nullptr));
    const double whole = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = cpu_seconds() - cpu0;
    f << nlohmann::json{{"rank", rank}, {"round", r}, {"ring", s.ring_size}, {"seconds", s.seconds}, {"cpu", cpu},
                        {"sent", s.bytes_sent}, {"received", s.bytes_received}, {"retries", s.retries},
                        {"encode", s.encode_s}, {"decode", s.decode_s}, {"recv_wait", s.recv_wait_s}, {"send", s.send_s},
                        {"whole", whole}, {"commit", s.commit_s}, {"keep", s.keep_s},
                        {"buffers_reused", MessageBuffers::process().reused()},
                        {"buffers_held_mb", MessageBuffers::process().held_bytes() / 1e6},
                        {"round_buffers_reused", RoundBuffers::process().reused()}}
              .dump()
      << "\n";
  }
  return 0;
}

// The run's credentials: the shared secret (written under `dir`), or with
// --auth keys a node key per process (index 0 the coordinator's), all admitted.
class BenchCredentials {
 public:
  BenchCredentials(const BenchOptions& o, const std::string& dir) : keyed_(o.auth == "keys"), dir_(dir) {
    // As 64 hex digits: raw bytes ending in '\n' (1 run in 256) lost that
    // byte to the secret reader's line-ending trim (seen on the device).
    std::vector<uint8_t> key(32);
    randombytes_buf(key.data(), key.size());
    std::string hex(2 * key.size() + 1, '\0');
    sodium_bin2hex(hex.data(), hex.size(), key.data(), key.size());
    hex.back() = '\n';
    write_file_atomic(dir + "/secret", hex.data(), hex.size());
    ::chmod((dir + "/secret").c_str(), 0600);
    for (int r = 0; keyed_ && r <= o.nodes; ++r) {
      keys_.push_back(NodeKey::generate());
      admitted_.push_back(keys_.back().public_key());
    }
  }
  PeerCredentials of(int who) const {
    if (!keyed_) return PeerCredentials(load_run_secret(dir_ + "/secret"));
    const std::vector<PublicKey> admitted = admitted_;
    const PeerAdmission admit = [admitted](const PublicKey& pk) {
      return std::find(admitted.begin(), admitted.end(), pk) != admitted.end() ? std::string() : std::string("not ours");
    };
    return PeerCredentials::keyed(keys_[static_cast<size_t>(who)], admit);
  }

 private:
  bool keyed_;
  std::string dir_;
  std::vector<NodeKey> keys_;
  std::vector<PublicKey> admitted_;
};

void print_header(const BenchOptions& o) {
  std::printf("bench_allreduce: %d processes on loopback, %zu floats (%.1f MB fp32), %d rounds, %s pattern, %d ring(s), "
              "%d codec thread(s) per ring, link pacing %s, one-way delay %d ms, %s, %s, frame openers %s\n",
              o.nodes, o.elems, o.elems * 4 / 1e6, o.rounds, o.pattern.c_str(), o.rings,
              lane_codec_threads(o.codec_threads, o.rings),
              o.rate_mbit > 0 ? (std::to_string(o.rate_mbit) + " Mbit/s per node").c_str() : "none", o.delay_ms,
              o.auth == "keys" ? "node keys (signed ring messages)" : "shared secret (unsigned)",
              o.plaintext ? "frames UNSEALED (benchmark only)"
                          : str("frames sealed (", aes256gcm_available() ? "aes-256-gcm" : "chacha20-poly1305", ", ",
                                o.aead, ")").c_str(),
              o.openers < 0 ? (std::to_string(FrameOpeners::default_threads()) + " (from the cores)").c_str()
                            : o.openers == 0 ? "0 (the loop thread opens)" : std::to_string(o.openers).c_str());
  if (o.plaintext)
    std::printf("*** --plaintext: BENCHMARK-ONLY UNSEALED MODE. Frames after the handshake are NEITHER ENCRYPTED NOR "
                "AUTHENTICATED (unsealed_frames_for_benchmarks, set in every process of this benchmark; the "
                "handshake still authenticates). Never a mode of a run: it measures what sealing costs. ***\n");
}

// A coordinator on a thread of this process and o.nodes forked nodes, each
// writing its rounds to dir/<comp>-<rank>.jsonl. Fails when any node did.
void run_nodes(const BenchOptions& o, const BenchCredentials& creds, const std::string& comp, const std::string& dir) {
  CoordinatorOptions co;
  co.credentials = creds.of(0);
  co.unsealed_frames_for_benchmarks = o.plaintext;
  co.membership.min_ring = static_cast<size_t>(o.nodes);
  co.log = [](const std::string&) {};
  Coordinator coordinator(co);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator.run(stop); });
  std::vector<pid_t> pids;
  for (int r = 0; r < o.nodes; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      try {
        std::_Exit(run_node(r, "127.0.0.1:" + std::to_string(coordinator.port()), creds.of(r + 1), o, comp,
                            dir + "/" + comp + "-" + std::to_string(r) + ".jsonl"));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "node %d: %s\n", r, e.what());
        std::_Exit(1);
      }
    }
    pids.push_back(pid);
  }
  int failed = 0;
  for (pid_t p : pids) {
    int st = 0;
    ::waitpid(p, &st, 0);
    failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  stop = true;
  ct.join();
  if (failed) fail(failed, " node(s) failed with compression ", comp);
}

// One round across the nodes' JSON lines: the slowest node's times, the
// mean of the per-node figures.
struct RoundFigures {
  double worst = 0, fastest = 1e30, sent = 0, cpu = 0, encode = 0, decode = 0, wait = 0, send = 0;
  double whole = 0, commit = 0, keep = 0, reused = 0, held_mb = 0, rounds_reused = 0;
};
RoundFigures read_round(const BenchOptions& o, const std::string& comp, const std::string& dir, int round) {
  RoundFigures f;
  const int n = o.nodes;
  for (int r = 0; r < n; ++r) {
    std::ifstream in(dir + "/" + comp + "-" + std::to_string(r) + ".jsonl");
    for (std::string l; std::getline(in, l);) {
      const auto j = nlohmann::json::parse(l);
      if (j["round"] != round) continue;
      f.worst = std::max(f.worst, j["seconds"].get<double>());
      f.fastest = std::min(f.fastest, j["seconds"].get<double>());
      f.sent += j["sent"].get<double>() / n;
      f.cpu += j["cpu"].get<double>() / n;
      f.encode = std::max(f.encode, j["encode"].get<double>());
      f.decode = std::max(f.decode, j["decode"].get<double>());
      f.wait = std::max(f.wait, j["recv_wait"].get<double>());
      f.send = std::max(f.send, j["send"].get<double>());
      f.whole = std::max(f.whole, j["whole"].get<double>());
      f.commit = std::max(f.commit, j["commit"].get<double>());
      f.keep = std::max(f.keep, j["keep"].get<double>());
      f.reused += j["buffers_reused"].get<double>() / n;
      f.held_mb += j["buffers_held_mb"].get<double>() / n;
      f.rounds_reused += j.value("round_buffers_reused", 0.0) / n;
    }
  }
  return f;
}

void print_round(const BenchOptions& o, const std::string& comp, int round, const RoundFigures& f) {
  const double per_value = comp == "none"     ? 4.0
                           : comp == "int4"   ? 0.5
                           : comp == "int2"   ? 0.25
                           : comp == "sparse" ? 2.0 * o.density
                                              : 1.0;
  const int n = o.nodes;
  const double bound = comp == "sparse" ? (n - 1) * static_cast<double>(o.elems) * per_value
                                        : 2.0 * (n - 1) / n * static_cast<double>(o.elems) * per_value;
  // CPU seconds per wall second: how many cores a node kept busy (the
  // profile that tells a CPU-bound all-reduce from one that waits).
  std::printf("  %-4s round %d: %.3f s, %.1f MB sent per node (lower bound %.1f MB at %s, %.3f of it), "
              "%.1f MB/s per node, %.2f cores busy per node%s\n",
              comp.c_str(), round, f.worst, f.sent / 1e6, bound / 1e6, str(per_value, " B").c_str(), f.sent / bound,
              f.sent / f.worst / 1e6, f.cpu / f.worst,
              o.rate_mbit > 0 ? str(", ", 100.0 * f.sent * 8 / f.worst / (o.rate_mbit * 1e6), "% of the pacing cap").c_str()
                              : "");
  // The slowest lane's parts (codec seconds summed over its threads), and
  // at a paced link the round a perfect pipeline would take: a step's
  // transfer T_s = link time / 2(N - 1); when T_s >= the delay d the link
  // never waits and the delay is paid once, 2(N - 1) T_s + d; otherwise
  // every chunk's 2(N - 1) hops each wait d, 2(N - 1) d + T_s. The direct
  // pattern's chunks make two hops, and a node's uplink carries its
  // contributions, then its averages, without waiting for them: the link
  // time plus the last average's one delay, link + d.
  std::printf("        fastest node %.3f s; parts (max over nodes): encode %.3f s, decode+check %.3f s, "
              "receive wait %.3f s, send %.3f s",
              f.fastest, f.encode, f.decode, f.wait, f.send);
  if (o.rate_mbit > 0) {
    const double link_s = f.sent * 8 / (o.rate_mbit * 1e6), step_s = link_s / (2.0 * (n - 1));
    const double d = o.delay_ms / 1e3;
    const double ideal = o.pattern == "direct" ? link_s + d : step_s >= d ? link_s + d : 2.0 * (n - 1) * d + step_s;
    std::printf("; a perfect %s: %.3f s (%.1f%% of the cap)", o.pattern == "direct" ? "direct round" : "pipeline",
                ideal, 100.0 * link_s / ideal);
  }
  std::printf("\n");
  // The whole outer step's communication as a node's training thread waits
  // for it (MeshNode::average): the commitment before the ring, the ring,
  // the coordinator's verdict, the round kept for joiners.
  std::printf("        whole outer step (average call, slowest node): %.3f s, %.2f GB/s of fp32 per node; "
              "commitment %.3f s, round kept %.3f s; %.2f CPU-seconds per node (all its threads, "
              "the mean over nodes); message buffers reused so far %.0f, held %.0f MB; kept rounds' "
              "buffers reused %.0f (per node)\n",
              f.whole, 4.0 * static_cast<double>(o.elems) / f.whole / 1e9, f.commit, f.keep, f.cpu, f.reused,
              f.held_mb, f.rounds_reused);
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions o;
  if (const int rc = parse_options(argc, argv, o); rc != 0) return rc;
  try {
    if (sodium_init() < 0) fail("libsodium failed to initialise");
    const std::string dir = "/tmp/bench_allreduce." + std::to_string(::getpid());
    make_dirs(dir);
    const BenchCredentials creds(o, dir);
    print_header(o);
    for (const std::string& comp : o.compression == "both" ? std::vector<std::string>{"none", "int8"}
                                                           : std::vector<std::string>{o.compression}) {
      run_nodes(o, creds, comp, dir);
      for (int round = 1; round <= o.rounds; ++round) print_round(o, comp, round, read_round(o, comp, dir, round));
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_allreduce: error: %s\n", e.what());
    return 1;
  }
}
