// Sequential byte readers for prepare_data's inputs: plain files, gzip
// (zlib) and zstd (libzstd streaming), all read in chunks so inputs may be
// far larger than memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace intellect {

enum class InputFormat {
  kText,      // .txt: the whole file is one document
  kJsonl,     // .jsonl: one JSON object per line, the document in "text"
  kJsonlGz,   // .jsonl.gz
  kJsonlZst,  // .jsonl.zst
};

// From the file name; fails naming the accepted suffixes.
InputFormat input_format_of(const std::string& path);
const char* input_format_name(InputFormat f);
inline bool is_jsonl(InputFormat f) { return f != InputFormat::kText; }

class InputStream {
 public:
  virtual ~InputStream() = default;
  // Fills up to n bytes of decompressed data; 0 only at the end. Fails on
  // read or decompression errors, naming the file.
  virtual size_t read(char* buf, size_t n) = 0;
  // Bytes of the file (compressed, if it is) consumed so far: progress.
  virtual uint64_t file_bytes_read() const = 0;
};

std::unique_ptr<InputStream> open_input(const std::string& path, InputFormat format);

}  // namespace intellect
