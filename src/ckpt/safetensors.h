// safetensors reading and writing.
//
// Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// (an object mapping tensor names to {dtype, shape, data_offsets}, plus an
// optional "__metadata__" object of string -> string), then the data section.
// Tensor data are little-endian, row-major, and data_offsets are relative to
// the start of the data section.
//
// File::open validates everything the reference implementation validates (and
// refuses duplicate JSON keys, which the reference silently collapses), so
// code that reads tensors can trust offsets and sizes without re-checking.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace intellect::st {

enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

size_t dtype_size(DType);
const char* dtype_name(DType);
std::optional<DType> try_parse_dtype(std::string_view);
DType parse_dtype(std::string_view);  // fail() on an unknown name

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // offsets in the data section
  int64_t numel() const;        // 1 for a 0-d tensor
  uint64_t nbytes() const { return end - begin; }
};

// "[2,3]" for messages.
std::string shape_str(const std::vector<int64_t>& shape);

// Read-only view of a .safetensors file. The file is memory-mapped when
// possible (weights can be large and are often read only in part) and read
// into memory otherwise.
class File {
 public:
  static File open(const std::string& path);
  static File from_bytes(std::vector<uint8_t> bytes, std::string name_for_errors);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data-offset order
  const TensorInfo* find(std::string_view name) const;                 // nullptr if absent
  const TensorInfo& get(std::string_view name) const;                  // fail() if absent
  std::span<const uint8_t> bytes(const TensorInfo&) const;

  // F32, BF16 and F16 are converted to float exactly; other dtypes fail().
  std::vector<float> read_f32(std::string_view name) const;
  // I32, or I64 when every value fits in int32; otherwise fail().
  std::vector<int32_t> read_i32(std::string_view name) const;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  size_t header_size() const { return header_size_; }  // N, the JSON length

 private:
  File() = default;
  void release() noexcept;
  void parse();  // validates data_/size_ and fills tensors_, index_, metadata_

  std::string path_;
  const uint8_t* data_ = nullptr;  // the whole file
  size_t size_ = 0;
  void* map_ = nullptr;  // non-null when data_ is an mmap of size_ bytes
  std::vector<uint8_t> owned_;
  size_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and writes one file atomically. Tensors are written in
// insertion order, contiguous, after a header padded with spaces so the data
// section starts at a multiple of 8 bytes.
class Writer {
 public:
  // Copies the data. Checks that nbytes == numel * dtype size and that the
  // name is new, non-empty, valid UTF-8 and not "__metadata__".
  void add(std::string name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  void add_f32(std::string name, std::vector<int64_t> shape, const float* data);
  void add_bf16_from_f32(std::string name, std::vector<int64_t> shape,
                         const float* data);  // round to nearest even
  void set_metadata(std::string key, std::string value);

  // The complete file contents; write() puts exactly these bytes on disk.
  std::vector<uint8_t> serialize() const;
  std::vector<uint8_t> serialize_header() const;  // the 8-byte length and the padded JSON
  void write(const std::string& path) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, size_t> names_;
  std::map<std::string, std::string> metadata_;
};

// Bit-exact conversions. f32_to_bf16 and f32_to_f16 round to nearest, ties
// to even; NaN stays NaN (quiet, sign kept), overflow becomes infinity.
uint16_t f32_to_bf16(float);
float bf16_to_f32(uint16_t);
float f16_to_f32(uint16_t);
uint16_t f32_to_f16(float);

}  // namespace intellect::st
