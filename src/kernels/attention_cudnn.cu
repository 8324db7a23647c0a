// Causal GQA flash attention through cuDNN's backend graph API (see attention_cudnn.h).
//
// Which formulation: with cuDNN 9.19 the causal mask must be spelled out as pointwise
// operations inside a composite graph. The single-op CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD
// descriptors only take a score-modifier subgraph (how a causal mask reaches them) from
// cuDNN 9.21 on, and the one-op diagonal-band mask and softmax operations are 9.21 as
// well; the 9.19 headers have none of those attributes. So we build the same composite
// graphs the cuDNN frontend builds for a cuDNN < 9.21 backend, and cuDNN's runtime fusion
// matches them to its fused flash-attention engines:
//
// forward:  S = Q·Kᵀ → S·scale → causal mask (gen_index row/col, row >= col, select)
//           → max, S-max, exp, sum, log, stats = max + log(sum), P = exp/sum → O = P·V
// backward: Σ = rowsum(dO∘O); P = exp(mask(Q·Kᵀ·scale) − stats);
//           dV = Σ_heads Pᵀ·dO; dS = P∘(dO·Vᵀ − Σ)·scale; dK = Σ_heads dSᵀ·Q;
//           dQ = dS·K into an fp32 accumulator in the workspace, then copied to bf16.
//
// Packed documents: the same graphs over ragged tensors, as the frontend builds them for
// variable-length (THD) attention. Each document is one sequence of the graph's batch: a
// ragged-offset tensor (CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, int64, one entry per sequence
// plus one, in elements) says where it starts in Q/K/V/O/dO/dQ/dK/dV and in the stats, and
// seq_len_q = seq_len_kv tensors give its length: they override the matmuls' M/N/K
// (CUDNN_ATTR_OPERATION_MATMUL_GEMM_*_OVERRIDE_DESC) and feed a padding mask (row < seq_len_q
// and col < seq_len_kv, select) before the causal mask. The stats are token-major [tokens, H]
// (ragged like Q); the backward's dQ accumulator and dO·O sums stay padded [b, H, s, ·] in the
// workspace (the frontend's layout when no max_total_seq_len is given).
//
// A graph's batch and sequence dimensions are fixed when it is built, and the engines launch
// work for every (sequence, query tile) of them, so a batch of documents is dealt out to a
// few "families" built once: family s takes documents of length ≤ s, up to cap = B*T / s of
// them per call (so every family's padded workspace fits in that of plain attention), with
// s = T, T/4, T/16, … down to 32. A document goes to the smallest family that fits it; a
// family with more documents than cap runs several calls, and the unused sequences of a call
// have length 0 (TransformerEngine pads its THD batches the same way). The calls write
// disjoint rows, so their order does not matter. Only the s = T family is required; a
// smaller one that cuDNN refuses is left out and its documents go to the next larger.
//
// Error paths all throw intellect::Error with "cuDNN attention: <step> failed with
// <CUDNN_STATUS_NAME> (status N): <cudnnGetLastErrorString text> [<expression> at file:line]".
#include "kernels/attention_cudnn.h"

#include <algorithm>
#include <cstdlib>

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "util/error.h"

#if !defined(CUDNN_MAJOR) || CUDNN_MAJOR < 9
#error "attention_cudnn.cu needs the cuDNN 9 backend API"
#endif

namespace intellect::cuda {
namespace {

// ---------------------------------------------------------------- error reporting

std::string cudnn_last_error() {
  char buf[4096];
  buf[0] = '\0';
  cudnnGetLastErrorString(buf, sizeof buf);
  buf[sizeof buf - 1] = '\0';
  return buf;
}

std::string status_text(cudnnStatus_t st) {
  std::string s = cudnnGetErrorString(st);
  s += " (status " + std::to_string(static_cast<int>(st)) + ")";
  return s;
}

[[noreturn]] void cudnn_fail(cudnnStatus_t st, const std::string& step, const char* expr,
                             const char* file, int line) {
  std::string detail = cudnn_last_error();
  fail("cuDNN attention: ", step, " failed with ", status_text(st), detail.empty() ? "" : ": ",
       detail, " [", expr, " at ", file, ":", line, "]");
}

// CUDNN_CHECK(step, call): `step` says what we were doing (any string expression).
#define CUDNN_CHECK(step, call)                                          \
  do {                                                                   \
    cudnnStatus_t st_ = (call);                                          \
    if (st_ != CUDNN_STATUS_SUCCESS)                                     \
      cudnn_fail(st_, (step), #call, __FILE__, __LINE__);                \
  } while (0)

#define CUDA_RT_CHECK(step, call)                                                          \
  do {                                                                                     \
    cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess)                                                                 \
      ::intellect::fail("cuDNN attention: ", (step), " failed with CUDA error ",           \
                        cudaGetErrorName(e_), ": ", cudaGetErrorString(e_), " [", #call,  \
                        " at ", __FILE__, ":", __LINE__, "]");                             \
  } while (0)

// ---------------------------------------------------------------- descriptors

// Owns one backend descriptor.
class Desc {
 public:
  Desc() = default;
  Desc(cudnnBackendDescriptorType_t type, const std::string& what) {
    CUDNN_CHECK("creating the descriptor for " + what, cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() { reset(); }
  Desc(Desc&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  Desc& operator=(Desc&& o) noexcept {
    if (this != &o) {
      reset();
      d_ = o.d_;
      o.d_ = nullptr;
    }
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  void reset() {
    if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
    d_ = nullptr;
  }
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, const char* name_str,
              cudnnBackendAttributeType_t type, int64_t count, const void* values,
              const std::string& what) {
  CUDNN_CHECK("setting " + std::string(name_str) + " of " + what,
              cudnnBackendSetAttribute(d, name, type, count, values));
}
#define SET_ATTR(desc, name, type, count, values, what) \
  set_attr((desc), (name), #name, (type), (count), (values), (what))

void set_desc_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                   const char* name_str, cudnnBackendDescriptor_t value, const std::string& what) {
  set_attr(d, name, name_str, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, what);
}
#define SET_DESC(desc, name, value, what) set_desc_attr((desc), (name), #name, (value), (what))

void finalize(cudnnBackendDescriptor_t d, const std::string& what) {
  CUDNN_CHECK("finalizing " + what, cudnnBackendFinalize(d));
}

std::string dims_text(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << "]";
  return s.str();
}

struct TensorRef {
  cudnnBackendDescriptor_t desc = nullptr;
  int64_t uid = 0;
};

// Per-sequence lengths (int32 [b,1,1,1]) that cut a matmul's M, N or K to each sequence.
struct Overrides {
  const TensorRef *m = nullptr, *n = nullptr, *k = nullptr;
};

// A finalized execution plan and what it needs.
struct Plan {
  Desc plan;
  Desc engine_cfg;
  int64_t workspace = 0;
  std::string info;  // heuristic mode/index, engine global index, cuDNN's finalize mode
};

// Accumulates the tensors and operations of one operation graph (keeps every descriptor
// alive for the lifetime of the plans built from it) and turns it into an execution plan.
class GraphBuilder {
 public:
  explicit GraphBuilder(std::string name) : name_(std::move(name)) {}

  TensorRef tensor(const std::string& tname, cudnnDataType_t dtype, const std::vector<int64_t>& dims,
                   const std::vector<int64_t>& strides, int64_t uid, bool is_virtual,
                   bool by_value = false, const TensorRef* ragged = nullptr) {
    const std::string what = name_ + " tensor '" + tname + "' " + dims_text(dims) + " strides " +
                             dims_text(strides);
    Desc d(CUDNN_BACKEND_TENSOR_DESCRIPTOR, what);
    const int64_t n = static_cast<int64_t>(dims.size());
    const int64_t alignment = 16;
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, what);
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, n, dims.data(), what);
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, n, strides.data(), what);
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, what);
    SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, what);
    if (by_value) SET_ATTR(d.get(), CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, what);
    if (ragged != nullptr) SET_DESC(d.get(), CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged->desc, what);
    finalize(d.get(), what);
    TensorRef r{d.get(), uid};
    owned_.push_back(std::move(d));
    return r;
  }
  // A non-virtual tensor bound to a device pointer at execution time; with `ragged`, each
  // batch entry starts where that ragged-offset tensor says.
  TensorRef io(const std::string& tname, cudnnDataType_t dtype, const std::vector<int64_t>& dims,
               const std::vector<int64_t>& strides, int64_t uid, const TensorRef* ragged = nullptr) {
    return tensor(tname, dtype, dims, strides, uid, false, false, ragged);
  }
  // An intermediate the fused kernel never writes to memory.
  TensorRef virt(const std::string& tname, cudnnDataType_t dtype, const std::vector<int64_t>& dims,
                 const std::vector<int64_t>& strides, const TensorRef* ragged = nullptr) {
    return tensor(tname, dtype, dims, strides, next_virtual_uid_++, true, false, ragged);
  }
  // An fp32 scalar passed by value (its host address goes in the variant pack).
  TensorRef scalar(const std::string& tname, int64_t uid) {
    return tensor(tname, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, uid, false, true);
  }

  // y = mode(x [, b [, t]]); GEN_INDEX takes an axis.
  void pointwise(const std::string& op, cudnnPointwiseMode_t mode, TensorRef x, const TensorRef* b,
                 const TensorRef* t, TensorRef y, cudnnDataType_t math = CUDNN_DATA_FLOAT,
                 int64_t axis = -1) {
    const std::string what = name_ + " pointwise op '" + op + "'";
    Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, what);
    SET_ATTR(pw.get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what);
    SET_ATTR(pw.get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math, what);
    if (axis >= 0) SET_ATTR(pw.get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, what);
    finalize(pw.get(), what + " (pointwise descriptor)");

    Desc o(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw.get(), what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc, what);
    if (b != nullptr) SET_DESC(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc, what);
    if (t != nullptr) SET_DESC(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t->desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc, what);
    const float one = 1.0f;
    SET_ATTR(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, what);
    SET_ATTR(o.get(), CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, what);
    finalize(o.get(), what);
    add_op(std::move(o), std::move(pw));
  }
  void pointwise(const std::string& op, cudnnPointwiseMode_t mode, TensorRef x, TensorRef y) {
    pointwise(op, mode, x, nullptr, nullptr, y);
  }
  void pointwise(const std::string& op, cudnnPointwiseMode_t mode, TensorRef x, TensorRef b,
                 TensorRef y) {
    pointwise(op, mode, x, &b, nullptr, y);
  }

  // c = a·b over the last two dims, batch dims broadcast (a KV head serves its query group).
  void matmul(const std::string& op, TensorRef a, TensorRef b, TensorRef c, Overrides ov = {}) {
    const std::string what = name_ + " matmul '" + op + "'";
    Desc md(CUDNN_BACKEND_MATMUL_DESCRIPTOR, what);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    SET_ATTR(md.get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, what);
    finalize(md.get(), what + " (matmul descriptor)");

    Desc o(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_ADESC, a.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_BDESC, b.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_CDESC, c.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_DESC, md.get(), what);
    if (ov.m != nullptr) SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, ov.m->desc, what);
    if (ov.n != nullptr) SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, ov.n->desc, what);
    if (ov.k != nullptr) SET_DESC(o.get(), CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, ov.k->desc, what);
    finalize(o.get(), what);
    add_op(std::move(o), std::move(md));
  }

  // y = reduce(x) over the dims where y has extent 1 (or a head group).
  void reduction(const std::string& op, cudnnReduceTensorOp_t mode, TensorRef x, TensorRef y) {
    const std::string what = name_ + " reduction '" + op + "'";
    Desc rd(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, what);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    SET_ATTR(rd.get(), CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, what);
    SET_ATTR(rd.get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, what);
    finalize(rd.get(), what + " (reduction descriptor)");

    Desc o(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd.get(), what);
    finalize(o.get(), what);
    add_op(std::move(o), std::move(rd));
  }

  // y = x viewed with other dims/strides (used for the transposes).
  void reshape(const std::string& op, TensorRef x, TensorRef y) {
    const std::string what = name_ + " reshape '" + op + "'";
    Desc o(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x.desc, what);
    SET_DESC(o.get(), CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y.desc, what);
    finalize(o.get(), what);
    add_op(std::move(o), Desc());
  }

  // Top-left aligned causal mask on scores [B,H,Tq,Tkv]: keep (row >= col), else `fill`.
  TensorRef causal_mask(TensorRef scores, TensorRef fill, const std::vector<int64_t>& dims,
                        const std::vector<int64_t>& strides) {
    TensorRef row = virt("row_index", CUDNN_DATA_INT32, dims, strides);
    pointwise("gen_row_index", CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, nullptr, row,
              CUDNN_DATA_FLOAT, 2);
    TensorRef col = virt("col_index", CUDNN_DATA_INT32, dims, strides);
    pointwise("gen_col_index", CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, nullptr, col,
              CUDNN_DATA_FLOAT, 3);
    TensorRef keep = virt("row_ge_col", CUDNN_DATA_BOOLEAN, dims, strides);
    pointwise("row_greater_equal_col", CUDNN_POINTWISE_CMP_GE, row, &col, nullptr, keep,
              CUDNN_DATA_BOOLEAN);
    TensorRef masked = virt("masked_scores", CUDNN_DATA_FLOAT, dims, strides);
    pointwise("causal_select", CUDNN_POINTWISE_BINARY_SELECT, scores, &fill, &keep, masked);
    return masked;
  }

  // Padding mask on scores [b,H,s_q,s_kv] of variable-length sequences: keep
  // (row < seq_len_q[b] and col < seq_len_kv[b]), else `fill`; the frontend's op sequence.
  TensorRef padding_mask(TensorRef scores, TensorRef fill, TensorRef seq_q, TensorRef seq_kv,
                         const std::vector<int64_t>& dims, const std::vector<int64_t>& strides) {
    TensorRef row = virt("row_index_padding", CUDNN_DATA_INT32, dims, strides);
    pointwise("gen_row_idx_padding", CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, nullptr, row,
              CUDNN_DATA_INT32, 2);
    TensorRef col = virt("col_index_padding", CUDNN_DATA_INT32, dims, strides);
    pointwise("gen_col_idx_padding", CUDNN_POINTWISE_GEN_INDEX, scores, nullptr, nullptr, col,
              CUDNN_DATA_INT32, 3);
    TensorRef row_in = virt("row_lt_seq_len_q", CUDNN_DATA_BOOLEAN, dims, strides);
    pointwise("lt_row_sq_padding", CUDNN_POINTWISE_CMP_LT, row, &seq_q, nullptr, row_in, CUDNN_DATA_BOOLEAN);
    TensorRef col_in = virt("col_lt_seq_len_kv", CUDNN_DATA_BOOLEAN, dims, strides);
    pointwise("lt_col_skv_padding", CUDNN_POINTWISE_CMP_LT, col, &seq_kv, nullptr, col_in, CUDNN_DATA_BOOLEAN);
    TensorRef keep = virt("inside_sequence", CUDNN_DATA_BOOLEAN, dims, strides);
    pointwise("and_row_col_padding", CUDNN_POINTWISE_LOGICAL_AND, row_in, &col_in, nullptr, keep,
              CUDNN_DATA_BOOLEAN);
    TensorRef masked = virt("padded_scores", CUDNN_DATA_FLOAT, dims, strides);
    pointwise("select_padding", CUDNN_POINTWISE_BINARY_SELECT, scores, &fill, &keep, masked);
    return masked;
  }

  // Finalizes the operation graph, asks the heuristics (mode A, then the fallback list)
  // for engine configs and keeps the first one whose execution plan finalizes.
  // INTELLECT_SDPA_FWD_CONFIG / INTELLECT_SDPA_BWD_CONFIG = i start mode A's list at
  // config i instead: a measuring knob (scripts/device/routine.sh sdpa-configs), not a
  // setting; the default is what the heuristics rank first.
  Plan build(cudnnHandle_t handle) {
    const char* first_env = std::getenv(name_.find("backward") != std::string::npos ? "INTELLECT_SDPA_BWD_CONFIG"
                                                                                      : "INTELLECT_SDPA_FWD_CONFIG");
    const int64_t first_config = first_env ? std::max<int64_t>(0, std::atoll(first_env)) : 0;
    const std::string what = name_ + " operation graph (" + std::to_string(ops_.size()) + " ops)";
    graph_ = Desc(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, what);
    SET_ATTR(graph_.get(), CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
             static_cast<int64_t>(ops_.size()), ops_.data(), what);
    SET_ATTR(graph_.get(), CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, what);
    finalize(graph_.get(), what);

    std::string failures;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics mode A" : "fallback heuristics";
      const std::string hwhat = name_ + " " + mode_name;
      Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, hwhat);
      SET_DESC(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph_.get(), hwhat);
      SET_ATTR(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, hwhat);
      cudnnStatus_t st = cudnnBackendFinalize(heur.get());
      if (st != CUDNN_STATUS_SUCCESS) {
        failures += "\n  " + std::string(mode_name) + ": finalize failed with " + status_text(st) +
                    ": " + cudnn_last_error();
        continue;
      }
      int64_t count = 0;
      CUDNN_CHECK("counting the engine configs of " + hwhat,
                  cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
      if (count <= 0) {
        failures += "\n  " + std::string(mode_name) + ": no engine configs (" + cudnn_last_error() + ")";
        continue;
      }
      std::vector<Desc> cfgs;
      std::vector<cudnnBackendDescriptor_t> raw;
      for (int64_t i = 0; i < count; ++i) {
        cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, hwhat + " engine config");
        raw.push_back(cfgs.back().get());
      }
      int64_t got = 0;
      CUDNN_CHECK("reading the engine configs of " + hwhat,
                  cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()));
      if (got <= 0)
        failures += "\n  " + std::string(mode_name) + ": no engine configs (" + cudnn_last_error() + ")";
      for (int64_t i = mode == CUDNN_HEUR_MODE_A ? std::min(first_config, got - 1) : 0; i < got && i < count; ++i) {
        const std::string pwhat = name_ + " execution plan (" + mode_name + " config " +
                                  std::to_string(i) + ")";
        Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, pwhat);
        SET_ATTR(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, pwhat);
        SET_DESC(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, raw[i], pwhat);
        st = cudnnBackendFinalize(plan.get());
        if (st != CUDNN_STATUS_SUCCESS) {
          if (i < 8)
            failures += "\n  " + std::string(mode_name) + " config " + std::to_string(i) +
                        ": plan finalize failed with " + status_text(st) + ": " + cudnn_last_error();
          continue;
        }
        Plan p;
        int64_t n = 0;
        CUDNN_CHECK("reading the workspace size of " + pwhat,
                    cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                             CUDNN_TYPE_INT64, 1, &n, &p.workspace));
        p.info = name_ + ": " + mode_name + " config " + std::to_string(i) + " of " +
                 std::to_string(got) + ", engine " + engine_index(raw[i]) + ", workspace " +
                 std::to_string(p.workspace) + " bytes, finalize mode " + plan_mode(plan.get());
        p.plan = std::move(plan);
        p.engine_cfg = std::move(cfgs[static_cast<size_t>(i)]);
        owned_.push_back(std::move(heur));
        return p;
      }
      if (got > 8) failures += "\n  ... (" + std::to_string(got - 8) + " more configs failed)";
    }
    fail("cuDNN attention: no cuDNN engine can run the ", name_,
         " graph (cuDNN ", cudnnGetVersion(), "); tried:", failures);
  }

 private:
  void add_op(Desc op, Desc sub) {
    ops_.push_back(op.get());
    owned_.push_back(std::move(op));
    if (sub.get() != nullptr) owned_.push_back(std::move(sub));
  }

  static std::string engine_index(cudnnBackendDescriptor_t cfg) {
    cudnnBackendDescriptor_t eng = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS)
      return "?";
    std::string out = "?";
    int64_t n = 0, idx = -1;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &n, &eng) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n,
                                 &idx) == CUDNN_STATUS_SUCCESS)
      out = std::to_string(idx);
    cudnnBackendDestroyDescriptor(eng);
    return out;
  }

  // The plan's "finalizeMode" from cuDNN's JSON of it: SDPA_FWD / SDPA_BWD when cuDNN
  // recognised the graph as fused attention. (The JSON itself carries the kernel binaries,
  // hundreds of kB, so we keep only this.)
  static std::string plan_mode(cudnnBackendDescriptor_t plan) {
    int64_t n = 0;
    if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                                 CUDNN_TYPE_CHAR, 0, &n, nullptr) != CUDNN_STATUS_SUCCESS ||
        n <= 0)
      return "?";
    std::string s(static_cast<size_t>(n) + 1, '\0');
    if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                                 CUDNN_TYPE_CHAR, n, &n, s.data()) != CUDNN_STATUS_SUCCESS)
      return "?";
    const std::string key = "\"finalizeMode\":\"";
    const size_t at = s.find(key);
    if (at == std::string::npos) return "?";
    const size_t end = s.find('"', at + key.size());
    return end == std::string::npos ? "?" : s.substr(at + key.size(), end - at - key.size());
  }

  std::string name_;
  std::vector<Desc> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  Desc graph_;
  int64_t next_virtual_uid_ = 1000;
};

// Unique ids of the tensors bound at execution time.
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kScale,
  kNegInf,
  kDO,
  kOne,
  kDQ,
  kDK,
  kDV,
  kSoftmaxSum,
  kDQAccum,
  // packed documents
  kSeqLenQ,
  kSeqLenKV,
  kOffsetQ,  // also dQ's
  kOffsetK,  // also dK's
  kOffsetV,  // also dV's
  kOffsetO,  // also dO's
  kOffsetStats,
};

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
size_t align16(size_t n) { return (n + 15) / 16 * 16; }

template <size_t N>
void execute(cudnnHandle_t handle, const Plan& plan, const std::array<int64_t, N>& uids,
             const std::array<void*, N>& ptrs, void* workspace, const char* what) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, std::string(what) + " variant pack");
  SET_ATTR(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
           static_cast<int64_t>(N), uids.data(), what);
  SET_ATTR(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
           static_cast<int64_t>(N), ptrs.data(), what);
  SET_ATTR(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, what);
  finalize(pack.get(), std::string(what) + " variant pack");
  CUDNN_CHECK(std::string("executing ") + what, cudnnBackendExecute(handle, plan.plan.get(), pack.get()));
}

// The dimensions of one graph: b sequences (the batch entries) of up to s tokens each, in
// the fused activations of row strides QS (qkv, dqkv) and OS (out, dout). Plain attention
// has b = B rows of s = T tokens, a row's sequence starting at row * T. Document graphs
// (ragged) have b = slots for documents of up to s tokens, each starting where the ragged
// offsets say, and token-major stats.
struct Dims {
  int64_t b, s, H, KV, D, QS, OS;
  bool ragged;
};

struct Shapes {
  std::vector<int64_t> q_dim, q_str, kv_dim, kv_str, kt_dim, kt_str, o_dim, o_str, st_dim, st_str,
      stats_str, s_dim, s_str, sT_str, full_dim, full_str, doo_str, seq_dim, seq_str, off_dim;
};

Shapes shapes(const Dims& d) {
  const int64_t b = d.b, s = d.s, H = d.H, KV = d.KV, D = d.D, QS = d.QS, OS = d.OS;
  Shapes x;
  // Views into the fused activations: head h of token i of sequence n is at n*s*QS + i*QS + h*D
  // (a ragged sequence starts at its offset instead of n*s*QS).
  x.q_dim = {b, H, s, D};
  x.q_str = {s * QS, D, QS, 1};
  x.kv_dim = {b, KV, s, D};
  x.kv_str = {s * QS, D, QS, 1};
  x.kt_dim = {b, KV, D, s};  // Kᵀ / Vᵀ views
  x.kt_str = {s * QS, D, 1, QS};
  x.o_dim = {b, H, s, D};
  x.o_str = {s * OS, D, OS, 1};
  x.st_dim = {b, H, s, 1};
  x.st_str = {H * s, s, 1, 1};
  x.stats_str = d.ragged ? std::vector<int64_t>{H * s, 1, H, 1} : x.st_str;  // token-major when ragged
  x.s_dim = {b, H, s, s};
  x.s_str = {H * s * s, s * s, s, 1};
  x.sT_str = {H * s * s, s * s, 1, s};  // [b,H,s_kv,s_q] view of [b,H,s_q,s_kv]
  x.full_dim = {b, H, s, D};
  x.full_str = {H * s * D, s * D, D, 1};
  x.doo_str = {H * s * D, s * D, H * D, 1};
  x.seq_dim = {b, 1, 1, 1};
  x.seq_str = {1, 1, 1, 1};
  x.off_dim = {b + 1, 1, 1, 1};
  return x;
}

// The extra inputs of a document graph: per-sequence lengths and ragged offsets.
struct Ragged {
  TensorRef seq_q, seq_kv, off_q, off_k, off_v, off_o, off_stats;
};

Ragged ragged_inputs(GraphBuilder& g, const Shapes& x) {
  Ragged r;
  r.seq_q = g.io("seq_len_q", CUDNN_DATA_INT32, x.seq_dim, x.seq_str, kSeqLenQ);
  r.seq_kv = g.io("seq_len_kv", CUDNN_DATA_INT32, x.seq_dim, x.seq_str, kSeqLenKV);
  r.off_q = g.io("ragged_offset_q", CUDNN_DATA_INT64, x.off_dim, x.seq_str, kOffsetQ);
  r.off_k = g.io("ragged_offset_k", CUDNN_DATA_INT64, x.off_dim, x.seq_str, kOffsetK);
  r.off_v = g.io("ragged_offset_v", CUDNN_DATA_INT64, x.off_dim, x.seq_str, kOffsetV);
  r.off_o = g.io("ragged_offset_o", CUDNN_DATA_INT64, x.off_dim, x.seq_str, kOffsetO);
  r.off_stats = g.io("ragged_offset_stats", CUDNN_DATA_INT64, x.off_dim, x.seq_str, kOffsetStats);
  return r;
}

// forward:  S = Q·Kᵀ → S·scale → [padding mask] → causal mask → softmax with stats → O = P·V
Plan build_forward(GraphBuilder& g, const Dims& d, cudnnHandle_t handle) {
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  const Shapes x = shapes(d);
  Ragged r{};
  if (d.ragged) r = ragged_inputs(g, x);
  auto rag = [&](const TensorRef& t) { return d.ragged ? &t : nullptr; };
  TensorRef q = g.io("Q", bf16, x.q_dim, x.q_str, kQ, rag(r.off_q));
  TensorRef kt = g.io("K^T", bf16, x.kt_dim, x.kt_str, kK, rag(r.off_k));
  TensorRef v = g.io("V", bf16, x.kv_dim, x.kv_str, kV, rag(r.off_v));
  TensorRef o = g.io("O", bf16, x.o_dim, x.o_str, kO, rag(r.off_o));
  TensorRef stats = g.io("Stats", f32, x.st_dim, x.stats_str, kStats, rag(r.off_stats));
  TensorRef scale = g.scalar("attn_scale", kScale);
  TensorRef neg_inf = g.scalar("neg_inf", kNegInf);
  // Documents: Q·Kᵀ is seq_len_q × seq_len_kv, P·V sums over seq_len_kv.
  const Overrides qk = d.ragged ? Overrides{&r.seq_q, &r.seq_kv, nullptr} : Overrides{};
  const Overrides pv = d.ragged ? Overrides{&r.seq_q, nullptr, &r.seq_kv} : Overrides{};

  TensorRef s = g.virt("S", f32, x.s_dim, x.s_str);
  g.matmul("bmm1 Q*K^T", q, kt, s, qk);
  TensorRef ss = g.virt("S*scale", f32, x.s_dim, x.s_str);
  g.pointwise("attn_scale", CUDNN_POINTWISE_MUL, s, scale, ss);
  if (d.ragged) ss = g.padding_mask(ss, neg_inf, r.seq_q, r.seq_kv, x.s_dim, x.s_str);
  TensorRef sm = g.causal_mask(ss, neg_inf, x.s_dim, x.s_str);

  TensorRef mx = g.virt("row_max", f32, x.st_dim, x.st_str);
  g.reduction("softmax max", CUDNN_REDUCE_TENSOR_MAX, sm, mx);
  TensorRef sub = g.virt("S-max", f32, x.s_dim, x.s_str);
  g.pointwise("softmax sub", CUDNN_POINTWISE_SUB, sm, mx, sub);
  TensorRef ex = g.virt("exp(S-max)", f32, x.s_dim, x.s_str);
  g.pointwise("softmax exp", CUDNN_POINTWISE_EXP, sub, ex);
  TensorRef sum = g.virt("row_sum", f32, x.st_dim, x.st_str);
  g.reduction("softmax sum", CUDNN_REDUCE_TENSOR_ADD, ex, sum);
  TensorRef lg = g.virt("log(row_sum)", f32, x.st_dim, x.st_str);
  g.pointwise("softmax log", CUDNN_POINTWISE_LOG, sum, lg);
  g.pointwise("softmax stats", CUDNN_POINTWISE_ADD, mx, lg, stats);
  TensorRef p = g.virt("P", bf16, x.s_dim, x.s_str);
  g.pointwise("softmax div", CUDNN_POINTWISE_DIV, ex, sum, p);
  g.matmul("bmm2 P*V", p, v, o, pv);
  return g.build(handle);
}

// backward: Σ = rowsum(dO∘O); P = exp(mask(Q·Kᵀ·scale) − stats); dV = Σ_heads Pᵀ·dO;
//           dS = P∘(dO·Vᵀ − Σ)·scale; dK = Σ_heads dSᵀ·Q; dQ = dS·K via the fp32 accumulator.
Plan build_backward(GraphBuilder& g, const Dims& d, cudnnHandle_t handle) {
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  const Shapes x = shapes(d);
  Ragged r{};
  if (d.ragged) r = ragged_inputs(g, x);
  auto rag = [&](const TensorRef& t) { return d.ragged ? &t : nullptr; };
  // Which lengths bound each product's M, N, K (documents only).
  auto ov = [&](const TensorRef* m, const TensorRef* n, const TensorRef* k) {
    return d.ragged ? Overrides{m, n, k} : Overrides{};
  };
  TensorRef q = g.io("Q", bf16, x.q_dim, x.q_str, kQ, rag(r.off_q));
  TensorRef kt = g.io("K^T", bf16, x.kt_dim, x.kt_str, kK, rag(r.off_k));
  TensorRef vt = g.io("V^T", bf16, x.kt_dim, x.kt_str, kV, rag(r.off_v));
  TensorRef o = g.io("O", bf16, x.o_dim, x.o_str, kO, rag(r.off_o));
  TensorRef dout = g.io("dO", bf16, x.o_dim, x.o_str, kDO, rag(r.off_o));
  TensorRef stats = g.io("Stats", f32, x.st_dim, x.stats_str, kStats, rag(r.off_stats));
  TensorRef scale = g.scalar("attn_scale", kScale);
  TensorRef neg_inf = g.scalar("neg_inf", kNegInf);
  TensorRef one = g.scalar("one", kOne);
  TensorRef dq = g.io("dQ", bf16, x.q_dim, x.q_str, kDQ, rag(r.off_q));
  TensorRef dk = g.io("dK", bf16, x.kv_dim, x.kv_str, kDK, rag(r.off_k));
  TensorRef dv = g.io("dV", bf16, x.kv_dim, x.kv_str, kDV, rag(r.off_v));
  TensorRef softmax_sum = g.io("softmax_sum", f32, x.st_dim, x.st_str, kSoftmaxSum);
  TensorRef dq_accum = g.io("dQ_accum", f32, x.full_dim, x.full_str, kDQAccum);
  const TensorRef *sq = &r.seq_q, *skv = &r.seq_kv;

  // softmax_sum = rowsum(dO ∘ O)
  TensorRef doo = g.virt("dO*O", f32, x.full_dim, x.doo_str);
  g.pointwise("mul_dO_O", CUDNN_POINTWISE_MUL, dout, o, doo);
  TensorRef doo_sum = g.virt("rowsum(dO*O)", f32, x.st_dim, x.st_str);
  g.reduction("reduce_dO_O", CUDNN_REDUCE_TENSOR_ADD, doo, doo_sum);
  g.pointwise("scale_dropout_inv", CUDNN_POINTWISE_MUL, doo_sum, one, softmax_sum);

  // P = exp(mask(Q·Kᵀ·scale) − stats)
  TensorRef s = g.virt("S", f32, x.s_dim, x.s_str);
  g.matmul("matmul_Q_KT", q, kt, s, ov(sq, skv, nullptr));
  TensorRef ss = g.virt("S*scale", f32, x.s_dim, x.s_str);
  g.pointwise("mul_s_attn_scale", CUDNN_POINTWISE_MUL, s, scale, ss);
  if (d.ragged) ss = g.padding_mask(ss, neg_inf, r.seq_q, r.seq_kv, x.s_dim, x.s_str);
  TensorRef sm = g.virt("S-stats", f32, x.s_dim, x.s_str);
  g.pointwise("sub_s_m", CUDNN_POINTWISE_SUB, ss, stats, sm);
  TensorRef masked = g.causal_mask(sm, neg_inf, x.s_dim, x.s_str);
  TensorRef p = g.virt("P", f32, x.s_dim, x.s_str);
  g.pointwise("exp_s", CUDNN_POINTWISE_EXP, masked, p);

  // dV = Σ_group Pᵀ·dO
  TensorRef pt = g.virt("P^T", bf16, x.s_dim, x.sT_str);
  g.reshape("reshape_p", p, pt);
  if (d.H == d.KV) {
    g.matmul("matmul_pT_dO", pt, dout, dv, ov(skv, nullptr, sq));
  } else {
    TensorRef dv_full = g.virt("dV_fullhead", bf16, x.full_dim, x.full_str);
    g.matmul("matmul_pT_dO", pt, dout, dv_full, ov(skv, nullptr, sq));
    g.reduction("red_dV_head", CUDNN_REDUCE_TENSOR_ADD, dv_full, dv);
  }

  // dS = P ∘ (dO·Vᵀ − softmax_sum) · scale
  TensorRef dp = g.virt("dP", f32, x.s_dim, x.s_str);
  g.matmul("matmul_dO_VT", dout, vt, dp, ov(sq, skv, nullptr));
  TensorRef dp_sub = g.virt("dP-softmax_sum", f32, x.s_dim, x.s_str);
  g.pointwise("sub_dP_softmax_sum", CUDNN_POINTWISE_SUB, dp, softmax_sum, dp_sub);
  TensorRef ds = g.virt("dS", f32, x.s_dim, x.s_str);
  g.pointwise("mul_dP_exp_s", CUDNN_POINTWISE_MUL, dp_sub, p, ds);
  TensorRef ds_scaled = g.virt("dS*scale", f32, x.s_dim, x.s_str);
  g.pointwise("mul_dS_attn_scale", CUDNN_POINTWISE_MUL, ds, scale, ds_scaled);

  // dK = Σ_group dSᵀ·Q
  TensorRef dst = g.virt("dS^T", bf16, x.s_dim, x.sT_str);
  g.reshape("reshape_dS", ds_scaled, dst);
  if (d.H == d.KV) {
    g.matmul("matmul_dST_Q", dst, q, dk, ov(skv, nullptr, sq));
  } else {
    TensorRef dk_full = g.virt("dK_fullhead", bf16, x.full_dim, x.full_str);
    g.matmul("matmul_dST_Q", dst, q, dk_full, ov(skv, nullptr, sq));
    g.reduction("red_dK_head", CUDNN_REDUCE_TENSOR_ADD, dk_full, dk);
  }

  // dQ = dS·K, accumulated in fp32 in the workspace, then converted.
  TensorRef k = g.virt("K", f32, x.kv_dim, x.kv_str, rag(r.off_k));
  g.reshape("reshape_k", kt, k);
  g.matmul("matmul_dS_K", ds_scaled, k, dq_accum, ov(sq, nullptr, skv));
  g.pointwise("identity_dQ", CUDNN_POINTWISE_IDENTITY, dq_accum, dq);
  return g.build(handle);
}

// A pair of plans and what their backward needs in the workspace besides the plan's own.
struct PlanPair {
  GraphBuilder fwd_graph, bwd_graph;  // declared before the plans: destroyed after them
  Plan fwd, bwd;
  size_t bwd_plan_ws = 0, softmax_sum_bytes = 0, dq_accum_bytes = 0;

  explicit PlanPair(const std::string& name) : fwd_graph(name + " forward"), bwd_graph(name + " backward") {}
  void build(const Dims& d, cudnnHandle_t handle) {
    fwd = build_forward(fwd_graph, d, handle);
    bwd = build_backward(bwd_graph, d, handle);
    bwd_plan_ws = align_up(static_cast<size_t>(bwd.workspace));
    softmax_sum_bytes = align_up(static_cast<size_t>(d.b * d.H * d.s) * sizeof(float));
    dq_accum_bytes = align_up(static_cast<size_t>(d.b * d.H * d.s * d.D) * sizeof(float));
  }
  size_t workspace_bytes() const {
    return std::max(align_up(static_cast<size_t>(fwd.workspace)),
                    bwd_plan_ws + softmax_sum_bytes + dq_accum_bytes);
  }
};

// A document family: plans for up to `cap` documents of up to `s` tokens per call.
struct Family {
  int64_t s = 0, cap = 0;
  PlanPair plans;
  // One call's arrays: seq_len (int32 [cap]), then ragged offsets (int64 [cap+1]) of
  // q/k/v/dq/dk/dv, of o/do and of the stats, each 16-byte aligned.
  size_t seq_bytes = 0, off_bytes = 0;
  int64_t max_calls = 0;  // for any segments of B*T tokens (set once all families are known)
  Family(int64_t s_, int64_t cap_) : s(s_), cap(cap_), plans("documents s=" + std::to_string(s_)) {
    seq_bytes = align16(static_cast<size_t>(cap) * sizeof(int32_t));
    off_bytes = align16(static_cast<size_t>(cap + 1) * sizeof(int64_t));
  }
  size_t call_bytes() const { return seq_bytes + 3 * off_bytes; }
};

// The smallest family's s: documents of up to this many tokens all go to it (one
// query tile each), rather than to ever more families of ever more slots.
constexpr int64_t kSmallestFamily = 32;

}  // namespace

struct CudnnAttention::Impl {
  cpu::AttentionShape s{};
  cudaStream_t stream = nullptr;
  cudnnHandle_t handle = nullptr;
  int runtime_version = 0;
  // Pass-by-value scalars: cuDNN reads them from these host addresses at execute time.
  float scale = 1.0f;
  float neg_inf = std::numeric_limits<float>::lowest();
  float one = 1.0f;
  // Declared after the handle-holding members so they are destroyed before it.
  std::unique_ptr<PlanPair> plain;
  // Packed documents: families by decreasing s; the calls of the last scheduled batch.
  std::vector<std::unique_ptr<Family>> families;
  bool documents = false;
  std::string documents_error, documents_notes;
  size_t document_bytes = 0;
  struct Call {
    size_t family, offset;
  };
  std::vector<Call> calls;
  std::vector<std::vector<int64_t>> members;  // per family: the scheduled segments

  ~Impl() {
    plain.reset();
    families.clear();
    if (handle != nullptr) cudnnDestroy(handle);
  }

  Dims dims(int64_t b, int64_t seq, bool ragged) const {
    return {b, seq, s.n_heads, s.n_kv_heads, s.head_dim, s.qkv_stride(), s.out_stride(), ragged};
  }
  void build_families();
};

bool CudnnAttention::available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return cudnnGetVersion() >= 90000;
}

CudnnAttention::CudnnAttention(const cpu::AttentionShape& shape, cudaStream_t stream, bool documents)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.s = shape;
  m.stream = stream;
  const int64_t B = shape.B, T = shape.T, H = shape.n_heads, KV = shape.n_kv_heads,
                D = shape.head_dim;
  if (B <= 0 || T <= 0 || H <= 0 || KV <= 0 || D <= 0)
    fail("cuDNN attention: bad shape B=", B, " T=", T, " n_heads=", H, " n_kv_heads=", KV,
         " head_dim=", D, " (all must be positive)");
  if (H % KV != 0)
    fail("cuDNN attention: n_heads (", H, ") must be a multiple of n_kv_heads (", KV, ")");
  if (D % 8 != 0)
    fail("cuDNN attention: head_dim ", D, " must be a multiple of 8 for cuDNN's fused attention");

  m.runtime_version = static_cast<int>(cudnnGetVersion());
  if (m.runtime_version < 90000)
    fail("cuDNN attention: cuDNN ", m.runtime_version, " found at run time; need cuDNN 9");
  // Before 9.16 the fused backward needed an explicit padding mask when T % 128 != 0
  // (the cuDNN frontend adds one as a workaround); we only build the plain graph.
  if (m.runtime_version < 91600 && T % 128 != 0)
    fail("cuDNN attention: cuDNN ", m.runtime_version,
         " needs T to be a multiple of 128 for the fused backward (T=", T,
         "); use cuDNN >= 9.16 or the fallback attention kernels");

  CUDNN_CHECK("creating the cuDNN handle (is a GPU visible?)", cudnnCreate(&m.handle));
  CUDNN_CHECK("binding the cuDNN handle to the stream", cudnnSetStream(m.handle, stream));
  m.scale = 1.0f / std::sqrt(static_cast<float>(D));

  m.plain = std::make_unique<PlanPair>("plain");
  m.plain->build(m.dims(B, T, false), m.handle);

  m.documents = false;
  if (documents) {
    try {
      m.build_families();
      m.documents = true;
    } catch (const Error& e) {
      m.families.clear();
      m.documents_error = e.what();
    }
  }
}

// Families s = T, T/4, … (≥ kSmallestFamily), cap = B*T / s documents per call. Each needs
// runtime ragged GQA support and token-major ragged stats, both cuDNN 9.6.
void CudnnAttention::Impl::build_families() {
  if (runtime_version < 90600)
    fail("cuDNN attention: cuDNN ", runtime_version,
         " found at run time; packed-document attention (ragged SDPA with grouped-query heads and "
         "token-major stats) needs cuDNN >= 9.6");
  const int64_t T = s.T, N = s.B * s.T;
  std::vector<int64_t> sizes{T};
  while ((sizes.back() + 3) / 4 >= kSmallestFamily) sizes.push_back((sizes.back() + 3) / 4);
  for (const int64_t seq : sizes) {
    auto f = std::make_unique<Family>(seq, std::max<int64_t>(1, N / seq));
    try {
      f->plans.build(dims(f->cap, seq, true), handle);
    } catch (const Error& e) {
      if (seq == T) throw;  // documents as long as a row have nowhere else to go
      documents_notes += "\n  documents s=" + std::to_string(seq) +
                         " left out (its documents go to the next larger family): " + e.what();
      continue;
    }
    families.push_back(std::move(f));
  }
  // The most calls each family can need: its documents are longer than the next smaller
  // family's s (or ≥ 1 token for the smallest), and at most B*T tokens of them.
  size_t max_calls = 0;
  for (size_t i = 0; i < families.size(); ++i) {
    Family& f = *families[i];
    const int64_t shorter = i + 1 < families.size() ? families[i + 1]->s : 0;
    const int64_t most = N / (shorter + 1);
    f.max_calls = (most + f.cap - 1) / f.cap;
    document_bytes += static_cast<size_t>(f.max_calls) * f.call_bytes();
    max_calls += static_cast<size_t>(f.max_calls);
  }
  calls.reserve(max_calls);
  members.resize(families.size());
  for (size_t i = 0; i < families.size(); ++i) members[i].reserve(static_cast<size_t>(families[i]->max_calls * families[i]->cap));
}

CudnnAttention::~CudnnAttention() = default;

size_t CudnnAttention::workspace_bytes() const {
  const Impl& m = *impl_;
  size_t bytes = m.plain->workspace_bytes();
  for (const auto& f : m.families) bytes = std::max(bytes, f->plans.workspace_bytes());
  return bytes;
}

void CudnnAttention::forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv,
                             void* workspace) {
  Impl& m = *impl_;
  const int64_t H = m.s.n_heads, KV = m.s.n_kv_heads, D = m.s.head_dim;
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  const std::array<int64_t, 7> uids{kQ, kK, kV, kO, kStats, kScale, kNegInf};
  const std::array<void*, 7> ptrs{base, base + H * D, base + (H + KV) * D, out, lse, &m.scale,
                                  &m.neg_inf};
  execute(m.handle, m.plain->fwd, uids, ptrs, workspace, "the forward plan");
}

void CudnnAttention::backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                              const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                              void* workspace) {
  Impl& m = *impl_;
  const PlanPair& p = *m.plain;
  const int64_t H = m.s.n_heads, KV = m.s.n_kv_heads, D = m.s.head_dim;
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  char* ws = static_cast<char*>(workspace);
  void* softmax_sum = ws + p.bwd_plan_ws;
  void* dq_accum = ws + p.bwd_plan_ws + p.softmax_sum_bytes;
  // cuDNN < 9.6 expected the caller to zero the fp32 dQ accumulator (the frontend did).
  if (m.runtime_version < 90600)
    CUDA_RT_CHECK("zeroing the dQ accumulator",
                  cudaMemsetAsync(dq_accum, 0, p.dq_accum_bytes, m.stream));
  const std::array<int64_t, 14> uids{kQ,     kK,    kV,  kO,  kDO, kStats,      kScale,
                                     kNegInf, kOne, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum};
  const std::array<void*, 14> ptrs{base,
                                   base + H * D,
                                   base + (H + KV) * D,
                                   const_cast<__nv_bfloat16*>(out),
                                   const_cast<__nv_bfloat16*>(dout),
                                   const_cast<float*>(lse),
                                   &m.scale,
                                   &m.neg_inf,
                                   &m.one,
                                   dqkv,
                                   dqkv + H * D,
                                   dqkv + (H + KV) * D,
                                   softmax_sum,
                                   dq_accum};
  execute(m.handle, p.bwd, uids, ptrs, ws, "the backward plan");
}

bool CudnnAttention::documents_ready() const { return impl_->documents; }
const std::string& CudnnAttention::documents_error() const { return impl_->documents_error; }
size_t CudnnAttention::document_bytes() const { return impl_->document_bytes; }

size_t CudnnAttention::schedule_documents(const int32_t* cu_seqlens, int64_t n_segments, void* host_bytes) {
  Impl& m = *impl_;
  if (!m.documents)
    fail("cuDNN attention: documents scheduled but the document plans are not built (",
         m.documents_error.empty() ? "constructed without documents" : m.documents_error, ")");
  if (cu_seqlens[n_segments] > m.s.B * m.s.T)
    fail("cuDNN attention: the segments cover ", cu_seqlens[n_segments], " tokens, more than the ",
         m.s.B * m.s.T, " the plans were built for");
  const size_t F = m.families.size();
  for (auto& v : m.members) v.clear();
  m.calls.clear();
  // The smallest family that fits each document (families are by decreasing s).
  for (int64_t k = 0; k < n_segments; ++k) {
    const int64_t len = cu_seqlens[k + 1] - cu_seqlens[k];
    size_t f = F - 1;
    while (m.families[f]->s < len) --f;  // the first family has s = T ≥ any segment
    m.members[f].push_back(k);
  }
  const int64_t QS = m.s.qkv_stride(), OS = m.s.out_stride(), H = m.s.n_heads;
  char* bytes = static_cast<char*>(host_bytes);
  size_t offset = 0;
  for (size_t f = 0; f < F; ++f) {
    const Family& fam = *m.families[f];
    const std::vector<int64_t>& docs = m.members[f];
    for (size_t first = 0; first < docs.size(); first += static_cast<size_t>(fam.cap)) {
      const size_t used = std::min(docs.size() - first, static_cast<size_t>(fam.cap));
      char* at = bytes + offset;
      auto* seq_len = reinterpret_cast<int32_t*>(at);
      auto* off_qkv = reinterpret_cast<int64_t*>(at + fam.seq_bytes);
      auto* off_o = reinterpret_cast<int64_t*>(at + fam.seq_bytes + fam.off_bytes);
      auto* off_stats = reinterpret_cast<int64_t*>(at + fam.seq_bytes + 2 * fam.off_bytes);
      // Unused slots are empty sequences placed where the last document ends, so the
      // offsets never decrease and each slot's span [offset[i], offset[i+1]) holds it.
      int64_t end = 0;
      for (int64_t i = 0; i <= fam.cap; ++i) {
        int64_t start = end, len = 0;
        if (static_cast<size_t>(i) < used) {
          const int64_t k = docs[first + static_cast<size_t>(i)];
          start = cu_seqlens[k];
          len = cu_seqlens[k + 1] - start;
          end = start + len;
        }
        if (i < fam.cap) seq_len[i] = static_cast<int32_t>(len);
        off_qkv[i] = start * QS;
        off_o[i] = start * OS;
        off_stats[i] = start * H;
      }
      m.calls.push_back({f, offset});
      offset += fam.call_bytes();
    }
  }
  return offset;
}

void CudnnAttention::forward_documents(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv,
                                       const void* device_bytes, void* workspace) {
  Impl& m = *impl_;
  const int64_t H = m.s.n_heads, KV = m.s.n_kv_heads, D = m.s.head_dim;
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  for (const Impl::Call& c : m.calls) {
    const Family& fam = *m.families[c.family];
    char* at = const_cast<char*>(static_cast<const char*>(device_bytes)) + c.offset;
    void *seq_len = at, *off_qkv = at + fam.seq_bytes, *off_o = at + fam.seq_bytes + fam.off_bytes,
         *off_stats = at + fam.seq_bytes + 2 * fam.off_bytes;
    const std::array<int64_t, 14> uids{kQ,       kK,        kV,       kO,       kStats,   kScale,   kNegInf,
                                       kSeqLenQ, kSeqLenKV, kOffsetQ, kOffsetK, kOffsetV, kOffsetO, kOffsetStats};
    const std::array<void*, 14> ptrs{base,    base + H * D, base + (H + KV) * D, out,     lse,
                                     &m.scale, &m.neg_inf,  seq_len,             seq_len, off_qkv,
                                     off_qkv, off_qkv,      off_o,               off_stats};
    execute(m.handle, fam.plans.fwd, uids, ptrs, workspace, "the document forward plan");
  }
}

void CudnnAttention::backward_documents(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                                        const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                                        const float* lse, const void* device_bytes, void* workspace) {
  Impl& m = *impl_;
  const int64_t H = m.s.n_heads, KV = m.s.n_kv_heads, D = m.s.head_dim;
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  char* ws = static_cast<char*>(workspace);
  for (const Impl::Call& c : m.calls) {
    const Family& fam = *m.families[c.family];
    const PlanPair& p = fam.plans;
    char* at = const_cast<char*>(static_cast<const char*>(device_bytes)) + c.offset;
    void *seq_len = at, *off_qkv = at + fam.seq_bytes, *off_o = at + fam.seq_bytes + fam.off_bytes,
         *off_stats = at + fam.seq_bytes + 2 * fam.off_bytes;
    void* softmax_sum = ws + p.bwd_plan_ws;
    void* dq_accum = ws + p.bwd_plan_ws + p.softmax_sum_bytes;
    const std::array<int64_t, 21> uids{kQ,          kK,       kV,       kO,        kDO,      kStats,   kScale,
                                       kNegInf,     kOne,     kDQ,      kDK,       kDV,      kSoftmaxSum,
                                       kDQAccum,    kSeqLenQ, kSeqLenKV, kOffsetQ, kOffsetK, kOffsetV,
                                       kOffsetO,    kOffsetStats};
    const std::array<void*, 21> ptrs{base,
                                     base + H * D,
                                     base + (H + KV) * D,
                                     const_cast<__nv_bfloat16*>(out),
                                     const_cast<__nv_bfloat16*>(dout),
                                     const_cast<float*>(lse),
                                     &m.scale,
                                     &m.neg_inf,
                                     &m.one,
                                     dqkv,
                                     dqkv + H * D,
                                     dqkv + (H + KV) * D,
                                     softmax_sum,
                                     dq_accum,
                                     seq_len,
                                     seq_len,
                                     off_qkv,
                                     off_qkv,
                                     off_qkv,
                                     off_o,
                                     off_stats};
    execute(m.handle, p.bwd, uids, ptrs, ws, "the document backward plan");
  }
}

std::string CudnnAttention::describe() const {
  const Impl& m = *impl_;
  const PlanPair& p = *m.plain;
  std::ostringstream s;
  s << "cuDNN " << m.runtime_version << " (built against " << CUDNN_VERSION << "), B=" << m.s.B
    << " T=" << m.s.T << " H=" << m.s.n_heads << " KV=" << m.s.n_kv_heads << " hd=" << m.s.head_dim
    << ", workspace " << workspace_bytes() << " bytes\n"
    << "  " << p.fwd.info << "\n"
    << "  " << p.bwd.info << " (+ softmax_sum " << p.softmax_sum_bytes << " + dQ_accum "
    << p.dq_accum_bytes << " bytes)";
  for (const auto& f : m.families)
    s << "\n  documents up to " << f->s << " tokens, " << f->cap << " per call:\n    " << f->plans.fwd.info
      << "\n    " << f->plans.bwd.info;
  if (!m.documents_error.empty()) s << "\n  packed documents unavailable: " << m.documents_error;
  s << m.documents_notes;
  return s.str();
}

}  // namespace intellect::cuda
