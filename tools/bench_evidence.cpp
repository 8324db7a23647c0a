// bench_evidence: what signed ring messages (ring_evidence.h) cost per
// message on one core, next to the int8 encoding of the same chunk that the
// ring does anyway: signing (a BLAKE2b-256 pass over the message and an
// Ed25519 signature of the digest), checking a signature (only an accuser
// does), and judging one message as the coordinator does. Then what a node
// pays before each ring to announce: the norm with the 16-part commitment
// of the fp32 bytes (sparse rounds) against the norm plus the commitment to
// the encoded chunks (commitment.h, dense rounds), over --values values.
//
//   bench_evidence [--chunk VALUES] [--block B] [--repeat R] [--values N] [--threads T]
//     --chunk   values per ring message (default 262144, the int8 ring's chunk)
//     --block   int8 values per table (default 65536)
//     --repeat  messages per measurement (default 200); the best of 3 is shown
//     --values  the announced vector (default 16777216)
//     --threads the announcement's threads (default 1)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dist/codec.h"
#include "dist/commitment.h"
#include "dist/contribution_check.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_evidence.h"
#include "bench_timing.h"
#include "util/error.h"
#include "util/rng.h"

namespace {

using namespace intellect;

using bench::best_us;

}  // namespace

int main(int argc, char** argv) {
  size_t chunk = size_t{1} << 18, block = size_t{1} << 16;
  int repeat = 200;
  size_t values = size_t{1} << 24;
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--chunk") chunk = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--block") block = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--repeat") repeat = std::atoi(v.c_str());
    else if (a == "--values") values = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--threads") threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "usage: bench_evidence [--chunk VALUES] [--block B] [--repeat R] [--values N] [--threads T]\n");
      return 2;
    }
  }
  if (chunk == 0 || block == 0 || repeat < 1) return 2;
  try {
    const NodeKey key = NodeKey::generate();
    std::vector<float> x(chunk);
    for (size_t i = 0; i < chunk; ++i) x[i] = static_cast<float>(1e-3 * normal01(3, i));
    std::printf("bench_evidence: one core, %zu values per message, best of 3 x %d messages\n", chunk, repeat);
    for (Compression c : {Compression::Int8, Compression::None}) {
      const std::unique_ptr<BlockCodec> codec = make_block_codec(c, c == Compression::None ? 0 : block, 1);
      RingHeader h;
      h.compression = c;
      h.round = 1;
      h.total_elems = chunk * 4;
      h.world = 4;
      h.count = static_cast<uint32_t>(chunk);
      h.int8_block = codec->block();
      h.is_signed = true;
      std::vector<uint8_t> msg = encode_ring_header(h);
      msg.resize(kRingHeaderBytes + codec->encoded_bytes(chunk) + kRingSignatureBytes);
      const double encode = best_us(repeat, [&] { codec->encode(x.data(), chunk, msg.data() + kRingHeaderBytes, "x"); });
      const double sign = best_us(repeat, [&] { sign_ring_message(msg, key); });
      // An audited first hop: the payload is a committed leaf, its digest known.
      const Digest leaf = leaf_digest({msg.data() + kRingHeaderBytes, codec->encoded_bytes(chunk)});
      const double sign_leaf = best_us(repeat, [&] { sign_ring_message(msg, key, &leaf); });
      bool ok = true;
      const double verify = best_us(repeat, [&] { ok &= ring_message_signed_by(msg, key.public_key()); });
      if (!ok) fail("a signature did not verify");
      EvidenceContext ctx;
      ctx.round = 1;
      ctx.world = 4;
      ctx.accuser_rank = 1;
      ctx.norms.assign(4, 1.0);
      const double judge = best_us(std::max(1, repeat / 10), [&] { ok &= !judge_ring_evidence({msg}, key.public_key(), ctx).holds; });
      const double mb = msg.size() / 1e6;
      std::printf("  %-4s message %.3f MB: encode %.1f us (%.2f GB/s of fp32); sign %.1f us (%.2f GB/s of message, "
                  "%.1f%% of the encode); sign with the committed leaf's digest %.1f us; verify %.1f us; judge %.1f us\n",
                  compression_name(c), mb, encode, chunk * 4 / encode / 1e3, sign, msg.size() / sign / 1e3,
                  100.0 * sign / encode, sign_leaf, verify, judge);
    }
    std::vector<float> big(values);
    for (size_t i = 0; i < values; ++i) big[i] = static_cast<float>(1e-3 * normal01(5, i));
    const double fp32_hash = best_us(1, [&] { (void)announce_contribution(big, threads); });
    const double norm_only = best_us(1, [&] { (void)announce_contribution(big, threads, {}, false); });
    CommitLayout l;
    l.compression = Compression::Int8;
    l.block = block;
    l.chunk = chunk;
    const double leaves = best_us(1, [&] { (void)commit_leaves(big, l, threads); });
    // What a dense node runs (MeshNode::ready_for): the commitment with the
    // norm summed in the same pass.
    double ss = 0.0;
    const double dense = best_us(1, [&] { (void)commit_leaves(big, l, threads, &ss); });
    std::printf("  announcing %zu values (%.0f MB fp32) on %d thread(s): norm + 16-part fp32 commitment %.1f ms; "
                "norm alone %.1f ms; int8 chunk commitment (encode + hash) %.1f ms; a dense announcement (the "
                "commitment with the norm in its pass) %.1f ms (%.2fx the fp32 one; the two passes apart: %.1f ms)\n",
                values, values * 4 / 1e6, threads, fp32_hash / 1e3, norm_only / 1e3, leaves / 1e3, dense / 1e3,
                dense / fp32_hash, (norm_only + leaves) / 1e3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_evidence: %s\n", e.what());
    return 1;
  }
  return 0;
}
