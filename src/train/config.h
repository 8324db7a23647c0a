// The run's configuration: a JSON file (configs/*.json) plus `--set
// dotted.key=value` overrides. Every field is validated with an error naming
// the file and the field; unknown keys are errors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/memory_plan.h"

namespace intellect {

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | wsd-sqrt | wsd-linear
  int64_t warmup_steps = 0;
  int64_t decay_steps = 0;      // wsd: length of the final decay phase
  double min_lr_ratio = 0.0;    // cosine floor, and where wsd decays to
};

struct OptimConfig {
  double lr = 3e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_norms_and_embeddings = false;  // weight decay on 1-D gains and the embedding too
  double grad_clip = 1.0;                   // 0 = off
  ScheduleConfig schedule;
};

struct TrainConfig {
  std::string device = "cpu";  // cpu | cuda
  uint64_t seed = 1;
  int64_t steps = 100;          // inner optimizer steps
  int64_t stop_after_steps = 0; // end this invocation after N steps (a resumable pause); 0 = run to the end
  int64_t batch_size = 8;       // sequences per optimizer step
  int64_t micro_batch_size = 8; // sequences per forward/backward
  int64_t seq_len = 128;
  double z_loss_weight = 0.0;
  int64_t threads = 0;          // CPU threads, 0 = all cores
  int64_t log_every = 1;
  int64_t eval_every = 0;       // 0 = only at the end (when data.val is set)
  int64_t eval_batches = 4;
  // What each block keeps for backward (model/memory_plan.h): "auto" (the
  // least recomputation that fits the GPU's memory, printed at start), "none",
  // "ops" (recompute norms and SwiGLU), "all" (full), or a list of blocks to
  // recompute fully.
  RecomputeSpec recompute;
  double memory_limit_gib = 0;  // plan "auto" as if the GPU had this much (0 = all of it)
  std::string attention = "auto";  // CUDA attention: auto | cudnn | fallback
  // Attention masked per packed document (a token sees only earlier tokens of its own
  // document, from the batch's cu_seqlens); the config's default is on when model.bos_id
  // is set. Off: causal over the whole row, as before.
  bool doc_masking = false;
  // GPUs of this node, sharded FSDP-style over NCCL (0 = every visible GPU).
  // Each step's micro-batches are dealt out to the GPUs, so the global batch
  // and the loss curve are those of one GPU.
  int64_t gpus = 1;
  std::string out_dir = "runs/default";
  std::string metrics_file = "";  // default: <out_dir>/metrics.jsonl
  // This node's own status page and /metrics: "PORT" (loopback) or
  // "IPV4:PORT"; empty: off. For a run without a coordinator (with one,
  // mesh.status_listen on the coordinator shows the whole run).
  std::string metrics_listen = "";
  std::string metrics_token_file = "";  // a bearer token for it (empty: none)
};

// CUDA backend precision. Parameters and activations are bf16 with fp32
// accumulation; these choose what the optimizer keeps.
struct PrecisionConfig {
  bool master_weights = true;             // fp32 master copy; off = bf16 weights, stochastic rounding
  std::string optim_state_dtype = "fp32"; // fp32 | bf16 (AdamW m and v)
  std::string grad_reduce_dtype = "fp32"; // FSDP gradient reduce-scatter: fp32 | bf16 (half the bytes)
  // The flat gradient buffer on one GPU: fp32 | bf16 | auto (bf16 when a step
  // is one micro-batch, so each gradient is one fp32-accumulated GEMM result
  // rounded once; fp32 when micro-batches accumulate).
  std::string grad_dtype = "auto";
  // The blocks' linear layers: bf16 products, or fp8 (the forward and
  // input-gradient GEMMs in FP8 with per-tensor scales, E4M3 forward and E5M2
  // gradients; the weight gradients, attention and the classifier stay bf16).
  // CUDA on Hopper only.
  std::string matmul = "bf16";
  // With matmul "fp8": the weight-gradient GEMMs in FP8 too (E5M2 output
  // gradient × E4M3 input, both cast transposed), as torchao's tensorwise
  // recipe does; off, they stay bf16 products.
  bool fp8_weight_gradients = false;
  // With matmul "fp8": the classifier's products in FP8 too (its chunks'
  // logits and input gradient; the weight gradient as fp8_weight_gradients
  // says), the head's weight cast once a step; the softmax, cross-entropy and
  // z-loss stay fp32 on bf16 logits. Needs model.vocab_size a multiple of 16.
  bool fp8_classifier = false;
};

// One dataset of a mixture. In the config either a string (the path; one
// dataset named after the split, weight 1) or a list of
// {"name", "path", "weight"} objects.
struct DataSource {
  std::string name;
  std::string path;     // shard file, directory or glob
  double weight = 1.0;  // relative: the loader divides by the sum
};

struct DataConfig {
  std::vector<DataSource> train;
  std::vector<DataSource> val;  // empty: no validation
  std::string tokenizer = "byte";
  uint64_t seed = 1;            // mixture draws; default train.seed
  // This node's place in the run (the mesh will set them): node_rank of
  // node_count. The data is cut into `partitions` disjoint parts (default
  // node_count) and this node reads part `partition` (default node_rank);
  // more partitions than nodes leave fresh parts for nodes that join later.
  int64_t node_rank = 0, node_count = 1;
  int64_t partitions = 1, partition = 0;
  int64_t prefetch = 2;         // batches read ahead on a background thread; 0 = off
};

struct CheckpointConfig {
  std::string dir;               // default: <train.out_dir>/checkpoints
  int64_t every = 0;             // save every N steps (0: only at the end)
  int64_t keep = 3;              // newest complete checkpoints kept
  bool save_final = true;        // also save when the run ends or is stopped
  std::string resume = "none";   // none | auto (newest valid under dir) | a step directory
  std::string init_from;         // weights only (e.g. from ckpt_convert import)
};

// SparseLoCo's recipe for diloco.compression "sparse" (docs/ARCHITECTURE.md,
// "What SparseLoCo does", has the sources). The decay is not SparseLoCo's
// 0.95: 0.8 was better on every CPU check with 12 and 48 outer steps
// (docs/PERFORMANCE.md, "Sparse with SparseLoCo's recipe").
constexpr double kSparseErrorFeedbackDecay = 0.8;
constexpr double kSparseOuterLr = 1.0;
// diloco.compression "blocks4" (dist/block_rotation.h): the share of the
// blocks each round sends, 1/5: at int4 (0.5625 bytes a value with its
// scales) that is 0.2 · 0.5625 / 4 = 1/35.6 of fp32's ring bytes, for any N
// (both are rings: 2(N − 1)/N of their vector). The largest 1/P under 1/32
// of fp32's bytes is 1/5 (1/4 would be 1/28.4).
constexpr double kBlocksFraction = 0.2;
// diloco.compression "blocks2": the same rotation at int2 (quantize2.h: 2.5
// bits a value with its scales, 0.078 of fp32), so 1/3 of the blocks per
// round for about blocks4's bytes at 1/5: 1/38.4 of fp32's ring bytes in
// steady rounds, and the run's last full round costs half of blocks4's. The
// largest 1/P under 1/32 is 1/3 (1/2 would be 1/25.6).
constexpr double kBlocks2Fraction = 1.0 / 3.0;
// blocks2's outer step: plain averaging extrapolated, each averaged block
// moved 1.25 times its average (no momentum). A block is averaged once every
// P rounds and carries P rounds of local progress; fp32 DiLoCo's Nesterov
// step grows round by round, plain averaging does not. On the 150m at H = 100
// the step past the average took blocks2 1/3 from +1.40% to +0.61% of fp32's
// final loss (the direct pattern, one call) and from +1.97% to +1.21% (the
// ring, two sessions); the tiny model's CPU check ranked 1.25 first of 1 to 2
// three times (docs/PERFORMANCE.md, "blocks2 through the direct pattern").
// blocks4 keeps 1: its step was never measured past the average.
constexpr double kBlocks2OuterLr = 1.25;
// Its error-feedback decay: none. The buffer holds only the int4 error of
// what each block last sent (the unsent blocks' progress stays in the
// weights), and every block is sent again within 2P − 1 rounds, so nothing
// piles up (what top-k's decay guards against).
constexpr double kBlocksErrorFeedbackDecay = 1.0;

struct DilocoConfig {
  bool enabled = false;              // outer steps every inner_steps (alone, or over the mesh)
  int64_t inner_steps = 100;
  double outer_lr = 0.7;
  double outer_momentum = 0.9;
  bool nesterov = true;
  // How pseudo-gradients travel (docs/ARCHITECTURE.md, "Compressed pseudo-gradients"):
  //   "none" fp32; "int8" (256 bin means per 64K block, 0.26x fp32 bytes);
  //   "int4" (a scale per 64 values, 0.14x); "sparse" (top-k per 4096-value
  //   block at sparse_density, 4-bit values and 12-bit indices, with an
  //   error-feedback buffer per node; all-gathered, so bytes grow with N);
  //   "blocks4" (rotating int4 blocks: each round the same seeded 1/P of the
  //   4096-value blocks on every node, P = ceil(1 / block_fraction), through
  //   the int4 ring; the rest keeps training on each node, and the int4
  //   error waits in the error-feedback buffer); "blocks2" (the same at
  //   int2, quantize2.h; block_fraction defaults to 1/3 there).
  std::string compression = "int8";
  // blocks4 / blocks2: share of the blocks sent per round (rounded down to
  // 1/P); default kBlocksFraction (blocks4) or kBlocks2Fraction (blocks2).
  double block_fraction = kBlocksFraction;
  // blocks4 / blocks2: the rotation's seed; the same on every node (like every
  // diloco.* key: a node with another seed averages other blocks, and its
  // outer hash disagrees at the first outer step).
  uint64_t block_seed = 0;
  double sparse_density = 0.01;  // sparse: fraction of each block sent per round
  // sparse, blocks4 and blocks2 (kBlocksErrorFeedbackDecay, 1): β, the error-feedback buffer's decay per round (SparseLoCo's
  // e ← β·e + Δ; 1: none; SparseLoCo and Covenant-72B use 0.95). With compression sparse the outer step defaults
  // to SparseLoCo's too: outer_lr kSparseOuterLr, outer_momentum 0,
  // nesterov false (the decayed buffer stands in for outer momentum).
  double error_feedback_decay = kSparseErrorFeedbackDecay;
  // sparse: how the nodes' contributions are averaged (dist/sparse.h):
  // "contributors" (per value, the mean over the nodes that sent it, as
  // SparseLoCo's code does) or "mean" (the sum over all N nodes / N).
  std::string sparse_aggregation = "contributors";
  // Parallel rings per all-reduce, each carrying one contiguous segment of the
  // pseudo-gradient on its own connections and thread (INTELLECT-1: one per
  // GPU, 8). Run-wide, independent of any node's GPU count.
  int64_t rings = 1;
  // How a dense round averages (dist/direct_allreduce.h):
  //   "ring":   a ring all-reduce: each node talks to its two neighbours,
  //             re-quantizing partial sums at every hop, in the order the
  //             coordinator chose for the links' measured speeds;
  //   "direct": each node sends each segment of its contribution, as it
  //             committed to it, straight to that segment's owner, which
  //             sends back the average: the same bytes per node, one encode
  //             of a contribution instead of one per hop, every contribution
  //             audited; N − 1 connections per ring a node, every link used.
  // Not for sparse (an all-gather over the ring). The same on every node.
  std::string all_reduce = "ring";
  // When an outer step's all-reduce runs (train/outer_sync.h):
  //   "none":    the training thread waits for it at each boundary (DiLoCo as published);
  //   "eager":   it runs on a thread of its own while the next round's inner
  //              steps run, and is applied at the next boundary (one round
  //              late); meanwhile the round starts from the outer step the
  //              node's own pseudo-gradient would give;
  //   "delayed": the same, but the round goes on from where the last one
  //              ended (the node's own progress stands in for the outer step).
  std::string overlap = "none";
  // eager: what stands in for the average while it is in flight:
  //   "own":    the node's own pseudo-gradient δ (the step δ alone would give);
  //   "fitted": c·δ, with c = ⟨avg, δ⟩ / ⟨δ, δ⟩ of the round before, in [0, 1]
  //             (OuterOptimizer::StandinFit): the least-squares guess of the
  //             average from δ, which shrinks δ where nodes disagree.
  std::string eager_standin = "own";
  // Overlap: apply a round's average as soon as it has arrived (checked
  // after every inner step, without waiting), with the progress since the
  // round's start kept on top, instead of at the next boundary. The next
  // round then starts from the real outer step for all but the first part
  // of it; it costs one more weights download and upload per round.
  bool apply_on_arrival = false;
  // Overlap: apply each round's average τ inner steps after its launch (0:
  // off), waiting there for it if it has not arrived (Streaming DiLoCo's
  // overlap of τ steps). Every node applies it at the same step, whatever
  // the link, so a run's result does not depend on timing; the round stays
  // hidden as long as it takes less than τ steps of compute. In [0,
  // inner_steps): at the boundary itself it would be the blocking step.
  int64_t apply_after_steps = 0;

  // compression "blocks4" or "blocks2": a block rotation (dist/block_rotation.h).
  bool rotates_blocks() const { return compression == "blocks4" || compression == "blocks2"; }
  // The ring codec's name (codec.h's parse_compression): a block rotation's
  // selected blocks travel at int4 (blocks4) or int2 (blocks2); any other
  // compression is its own.
  std::string ring_compression() const {
    return compression == "blocks4" ? "int4" : compression == "blocks2" ? "int2" : compression;
  }
};

// The global mesh: where the coordinator is and how this node takes part.
struct MeshConfig {
  std::string coordinator;              // "host:port"; empty: no mesh (DiLoCo alone)
  std::string listen = "127.0.0.1:0";   // where ring peers dial this node
  std::string name;                     // for logs; default: hostname-pid
  // Credentials, one of two modes (dist/auth.h): this node's own Ed25519 key
  // (intellect_keygen) and the allowlist of the keys it accepts, for runs on
  // the open internet; or one secret (>= 32 bytes) every node shares.
  std::string node_key_file, allowlist_file;
  std::string secret_file;
  int64_t heartbeat_ms = 2000, timeout_ms = 6000;  // INTELLECT-1's 2 s / 6 s
  int64_t ready_timeout_ms = 30000;     // coordinator: how long a ring waits for late nodes
  int64_t round_timeout_ms = 600000;    // a node: waiting for its ring and the all-reduce
  int64_t message_timeout_ms = 60000;   // a ring peer silent this long (mid-message or between) is given up
  // Serve this node's state to nodes that join (a snapshot after every outer
  // step: about 4x the parameters in host memory, plus two rounds' averages).
  bool serve_state = true;
  // Connections a download of state or a round from a donor uses side by
  // side (state_stream.h: one connection, one sealing and one hashing thread
  // cap a transfer far below a fast link).
  int64_t state_lanes = 4;
  // Further donors a joiner fetches the shared part of a snapshot from
  // (outer parameters and momentum: half of it), each on state_lanes / 2
  // connections (at least 1), beside its own donor: the donors' uplinks add
  // up until the joiner's own link limits. 0: its own donor only.
  int64_t state_stripe_donors = 3;
  // The chunks a donor cuts the state it serves into, in KiB: each is
  // checked on arrival and is what a download resumes from (a donor that
  // fails loses at most the chunks in flight).
  int64_t state_chunk_kib = 4096;
  int64_t max_retries = 3;
  // Coordinator: nodes a ring waits for (up to ready_timeout_ms) even when all
  // registered nodes are ready, so a run whose nodes start together averages
  // together from the first outer step.
  int64_t min_ring = 1;
  // Coordinator: order each ring so that its slowest link, as the nodes
  // measure their links on ring traffic, is fastest (dist/ring_order.h);
  // false: ascending node ids, around failed links only.
  bool order_rings_by_rate = true;
  // Tests and benchmarks only: the ring traffic this node sends, and the
  // state it serves to joiners, go through an emulated WAN link (Mbit/s,
  // 0 = no cap; one-way delay and its jitter).
  double emulate_link_mbit = 0.0;
  int64_t emulate_link_delay_ms = 0, emulate_link_jitter_ms = 0;
  // Tests and benchmarks only: slower emulated links between named nodes,
  // "FROM>TO" or "A<>B" (both ways), comma-separated (names as in
  // mesh.name), each capped at emulate_link_slow_mbit.
  std::string emulate_link_slow;
  double emulate_link_slow_mbit = 0.0;
  // Contributions: nodes announce their pseudo-gradient's norm before each
  // ring and check their ring predecessors against it; the coordinator leaves
  // out a node whose norm is above norm_outlier_factor x the median of the
  // others' (0: never).
  bool announce_norms = true;
  double norm_outlier_factor = 5.0;
  // intellect_chaos --byzantine only: this node sends its pseudo-gradient
  // times attack_scale and announces the norm of what it sends times
  // attack_announce.
  double attack_scale = 1.0, attack_announce = 1.0;
  // And accuses its ring predecessor falsely (1: with that node's honest
  // signed messages as evidence, 2: with a forged signature; 0: never).
  int attack_false_accusation = 0;
  // And, in sparse rounds, alters every chunk of another node's contribution
  // it forwards (1: signed on as its sender, 2: under a broken sender
  // signature; 0: never).
  int attack_alter_forwarded = 0;
  // Coordinator: the run's status page, /api/status and /metrics: "PORT"
  // (loopback) or "IPV4:PORT"; empty: off.
  std::string status_listen = "";
  std::string status_token_file = "";  // a bearer token for it (empty: none)
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  DilocoConfig diloco;
  PrecisionConfig precision;
  CheckpointConfig ckpt;
  MeshConfig mesh;
  nlohmann::json json;  // the document after overrides, as recorded with each run
  std::string source;   // the file it came from, or "<embedded default>"

  int64_t grad_accum_steps() const { return train.batch_size / train.micro_batch_size; }
  int64_t tokens_per_step() const { return train.batch_size * train.seq_len; }
};

// Parses and validates. `source` is used in error messages.
Config parse_config(const nlohmann::json& doc, const std::string& source);
// Reads `path` (or the embedded tiny config when path is empty) and applies
// overrides in order.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// The settings every node of a run must share, as resolved (defaults
// included): model.* and diloco.*, a JSON object sent with a node's join
// and compared by the coordinator (dist/run_settings.h).
nlohmann::json run_settings(const Config& c);

}  // namespace intellect
