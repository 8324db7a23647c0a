// Conversion between training checkpoints (checkpoint.h) and HuggingFace
// LlamaForCausalLM directories, the library behind tools/ckpt_convert.
//
// Export writes what `transformers.AutoModelForCausalLM.from_pretrained` reads:
// config.json, generation_config.json, the weights (one model.safetensors, or
// model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json,
// split the way transformers' save_pretrained splits them) and the run's
// tokenizer files. The directory appears whole or not at all: it is written
// as <out>.partial and renamed at the end.
//
// Import reads any HF Llama directory load_hf_model reads and writes it as a
// weights-only checkpoint, which a run can start from.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint.h"
#include "model/config.h"

namespace intellect {

enum class HfDtype { F32, BF16 };

// "5GB" (10^9), "500MB", "1.5GiB" (2^30), "64KiB", "123" or "123B" (bytes), as
// transformers' max_shard_size reads them. Units are case-insensitive. fail()
// names `what` (e.g. "--shard-size") when the text is not a positive size.
uint64_t parse_byte_size(const std::string& text, const std::string& what);
// "4.66 GiB" for progress lines.
std::string format_bytes(uint64_t bytes);

// The config.json transformers needs for LlamaForCausalLM (torch_dtype from `dtype`).
nlohmann::json hf_config_json(const ModelConfig& cfg, HfDtype dtype);
// generation_config.json: the BOS/EOS ids (those that are set) and greedy decoding.
nlohmann::json hf_generation_config_json(const ModelConfig& cfg);

// One output weights file and the HF tensors (indices into hf_tensor_map) it holds.
struct HfShard {
  std::string file;
  std::vector<size_t> tensors;
  uint64_t bytes = 0;  // tensor data only, as the index's total_size counts it
};
// transformers' rule: tensors in order, a new shard when adding the next one
// would pass `shard_size` (a tensor larger than that gets a shard to itself).
// One shard is named model.safetensors; several model-%05d-of-%05d.safetensors.
std::vector<HfShard> plan_hf_shards(const ModelConfig& cfg, HfDtype dtype, uint64_t shard_size);

struct HfExportOptions {
  HfDtype dtype = HfDtype::BF16;
  uint64_t shard_size = 5'000'000'000;  // "5GB", transformers' default
  bool force = false;                   // replace an existing non-empty output directory
  // Progress and notices (one line each, no newline); null = quiet.
  std::function<void(const std::string&)> log;
};

struct HfExportResult {
  std::string checkpoint;          // the step directory that was read
  int64_t step = 0;
  std::vector<std::string> files;  // written into the output directory, in order
  size_t tensors = 0;
  uint64_t weight_bytes = 0;
};

// Writes config.json, generation_config.json and the weights of `params` (flat,
// ParamLayout(cfg)) into the existing directory `dir`. Returns the file names.
std::vector<std::string> write_hf_weights(const std::string& dir, const ModelConfig& cfg,
                                          const std::vector<float>& params,
                                          const HfExportOptions& opt);

// Reads a checkpoint's weights (read_checkpoint without the optimizer) from a
// step directory, or from a checkpoint root: the newest step that reads back
// cleanly (find_newest_checkpoint without the optimizer), each one skipped
// reported through `log`.
struct ExportSource {
  std::string dir;  // the step directory
  CheckpointState state;
};
ExportSource read_checkpoint_for_export(const std::string& path,
                                        const std::function<void(const std::string&)>& log);

// `ckpt_convert export`: reads the checkpoint (weights only) and writes the HF
// directory `out_dir` atomically, with the checkpoint's tokenizer/ files.
HfExportResult export_checkpoint_to_hf(const std::string& ckpt, const std::string& out_dir,
                                       const HfExportOptions& opt);

// Tokenizer files transformers and our loaders look for; import copies those
// present in the HF directory into the checkpoint.
const std::vector<std::string>& hf_tokenizer_file_names();

// `ckpt_convert import`: load_hf_model(hf_dir), checked to be a config the
// trainer accepts, written as a weights-only checkpoint of `step` under `root`.
// Returns the step directory.
std::string import_hf_to_checkpoint(const std::string& hf_dir, const std::string& root, int64_t step,
                                    const std::function<void(const std::string&)>& log = nullptr);

}  // namespace intellect
