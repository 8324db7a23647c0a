// bench_sparse_signing: what signed sparse chunks (sparse_evidence.h) cost
// per chunk on one core, at the chunk sizes a sparse all-gather sends: the
// author's signing of its own chunk (a BLAKE2b pass over the payload and
// two Ed25519 signatures, as author and as sender), and a receiver's work
// on every arriving chunk (a BLAKE2b pass, the author's signature verified,
// and, when it forwards the chunk, its own signature as sender), next to
// the decode the receiver does anyway (the chunk's sum of squares for the
// norm check). Then the receiver's cost as a fraction of the time the
// chunk takes on a link of --mbit Mbit/s, and for one round of a model of
// --params values over N nodes.
//
//   bench_sparse_signing [--density D ...] [--chunk-blocks B ...] [--repeat R] [--params P] [--nodes N] [--mbit M]
//     --density       kept fraction per 4096-value block (default 0.03 and 0.01)
//     --chunk-blocks  4096-value blocks per chunk (default 64, a shared-secret ring's; the node-key
//                     ring's, default_sparse_chunk_blocks; and 1024)
//     --repeat        chunks per measurement (default 200); the best of 3 is shown
//     --params        values of the model (default 277000000: configs/150m.json)
//     --nodes         ring size for the per-round figure (default 4)
//     --mbit          link rate (default 1000)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dist/sparse.h"
#include "dist/sparse_allgather.h"
#include "dist/sparse_evidence.h"
#include "bench_timing.h"
#include "util/error.h"
#include "util/rng.h"

namespace {

using namespace intellect;

using bench::best_us;

struct Args {
  std::vector<double> densities;
  std::vector<size_t> chunk_blocks;
  int repeat = 200;
  double params = 277e6;
  int nodes = 4;
  double mbit = 1000;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--density") a.densities.push_back(std::strtod(v.c_str(), nullptr));
    else if (k == "--chunk-blocks") a.chunk_blocks.push_back(std::strtoull(v.c_str(), nullptr, 10));
    else if (k == "--repeat") a.repeat = std::atoi(v.c_str());
    else if (k == "--params") a.params = std::strtod(v.c_str(), nullptr);
    else if (k == "--nodes") a.nodes = std::atoi(v.c_str());
    else if (k == "--mbit") a.mbit = std::strtod(v.c_str(), nullptr);
    else fail("unknown option ", k);
  }
  if ((argc - 1) % 2) fail("every option takes a value");
  if (a.densities.empty()) a.densities = {0.03, 0.01};
  // Empty: per density, 64, the node-key default and 1024 (in main).
  if (a.repeat < 1 || a.nodes < 2 || !(a.mbit > 0) || !(a.params > 0)) fail("bad option values");
  return a;
}

// One signed chunk of `blocks` full blocks at `k` kept per block, as the
// ring sends it; `x` of blocks · 4096 values.
std::vector<uint8_t> signed_chunk(const std::vector<float>& x, size_t k, const NodeKey& author) {
  SparseHeader h;
  h.round = 7;
  h.total_elems = x.size() * 8;
  h.world = 4;
  h.step = 0;
  h.source = 2;
  h.chunk = 3;
  h.count = static_cast<uint32_t>(x.size());
  h.block = 4096;
  h.k = static_cast<uint32_t>(k);
  h.lane = 1;
  h.is_signed = true;
  std::vector<uint8_t> msg = encode_sparse_header(h);
  msg.resize(kSparseHeaderBytes + sparse_encoded_bytes(x.size(), 4096, k) + kSparseSignedBytes);
  sparse_encode(x.data(), nullptr, x.size(), 4096, k, msg.data() + kSparseHeaderBytes, "bench");
  sign_sparse_message(msg, author);
  return msg;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    const NodeKey author = NodeKey::generate(), forwarder = NodeKey::generate();
    const double link_bytes_per_us = a.mbit / 8.0;  // Mbit/s = bits/us
    std::printf("bench_sparse_signing: one core, best of 3 x %d chunks; link %.0f Mbit/s; a round: %.0fM values, "
                "%d nodes\n", a.repeat, a.mbit, a.params / 1e6, a.nodes);
    for (double d : a.densities) {
      const size_t k = sparse_k_for_density(d, 4096);
      std::vector<size_t> chunk_blocks = a.chunk_blocks;
      if (chunk_blocks.empty()) chunk_blocks = {64, default_sparse_chunk_blocks(4096, k, true), 1024};
      for (size_t blocks : chunk_blocks) {
        const size_t values = blocks * 4096;
        std::vector<float> x(values);
        for (size_t i = 0; i < values; ++i) x[i] = static_cast<float>(1e-3 * normal01(3, i));
        std::vector<uint8_t> msg = signed_chunk(x, k, author);
        const size_t payload = msg.size() - kSparseHeaderBytes - kSparseSignedBytes;
        const double author_us = best_us(a.repeat, [&] { sign_sparse_message(msg, author); });
        bool ok = true;
        SparseDigest digest{};
        // What a receiver does per chunk: hash, verify the author, sign on as sender.
        const double verify_us = best_us(a.repeat, [&] {
          digest = sparse_payload_digest(msg);
          ok &= sparse_message_signed_by(msg, author.public_key(), digest);
        });
        const double forward_us = best_us(a.repeat, [&] { sign_sparse_forward(msg, forwarder, digest); });
        if (!ok || !sparse_message_sent_by(msg, forwarder.public_key(), digest)) fail("a signature did not verify");
        double ss = 0;
        const double decode_us = best_us(a.repeat, [&] {
          sparse_for_each(msg.data() + kSparseHeaderBytes, values, 4096, k, [&](size_t, float v) { ss += double(v) * v; });
        });
        const double receive_us = verify_us + forward_us;
        const double link_us = msg.size() / link_bytes_per_us;
        std::printf("  density %.3f (k %zu), chunk %zu blocks (%zu values, %zu payload bytes, %zu on the wire):\n"
                    "    author signs %.1f us; receiver verifies %.1f us (%.0f MB/s) and signs on %.1f us: %.1f us a "
                    "chunk, %.0f MB/s, %.1f%% of the chunk's %.1f us on the link (its norm-check decode: %.1f us)\n",
                    d, k, blocks, values, payload, msg.size(), author_us, verify_us, msg.size() / verify_us,
                    forward_us, receive_us, msg.size() / receive_us, 100.0 * receive_us / link_us, link_us, decode_us);
        // A round: each node authors S/values chunks and receives (N − 1)
        // contributions, forwarding all but the last.
        const double chunks = std::ceil(a.params / values), n = a.nodes;
        const double round_link_s = (n - 1) * chunks * msg.size() / link_bytes_per_us / 1e6;
        const double author_s = chunks * author_us / 1e6;
        const double recv_s = (n - 1) * chunks * verify_us / 1e6 + (n - 2) * chunks * forward_us / 1e6;
        std::printf("    a round (%.0f chunks a contribution): on the link %.2f s; author signs %.3f s (%.1f%%; "
                    "each chunk as it is queued, the first before anything goes); receiver %.3f s on one core "
                    "(%.1f%% of the link time; spread over the lanes' receiving threads, alongside the link)\n",
                    chunks, round_link_s, author_s, 100.0 * author_s / round_link_s, recv_s,
                    100.0 * recv_s / round_link_s);
        if (ss < 0) std::printf("%f", ss);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sparse_signing: %s\n", e.what());
    return 1;
  }
  return 0;
}
