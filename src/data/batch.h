// One micro-batch as the loader hands it to the trainer: packed token rows
// plus where documents begin inside them.
#pragma once
#include <cstdint>
#include <vector>

namespace intellect {

struct Batch {
  int64_t rows = 0, seq_len = 0;

  // Row-major [rows, seq_len]. targets[b][t] is the token after inputs[b][t]:
  // each row is one window of seq_len + 1 consecutive tokens of one dataset.
  std::vector<int32_t> inputs, targets;

  // Document segments in the flattened [rows * seq_len] token order, in the
  // cu_seqlens form variable-length attention kernels take (flash-attn's
  // varlen API, cuDNN's ragged offsets): segment i is tokens
  // [cu_seqlens[i], cu_seqlens[i+1]); the first entry is 0 and the last is
  // rows * seq_len. A segment starts at the first token of every row (rows
  // never attend to each other) and at every input token equal to the
  // model's BOS id, so with BOS…EOS documents each segment is one document or
  // the part of one that falls in the row. Without a BOS id (bos_id = -1)
  // each row is one segment. A kernel masking per document lets a query at
  // flat index i attend to keys j with seg_start(i) <= j <= i.
  std::vector<int32_t> cu_seqlens;
  int32_t max_seqlen = 0;  // longest segment, which kernels size their tiles by

  // Index (into the loader's dataset list) of the dataset each row came from.
  std::vector<int32_t> sources;
};

}  // namespace intellect
