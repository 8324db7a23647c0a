// FSDP over a node's GPUs against the one-GPU CUDA backend: the same
// micro-batches give the same summed gradient, the same clipped step and the
// same loss curve (bf16 tolerance), whether the step's micro-batches divide
// evenly over the GPUs or not. With fewer GPUs than ranks, the ranks share
// GPU 0 and meet in in-process collectives instead of NCCL
// (INTELLECT_FSDP_SHARED_GPU, dist/shared_gpu_group.h): the model's FSDP
// choreography, the shards and the sharded optimizer step still run, NCCL
// does not. The NCCL-only test skips there.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "gpu_util.h"
#include "model/init.h"
#include "dist/shared_gpu_group.h"
#include "train/backend.h"
#include "util/error.h"
#include "train/config.h"

namespace intellect {
namespace {

using namespace test;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

#define REQUIRE_GPUS(n)                                                                             \
  do {                                                                                              \
    REQUIRE_GPU();                                                                                  \
    if (::intellect::cuda::device_count() < (n))                                                    \
      GTEST_SKIP() << "needs " << (n) << " GPUs, this machine shows " << ::intellect::cuda::device_count() \
                   << "; run on a multi-GPU device kind";                                           \
  } while (0)

// Ranks on GPUs of their own where the machine has them, else all on GPU 0
// with the shared-GPU collectives, for the life of the scope.
class RanksOnGpus {
 public:
  explicit RanksOnGpus(int ranks) : shared_(::intellect::cuda::device_count() < ranks) {
    if (shared_) {
      setenv("INTELLECT_FSDP_SHARED_GPU", "1", 1);
      std::printf("note: %d ranks share GPU 0 with in-process collectives (this machine shows %d GPU(s)); "
                  "NCCL itself is not exercised\n", ranks, ::intellect::cuda::device_count());
    }
  }
  ~RanksOnGpus() {
    if (shared_) unsetenv("INTELLECT_FSDP_SHARED_GPU");
  }
  bool shared() const { return shared_; }

 private:
  bool shared_;
};

Config tiny(int gpus, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> o = {"train.device=cuda", "train.gpus=" + std::to_string(gpus)};
  o.insert(o.end(), extra.begin(), extra.end());
  return load_config(std::string(INTELLECT_SOURCE_DIR) + "/configs/tiny.json", o);
}

// Deterministic micro-batch k of a config's shape.
void batch(const Config& c, int k, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  const int64_t n = c.train.micro_batch_size * c.train.seq_len;
  x.resize(n);
  y.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    // A learnable stream: the next token is mostly the previous one plus one.
    x[i] = static_cast<int32_t>((hash_u64(11, k * n + i / 7) + i % 7) % 200);
    y[i] = (x[i] + 1) % 200;
  }
}

std::vector<float> initial_params(const Config& c, const ParamLayout& layout) {
  std::vector<float> p(layout.total());
  init_params(p.data(), layout, c.model, 3);
  return round_bf16(p);
}

struct Trace {
  std::vector<double> loss, norm;
  std::vector<float> grads0, params;
};

// `steps` optimizer steps; the gradient of the first step is kept.
Trace train(const Config& c, int steps) {
  auto b = make_backend(c, c.train.micro_batch_size, c.train.seq_len);
  const std::vector<float> p0 = initial_params(c, b->layout());
  b->set_params(p0.data());
  Trace t;
  std::vector<int32_t> x, y;
  const float scale = 1.0f / static_cast<float>(c.tokens_per_step());
  for (int s = 0; s < steps; ++s) {
    b->zero_grads();
    for (int m = 0; m < c.grad_accum_steps(); ++m) {
      batch(c, s * 100 + m, x, y);
      b->run(x.data(), y.data(), c.train.micro_batch_size, static_cast<float>(c.train.z_loss_weight), scale, true);
    }
    if (s == 0) {
      t.grads0.resize(b->layout().total());
      b->get_grads(t.grads0.data());
    }
    const StepStats st = b->step(1e-3);
    t.loss.push_back(st.loss.ce / static_cast<double>(st.loss.n_valid));
    t.norm.push_back(st.grad_norm);
  }
  t.params.resize(b->layout().total());
  b->get_params(t.params.data());
  return t;
}

void expect_same_run(const Trace& one, const Trace& many, double grad_tol, double loss_tol,
                     double param_tol = 2e-2) {
  EXPECT_LT(rel_error(many.grads0, one.grads0), grad_tol);
  ASSERT_EQ(one.loss.size(), many.loss.size());
  for (size_t s = 0; s < one.loss.size(); ++s) {
    EXPECT_TRUE(std::isfinite(many.loss[s]));
    EXPECT_NEAR(many.loss[s], one.loss[s], loss_tol * one.loss[s]) << "step " << s;
    EXPECT_NEAR(many.norm[s], one.norm[s], 2e-2 * one.norm[s]) << "step " << s;
  }
  EXPECT_LT(many.loss.back(), many.loss.front() - 0.5) << "the loss falls";
  EXPECT_LT(rel_error(many.params, one.params), param_tol);
}

TEST(Fsdp, MatchesOneGpuGradientsStepsAndLossCurve) {
  REQUIRE_GPU();
  std::vector<int> counts = {2};
  if (cuda::device_count() > 2) counts.push_back(cuda::device_count());
  if (cuda::device_count() == 1) counts.push_back(4);  // four ranks sharing the one GPU
  for (int gpus : counts) {
    SCOPED_TRACE(::testing::Message() << gpus << " GPUs");
    const RanksOnGpus placement(gpus);
    // 4 micro-batches of 4 per step: divides over 2 and 4 GPUs.
    const std::vector<std::string> shape = {"train.batch_size=16", "train.micro_batch_size=4"};
    const Trace one = train(tiny(1, shape), 30);
    const Trace many = train(tiny(gpus, shape), 30);
    expect_same_run(one, many, 1e-2, 2e-2);
  }
}

TEST(Fsdp, Bf16ReductionAndBf16StateStayClose) {
  REQUIRE_GPU();
  const RanksOnGpus placement(2);
  const std::vector<std::string> o = {"train.batch_size=16", "train.micro_batch_size=4",
                                      "precision.master_weights=false", "precision.optim_state_dtype=bf16"};
  const Trace one = train(tiny(1, o), 20);
  // bf16 weights are rounded stochastically, with a stream that depends on
  // the seed and on where an element lives: two one-GPU runs that differ
  // only in train.seed measure how far that noise alone moves the weights.
  std::vector<std::string> o_seed = o;
  o_seed.push_back("train.seed=2");
  const double noise = rel_error(train(tiny(1, o_seed), 20).params, one.params);
  std::vector<std::string> o2 = o;
  o2.push_back("precision.grad_reduce_dtype=bf16");
  const Trace many = train(tiny(2, o2), 20);
  expect_same_run(one, many, 2e-2, 3e-2, 2.0 * noise + 1e-3);
}

TEST(Fsdp, UnevenMicroBatchesArePaddedNotLost) {
  REQUIRE_GPU();
  const RanksOnGpus placement(2);
  // 3 micro-batches per step on 2 GPUs: the second round is padded.
  const std::vector<std::string> shape = {"train.batch_size=12", "train.micro_batch_size=4"};
  const Trace one = train(tiny(1, shape), 10);
  const Trace many = train(tiny(2, shape), 10);
  expect_same_run(one, many, 1e-2, 2e-2);
}

TEST(Fsdp, EvaluationLossMatchesOneGpu) {
  REQUIRE_GPU();
  const RanksOnGpus placement(2);
  const Config c1 = tiny(1), c2 = tiny(2);
  auto one = make_backend(c1, c1.train.micro_batch_size, c1.train.seq_len);
  auto many = make_backend(c2, c2.train.micro_batch_size, c2.train.seq_len);
  const std::vector<float> p = initial_params(c1, one->layout());
  one->set_params(p.data());
  many->set_params(p.data());
  std::vector<int32_t> x, y;
  for (int k = 0; k < 3; ++k) {  // odd: the last round is padded
    batch(c1, k, x, y);
    one->run(x.data(), y.data(), c1.train.micro_batch_size, 0.0f, 0.0f, false);
    many->run(x.data(), y.data(), c2.train.micro_batch_size, 0.0f, 0.0f, false);
  }
  const cpu::LossSums a = one->take_loss(), b = many->take_loss();
  EXPECT_EQ(a.n_valid, b.n_valid);
  EXPECT_NEAR(b.ce, a.ce, 1e-3 * a.ce);
}

TEST(Fsdp, ShardsRoundTripParametersAndOptimizerStateExactly) {
  REQUIRE_GPU();
  const int ranks = std::max(2, cuda::device_count());
  const RanksOnGpus placement(ranks);
  const Config c = tiny(ranks);
  auto b = make_backend(c, c.train.micro_batch_size, c.train.seq_len);
  const size_t P = b->layout().total();
  std::vector<float> p(P), m(P), v(P);
  for (size_t i = 0; i < P; ++i) {
    p[i] = static_cast<float>(i % 1000) * 1e-3f;  // exact in fp32 master weights
    m[i] = static_cast<float>(i) * 1e-6f;
    v[i] = static_cast<float>(i % 77) * 1e-5f;
  }
  b->set_params(p.data());
  b->set_optimizer_state(m, v, 7);
  std::vector<float> p2(P, -1.0f), m2, v2;
  int64_t step = 0;
  b->get_params(p2.data());
  b->get_optimizer_state(m2, v2, step);
  EXPECT_EQ(p2, p);
  EXPECT_EQ(m2, m);
  EXPECT_EQ(v2, v);
  EXPECT_EQ(step, 7);
}

TEST(Fsdp, NvlinkMulticastIsOffWhateverTheEnvironmentSays) {
  REQUIRE_GPUS(2);
  setenv("NCCL_NVLS_ENABLE", "1", 1);
  const Config c = tiny(2);
  auto b = make_backend(c, c.train.micro_batch_size, c.train.seq_len);
  ASSERT_NE(std::getenv("NCCL_NVLS_ENABLE"), nullptr);
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
  EXPECT_CONTAINS(b->describe(), "FSDP over NCCL");
}

// One rank failing alone (here an injected error in its second round of
// micro-batches) must not leave the other blocked in a collective: the node's
// collectives are aborted, the failure is reported with its rank and cause,
// and the node stops well within its deadline (the shared-GPU barrier's own
// would take 120 s; NCCL's wait, for ever).
TEST(Fsdp, ARankThatFailsAloneStopsTheNodeWithinItsDeadline) {
  REQUIRE_GPU();
  const RanksOnGpus placement(2);
  const Config c = tiny(2, {"train.batch_size=16", "train.micro_batch_size=4"});
  setenv("INTELLECT_FSDP_INJECT_FAILURE", "1:1", 1);
  std::unique_ptr<Backend> b = make_backend(c, c.train.micro_batch_size, c.train.seq_len);  // reads it
  unsetenv("INTELLECT_FSDP_INJECT_FAILURE");
  const std::vector<float> p0 = initial_params(c, b->layout());
  b->set_params(p0.data());
  std::vector<int32_t> x, y;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] {
    b->zero_grads();
    for (int m = 0; m < c.grad_accum_steps(); ++m) {
      batch(c, m, x, y);
      b->run(x.data(), y.data(), c.train.micro_batch_size, 0.0f, 1.0f / c.tokens_per_step(), true);
    }
    b->step(1e-3);
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_CONTAINS(err, "FSDP rank 1 failed: injected failure");
  EXPECT_CONTAINS(err, "restart it to rejoin the run");
  EXPECT_LT(seconds, 30.0) << "the other rank was left waiting in a collective";
  b.reset();  // and the node's teardown does not hang either
}

// The shared-GPU test double sums like a reduce-scatter and fails, rather
// than hangs, when a rank never arrives.
TEST(Fsdp, SharedGpuCollectivesSumAndGiveUpOnAMissingRank) {
  REQUIRE_GPU();
  SharedGpuGroup group(2, std::chrono::milliseconds(300));
  DeviceBuffer<float> in0(4), in1(4), out0(2), out1(2);
  in0.upload({1, 2, 3, 4});
  in1.upload({10, 20, 30, 40});
  cudaStream_t s0 = nullptr, s1 = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s0), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&s1), cudaSuccess);
  std::thread other([&] { group.rank(1)->reduce_scatter_sum(in1.get(), out1.get(), 2, ElemType::f32, s1); });
  group.rank(0)->reduce_scatter_sum(in0.get(), out0.get(), 2, ElemType::f32, s0);
  other.join();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(out0.download(), (std::vector<float>{11, 22}));
  EXPECT_EQ(out1.download(), (std::vector<float>{33, 44}));
  // Rank 1 never calls: rank 0 gives up at the deadline with a message.
  EXPECT_CONTAINS(error_of([&] { group.rank(0)->all_reduce_sum(in0.get(), in0.get(), 1, ElemType::f32, s0); }),
                  "waited 300 ms for the other ranks to join the all-reduce");
  cudaStreamDestroy(s0);
  cudaStreamDestroy(s1);
}

TEST(Fsdp, MoreGpusThanVisibleIsAClearError) {
  REQUIRE_GPU();
  const Config c = tiny(64);
  EXPECT_CONTAINS(error_of([&] { make_backend(c, 1, 16); }), "train.gpus is 64 but this machine shows");
}

}  // namespace
}  // namespace intellect
