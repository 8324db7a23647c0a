// FsdpBackend: one node's GPUs as one replica. One host thread per GPU drives
// a LlamaCuda shard (rank r of N) on its own device; the shards meet only in
// NCCL collectives, which every rank issues in the same order.
//
// Data parallelism inside the node: the trainer's micro-batches are dealt out
// one per GPU, N at a time, so a step sees the same micro-batches as on one
// GPU and the summed gradient is the same (up to summation order). A step
// whose micro-batch count is not a multiple of N is padded with empty
// micro-batches (every target ignored): they add nothing but keep the ranks'
// collectives in step.
#if defined(INTELLECT_HAVE_CUDA)
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "kernels/attention.h"
#include "kernels/cuda_device.h"
#include "train/backend_cuda.h"
#include "util/error.h"
#include "dist/shared_gpu_group.h"
#if defined(INTELLECT_HAVE_NCCL)
#include "dist/nccl_group.h"
#endif

namespace intellect {

bool fsdp_on_shared_gpu() {
  const char* v = std::getenv("INTELLECT_FSDP_SHARED_GPU");
  return v && std::string(v) == "1";
}

namespace {

void set_device(int device) {
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) fail("CUDA: selecting GPU ", device, ": ", cudaGetErrorString(e));
}

// How long a rank may take over one job (a round of micro-batches, a step,
// a copy) before the node gives up on it, and how long the others get to
// return once one has failed and the group was aborted. A job is a few
// seconds on the 10B; a rank past these is stuck (a lost GPU, a collective
// its peer will never join).
constexpr std::chrono::seconds kRankJobDeadline{900};
constexpr std::chrono::seconds kRankGraceAfterFailure{60};

// One thread per GPU, each bound to its device for life; run_all() hands the
// same job to every thread and waits for all of them, with a deadline.
//
// A rank that fails alone would leave the others waiting in a collective
// for ever: so on the first failure (or at the deadline) run_all() calls
// `abort` (the group's CollectiveGroup::abort, which releases them) and
// gives them kRankGraceAfterFailure to return. The first failure in time is
// rethrown: the cause, not the others' "aborted". A rank that still has not
// returned leaves the threads abandoned(): the node must exit (its GPUs are
// in an unknown state), and the destructor then leaves the threads running
// rather than wait for them.
class RankThreads {
 public:
  // Rank r runs on GPU devices[r].
  RankThreads(const std::vector<int>& devices, std::function<void()> abort)
      : abort_(std::move(abort)), done_(devices.size(), 1) {
    for (int r = 0; r < static_cast<int>(devices.size()); ++r)
      threads_.emplace_back([this, r, d = devices[r]] { loop(r, d); });
  }
  ~RankThreads() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) {
      if (abandoned_) t.detach();  // may never return; the process is on its way out
      else t.join();
    }
  }
  bool abandoned() const { return abandoned_; }

  void run_all(const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> lock(mu_);
    if (abandoned_) fail("FSDP: this node's GPU threads were abandoned after an earlier failure; restart the node");
    job_ = &fn;
    errors_.assign(threads_.size(), nullptr);
    failed_order_.clear();
    done_.assign(threads_.size(), 0);
    pending_ = static_cast<int>(threads_.size());
    ++generation_;
    cv_.notify_all();
    auto limit = std::chrono::steady_clock::now() + kRankJobDeadline;
    bool aborted = false, timed_out = false;
    while (pending_ > 0) {
      const bool woke = done_cv_.wait_until(lock, limit, [&] {
        return pending_ == 0 || (!aborted && !failed_order_.empty());
      });
      if (pending_ == 0) break;
      if (aborted) {  // the grace after the abort ran out
        abandoned_ = true;
        break;
      }
      timed_out = !woke;
      aborted = true;
      lock.unlock();
      abort_();
      lock.lock();
      limit = std::chrono::steady_clock::now() + kRankGraceAfterFailure;
    }
    job_ = nullptr;
    std::string stuck;
    for (size_t r = 0; r < threads_.size(); ++r)
      if (!done_[r]) stuck += str(stuck.empty() ? "" : ", ", r);
    if (!failed_order_.empty()) {
      const int first = failed_order_.front();
      try {
        std::rethrow_exception(errors_[first]);
      } catch (const std::exception& e) {
        fail("FSDP rank ", first, " failed: ", e.what(), "; the other ranks were released (the node's collectives ",
             "were aborted)", abandoned_ ? str(", and rank(s) ", stuck, " did not return within ",
                                              kRankGraceAfterFailure.count(), " s") : std::string(),
             ". The node stops; restart it to rejoin the run");
      }
    }
    if (timed_out || abandoned_)
      fail("FSDP: rank(s) ", stuck, " did not finish a job within ", kRankJobDeadline.count(),
           " s (a lost GPU, or a collective a peer never joined); the node's collectives were aborted. "
           "The node stops; restart it to rejoin the run");
  }

 private:
  void loop(int rank, int device) {
    uint64_t seen = 0;
    set_device(device);
    for (;;) {
      const std::function<void(int)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      std::exception_ptr err;
      try {
        (*job)(rank);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      errors_[rank] = err;
      done_[rank] = true;
      if (err) failed_order_.push_back(rank);
      if (--pending_ == 0 || err) done_cv_.notify_all();
    }
  }

  std::function<void()> abort_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  std::vector<std::exception_ptr> errors_;
  std::vector<int> failed_order_;              // ranks that failed in this job, first first
  std::vector<char> done_;                     // per rank: returned from the current job
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::atomic<bool> abandoned_{false};
};

class FsdpBackend final : public Backend {
 public:
  FsdpBackend(const Config& cfg, int gpus, int64_t max_batch, int64_t seq_len)
      : cfg_(cfg), world_(gpus), T_(seq_len), max_batch_(max_batch), models_(gpus), slots_(gpus) {
    std::vector<int> devices(gpus, 0);  // every rank on GPU 0 when they share it
    if (fsdp_on_shared_gpu()) {
      group_ = std::make_unique<SharedGpuGroup>(gpus);
    } else {
      for (int r = 0; r < gpus; ++r) devices[r] = r;
#if defined(INTELLECT_HAVE_NCCL)
      group_ = std::make_unique<NcclGroup>(devices);
#endif
    }
    read_injected_failure();
    threads_ = std::make_unique<RankThreads>(devices, [this] { group_->abort(); });
    threads_->run_all([&](int r) {
      CudaOptions o = cuda_options(cfg_);
      o.rank = r;
      o.world = world_;
      o.collectives = group_->rank(r);
      models_[r] = std::make_unique<LlamaCuda>(cfg_.model, o, max_batch_, T_);
    });
    if (cfg_.grad_accum_steps() % world_ != 0)
      std::fprintf(stderr,
                   "intellect: warning: a step has %lld micro-batches, not a multiple of train.gpus=%d; "
                   "the last round of each step is padded and some GPUs idle. Make train.batch_size / "
                   "train.micro_batch_size a multiple of %d.\n",
                   static_cast<long long>(cfg_.grad_accum_steps()), world_, world_);
  }

  ~FsdpBackend() override {
    if (threads_ && threads_->abandoned()) {
      // A rank never returned: it may still use its model, the group and the
      // threads' state, so all of it stays allocated until the process ends.
      (void)threads_.release();
      for (auto& m : models_) (void)m.release();
      (void)group_.release();
      return;
    }
    // Shards first (their streams use the collectives), then the group, then threads.
    if (threads_) {
      try {
        threads_->run_all([&](int r) { models_[r].reset(); });
      } catch (const std::exception&) {
      }
    }
    threads_.reset();
    group_.reset();
  }

  std::string describe() const override {
    size_t bytes = 0;
    for (const auto& m : models_) bytes = std::max(bytes, m->device_bytes());
    return str("cuda x", world_, " (FSDP over ", group_->name(), ", gradients reduced in ",
               cfg_.precision.grad_reduce_dtype, "): ", cuda::describe_device(0), ", bf16, ",
               cfg_.precision.master_weights ? "fp32 master weights" : "bf16 weights (stochastic rounding)",
               ", AdamW state ", cfg_.precision.optim_state_dtype, ", attention: ",
               models_[0]->attention_impl(), ", ", bytes / double(1 << 30), " GiB allocated per GPU");
  }
  const ParamLayout& layout() const override { return models_[0]->layout(); }

  void set_params(const float* host) override {
    flush();
    threads_->run_all([&](int r) { models_[r]->upload_params(host); });
  }
  void get_params(float* host) override {
    flush();
    threads_->run_all([&](int r) { models_[r]->download_params(host); });
  }
  bool pin_params_buffer(float* host, size_t n, std::string* why) override {
    return cuda::pin_host_memory(host, n * sizeof(float), why);
  }
  void unpin_params_buffer(float* host) override { cuda::unpin_host_memory(host); }
  void get_grads(float* host) override {
    flush();
    threads_->run_all([&](int r) { models_[r]->download_grads(host); });
  }
  void zero_grads() override {
    flush();
    threads_->run_all([&](int r) { models_[r]->zero_grads(); });
  }
  void get_optimizer_state(std::vector<float>& m, std::vector<float>& v, int64_t& step) override {
    flush();
    m.assign(layout().total(), 0.0f);
    v.assign(layout().total(), 0.0f);
    threads_->run_all([&](int r) { models_[r]->download_optimizer_state(m.data(), v.data()); });
    step = steps_;
  }
  void set_optimizer_state(const std::vector<float>& m, const std::vector<float>& v, int64_t step) override {
    flush();
    const size_t P = layout().total();
    if (m.size() != P || v.size() != P) fail("optimizer state has ", m.size(), " values, the model ", P);
    threads_->run_all([&](int r) { models_[r]->upload_optimizer_state(m.data(), v.data()); });
    steps_ = step;
  }

  void run(const int32_t* tokens, const int32_t* targets, int64_t B, float z_weight, float grad_scale,
           bool backward, float* logits_host, const int32_t* cu_seqlens, int64_t n_segments) override {
    if (B > max_batch_) fail("micro-batch of ", B, " sequences exceeds the ", max_batch_, " planned");
    // Checked here, before any rank starts: a rank that failed alone would
    // leave the others waiting in a collective.
    check_token_ids(tokens, targets, B * T_, cfg_.model.vocab_size);
    if (cu_seqlens) {
      if (!cfg_.train.doc_masking)
        fail("document segments given to a backend built with train.doc_masking=false");
      cpu::check_segments(cu_seqlens, n_segments, B, T_);
    }
    if (pending_ > 0 && (slots_[0].backward != backward || logits_host)) flush();
    // Into a slot kept from earlier micro-batches: no allocation once the
    // vectors have grown to the planned size.
    MicroBatch& mb = slots_[pending_++];
    mb.tokens.assign(tokens, tokens + B * T_);
    mb.targets.assign(targets, targets + B * T_);
    if (cu_seqlens) mb.cu_seqlens.assign(cu_seqlens, cu_seqlens + n_segments + 1);
    else mb.cu_seqlens.clear();
    mb.B = B;
    mb.z_weight = z_weight;
    mb.grad_scale = grad_scale;
    mb.backward = backward;
    mb.logits_host = logits_host;
    if (pending_ == world_ || logits_host) flush();
  }

  cpu::LossSums take_loss() override {
    flush();
    std::vector<cpu::LossSums> per(world_);
    threads_->run_all([&](int r) { per[r] = models_[r]->take_loss(); });
    return sum(per);
  }

  StepStats step(double lr) override {
    flush();
    ++steps_;
    const OptimConfig& o = cfg_.optim;
    std::vector<CudaStepStats> per(world_);
    threads_->run_all([&](int r) {
      per[r] = models_[r]->optimizer_step(lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.grad_clip, steps_,
                                          cfg_.train.seed + static_cast<uint64_t>(r));
    });
    std::vector<cpu::LossSums> losses;
    for (const CudaStepStats& s : per) losses.push_back(s.loss);
    return {sum(losses), per[0].grad_norm};  // the norm is global: the same on every rank
  }

 private:
  struct MicroBatch {
    std::vector<int32_t> tokens, targets;
    std::vector<int32_t> cu_seqlens;  // empty: causal per row
    int64_t B = 0;
    float z_weight = 0, grad_scale = 0;
    bool backward = false;
    float* logits_host = nullptr;
  };

  static cpu::LossSums sum(const std::vector<cpu::LossSums>& v) {
    cpu::LossSums s;
    for (const cpu::LossSums& x : v) {
      s.ce += x.ce;
      s.z += x.z;
      s.n_valid += x.n_valid;
    }
    return s;
  }

  // Runs the pending micro-batches, one per GPU, padding the round with empty
  // ones (token 0, every target ignored) so every rank joins the collectives.
  void flush() {
    if (pending_ == 0) return;
    for (; pending_ < world_; ++pending_) {
      MicroBatch& pad = slots_[pending_];
      pad.B = slots_[0].B;
      pad.tokens.assign(pad.B * T_, 0);
      pad.targets.assign(pad.B * T_, -1);
      pad.cu_seqlens.clear();
      pad.z_weight = slots_[0].z_weight;
      pad.grad_scale = slots_[0].grad_scale;
      pad.backward = slots_[0].backward;
      pad.logits_host = nullptr;
    }
    pending_ = 0;  // before running: a failure must not leave the slots counted full
    const long long round = rounds_++;
    threads_->run_all([&](int r) {
      if (r == inject_rank_ && round == inject_round_)
        fail("injected failure (INTELLECT_FSDP_INJECT_FAILURE) on rank ", r, " in round ", round);
      const MicroBatch& mb = slots_[r];
      const int64_t n = static_cast<int64_t>(mb.cu_seqlens.size()) - 1;
      models_[r]->forward_backward(mb.tokens.data(), mb.targets.data(), mb.B, mb.z_weight, mb.grad_scale,
                                   mb.backward, mb.logits_host, n > 0 ? mb.cu_seqlens.data() : nullptr,
                                   n > 0 ? n : 0);
    });
  }

  Config cfg_;
  int world_;
  int64_t T_, max_batch_;
  // Test-only fault injection (INTELLECT_FSDP_INJECT_FAILURE="rank:round"):
  // that rank throws instead of running its micro-batch in that round of
  // micro-batches (counted from 0), to show a rank failing alone stops the
  // node instead of hanging it (Fsdp.ARankThatFailsAloneStopsTheNodeWithinItsDeadline).
  void read_injected_failure() {
    const char* v = std::getenv("INTELLECT_FSDP_INJECT_FAILURE");
    if (!v) return;
    if (std::sscanf(v, "%d:%lld", &inject_rank_, &inject_round_) != 2 || inject_rank_ < 0 || inject_rank_ >= world_)
      fail("INTELLECT_FSDP_INJECT_FAILURE=\"", v, "\": expected RANK:ROUND with RANK below train.gpus=", world_);
  }

  std::unique_ptr<CollectiveGroup> group_;
  int inject_rank_ = -1;
  long long inject_round_ = -1, rounds_ = 0;
  std::vector<std::unique_ptr<LlamaCuda>> models_;
  std::unique_ptr<RankThreads> threads_;
  std::vector<MicroBatch> slots_;  // one per rank, reused
  int pending_ = 0;                // slots filled since the last flush
  int64_t steps_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_fsdp_backend(const Config& cfg, int gpus, int64_t max_batch, int64_t seq_len) {
#if !defined(INTELLECT_HAVE_NCCL)
  if (!fsdp_on_shared_gpu())
    fail(cfg.source, ": train.gpus asks for ", gpus, " GPUs, and sharding over several GPUs needs NCCL, which "
         "this build lacks (install NCCL, reconfigure and rebuild)");
#endif
  return std::make_unique<FsdpBackend>(cfg, gpus, max_batch, seq_len);
}

}  // namespace intellect
#endif
