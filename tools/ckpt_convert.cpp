// ckpt_convert: training checkpoints <-> HuggingFace LlamaForCausalLM directories.
//   ckpt_convert export --ckpt DIR --out HFDIR [--dtype bf16|fp32] [--shard-size 5GB] [--force]
//   ckpt_convert import --hf HFDIR --out DIR [--step N]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ckpt/hf_export.h"
#include "util/error.h"

namespace {

void usage(FILE* f) {
  std::fprintf(
      f,
      "usage: ckpt_convert export --ckpt DIR --out HFDIR [--dtype bf16|fp32] [--shard-size SIZE] [--force]\n"
      "       ckpt_convert import --hf HFDIR --out DIR [--step N]\n"
      "\n"
      "export  writes a checkpoint as a HuggingFace LlamaForCausalLM directory (config.json,\n"
      "        generation_config.json, safetensors weights, the run's tokenizer files).\n"
      "  --ckpt DIR        a step directory (ckpt/step_00001200) or a checkpoint root (the\n"
      "                    newest checkpoint that validates is used)\n"
      "  --out HFDIR       written as HFDIR.partial, renamed when complete\n"
      "  --dtype           bf16 (default) or fp32 (bit-exact)\n"
      "  --shard-size      largest weights file, e.g. 5GB (default), 500MB, 1.5GiB or bytes;\n"
      "                    more than one file gets model.safetensors.index.json\n"
      "  --force           replace HFDIR when it exists and is not empty\n"
      "import  writes a HuggingFace Llama directory (single-file or sharded; F32, BF16, F16)\n"
      "        as a weights-only checkpoint that training can start from.\n"
      "  --hf HFDIR        the HuggingFace directory\n"
      "  --out DIR         the checkpoint root; the checkpoint is DIR/step_NNNNNNNN\n"
      "  --step N          the step recorded in the checkpoint (default 0)\n");
}

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "ckpt_convert: %s\n", what.c_str());
  usage(stderr);
  std::exit(2);
}

void log_line(const std::string& line) { std::fprintf(stderr, "ckpt_convert: %s\n", line.c_str()); }

}  // namespace

int main(int argc, char** argv) {
  using namespace intellect;
  if (argc >= 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    usage(stdout);
    return 0;
  }
  if (argc < 2) usage_error("missing the command (export or import)");
  const std::string command = argv[1];
  if (command != "export" && command != "import")
    usage_error("unknown command '" + command + "' (expected export or import)");

  std::string ckpt, out, hf, dtype = "bf16", shard_size = "5GB", step_text = "0";
  bool force = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    const bool exp = command == "export";
    if (a == "-h" || a == "--help") { usage(stdout); return 0; }
    else if (a == "--out") out = value();
    else if (exp && a == "--ckpt") ckpt = value();
    else if (exp && a == "--dtype") dtype = value();
    else if (exp && a == "--shard-size") shard_size = value();
    else if (exp && a == "--force") force = true;
    else if (!exp && a == "--hf") hf = value();
    else if (!exp && a == "--step") step_text = value();
    else usage_error("unknown argument '" + a + "' for " + command);
  }

  try {
    if (command == "export") {
      if (ckpt.empty() || out.empty()) usage_error("export needs --ckpt and --out");
      HfExportOptions opt;
      if (dtype == "bf16" || dtype == "bfloat16") opt.dtype = HfDtype::BF16;
      else if (dtype == "fp32" || dtype == "float32") opt.dtype = HfDtype::F32;
      else usage_error("--dtype '" + dtype + "': expected bf16 or fp32");
      opt.shard_size = parse_byte_size(shard_size, "--shard-size");
      opt.force = force;
      opt.log = log_line;
      const HfExportResult r = export_checkpoint_to_hf(ckpt, out, opt);
      std::printf("exported %s (step %lld): %zu tensors, %s of %s weights in %s\n", r.checkpoint.c_str(),
                  static_cast<long long>(r.step), r.tensors, format_bytes(r.weight_bytes).c_str(),
                  opt.dtype == HfDtype::F32 ? "fp32" : "bf16", out.c_str());
      for (const std::string& f : r.files) std::printf("  %s\n", f.c_str());
    } else {
      if (hf.empty() || out.empty()) usage_error("import needs --hf and --out");
      char* end = nullptr;
      const long long step = std::strtoll(step_text.c_str(), &end, 10);
      if (step_text.empty() || *end != '\0' || step < 0)
        usage_error("--step '" + step_text + "': expected a whole number, 0 or more");
      const std::string dir = import_hf_to_checkpoint(hf, out, step, log_line);
      std::printf("imported %s as %s\n", hf.c_str(), dir.c_str());
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "ckpt_convert: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // Filesystem and allocation errors from the standard library.
    std::fprintf(stderr, "ckpt_convert: error: %s\n", e.what());
    return 1;
  }
}
