#include "ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <utility>

#include "util/error.h"
#include "util/file.h"

// Tensor bytes are reinterpreted in place, which is only right on a
// little-endian host.
static_assert(std::endian::native == std::endian::little, "safetensors code assumes little-endian");

namespace intellect::st {

namespace {

using nlohmann::json;

// The reference implementation's limit; a larger header is refused before
// anything is allocated for it.
constexpr uint64_t kMaxHeaderSize = 100'000'000;
// serde_json's default recursion limit; also keeps a hostile header from
// exhausting the stack.
constexpr int kMaxJsonDepth = 128;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4}, {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};

const DTypeEntry& dtype_entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  fail("invalid DType value ", static_cast<int>(d));
}

// Returns the offset of the first byte that is not part of well-formed UTF-8,
// or npos. Rejects overlong forms, surrogates and code points past U+10FFFF,
// as Rust's str::from_utf8 (used by the reference) does.
size_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;       // overlong
      else if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;       // overlong
      else if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Element count with the overflow check done in shape order, as the
// reference does (so [2^40, 2^40, 0] is refused even though it holds nothing).
std::optional<uint64_t> checked_numel(const std::vector<uint64_t>& dims) {
  uint64_t n = 1;
  for (uint64_t d : dims)
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

std::string offsets_str(uint64_t b, uint64_t e) { return str("[", b, ", ", e, "]"); }

// A JSON number that is a non-negative integer, as Rust's usize accepts it.
std::optional<uint64_t> as_index(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// Parses the header JSON, refusing duplicate keys at any depth (nlohmann
// would keep the last one silently, which would hide a corrupt or ambiguous
// header) and nesting deeper than kMaxJsonDepth.
json parse_header_json(std::string_view text, const std::string& path) {
  std::vector<std::set<std::string>> keys_stack;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) fail(path, ": header JSON nests deeper than ", kMaxJsonDepth, " levels");
        if (event == json::parse_event_t::object_start) keys_stack.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys_stack.empty()) keys_stack.pop_back();
        break;
      case json::parse_event_t::key: {
        INTELLECT_CHECK(!keys_stack.empty());
        const auto& key = parsed.get_ref<const std::string&>();
        if (!keys_stack.back().insert(key).second) {
          if (keys_stack.size() == 1) fail(path, ": duplicate tensor name '", key, "' in header");
          fail(path, ": duplicate key '", key, "' in header");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
}

void read_dtype(const json& v, const std::string& where, TensorInfo& t) {
  if (!v.is_string()) fail(where, ": dtype must be a string, got ", v.dump());
  const auto& name = v.get_ref<const std::string&>();
  auto d = try_parse_dtype(name);
  if (!d) fail(where, ": unknown dtype '", name, "'");
  t.dtype = *d;
}

std::vector<uint64_t> read_shape(const json& v, const std::string& where) {
  if (!v.is_array()) fail(where, ": shape must be an array of non-negative integers, got ", v.dump());
  std::vector<uint64_t> dims;
  dims.reserve(v.size());
  for (const auto& d : v) {
    auto x = as_index(d);
    if (!x) fail(where, ": shape ", v.dump(), " has ", d.dump(), ", not a non-negative integer");
    dims.push_back(*x);
  }
  return dims;
}

void read_offsets(const json& v, const std::string& where, TensorInfo& t) {
  if (!v.is_array() || v.size() != 2)
    fail(where, ": data_offsets must be [begin, end], got ", v.dump());
  auto b = as_index(v[0]), e = as_index(v[1]);
  if (!b || !e) fail(where, ": data_offsets ", v.dump(), " must be non-negative integers");
  if (*b > *e) fail(where, ": data_offsets ", offsets_str(*b, *e), " have begin > end");
  t.begin = *b;
  t.end = *e;
}

TensorInfo read_tensor_entry(const std::string& name, const json& v, const std::string& path) {
  const std::string where = str(path, ": tensor '", name, "'");
  if (!v.is_object()) fail(where, ": expected an object with dtype, shape, data_offsets, got ", v.dump());
  for (const auto& [key, _] : v.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(where, ": unexpected key '", key, "' (only dtype, shape, data_offsets are allowed)");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail(where, ": missing '", key, "'");

  TensorInfo t;
  t.name = name;
  read_dtype(v["dtype"], where, t);
  std::vector<uint64_t> dims = read_shape(v["shape"], where);
  read_offsets(v["data_offsets"], where, t);

  const size_t esize = dtype_size(t.dtype);
  auto numel = checked_numel(dims);
  uint64_t need = 0;
  if (!numel || __builtin_mul_overflow(*numel, static_cast<uint64_t>(esize), &need))
    fail(where, ": shape ", v["shape"].dump(), " of ", dtype_name(t.dtype), " overflows a 64-bit byte count");
  for (uint64_t d : dims) {
    // Only reachable with a zero dimension elsewhere; TensorInfo keeps int64.
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(where, ": shape dimension ", d, " is too large");
    t.shape.push_back(static_cast<int64_t>(d));
  }
  if (t.end - t.begin != need)
    fail(where, ": data_offsets ", offsets_str(t.begin, t.end), " span ", t.end - t.begin, " bytes but ",
         dtype_name(t.dtype), " ", shape_str(t.shape), " needs ", need);
  return t;
}

void read_metadata(const json& v, const std::string& path, std::map<std::string, std::string>& out) {
  // The reference reads __metadata__ as Option<HashMap<String, String>>, so
  // null means "none".
  if (v.is_null()) return;
  if (!v.is_object()) fail(path, ": __metadata__ must be an object of strings, got ", v.dump());
  for (const auto& [key, val] : v.items()) {
    if (!val.is_string())
      fail(path, ": __metadata__ key '", key, "' must have a string value, got ", val.dump());
    out.emplace(key, val.get<std::string>());
  }
}

// Reads a scalar from possibly unaligned memory.
template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void check_tensor_name(const std::string& name, const char* what) {
  if (name.empty()) fail("safetensors writer: empty ", what);
  if (invalid_utf8_at(name) != std::string_view::npos) fail("safetensors writer: ", what, " '", name, "' is not valid UTF-8");
}

}  // namespace

// ---------------------------------------------------------------- dtypes

size_t dtype_size(DType d) { return dtype_entry(d).size; }
const char* dtype_name(DType d) { return dtype_entry(d).name; }

std::optional<DType> try_parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (name == e.name) return e.dtype;
  return std::nullopt;
}

DType parse_dtype(std::string_view name) {
  auto d = try_parse_dtype(name);
  if (!d) fail("unknown safetensors dtype '", name, "'");
  return *d;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------- conversions

uint16_t f32_to_bf16(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u)  // NaN: truncating could drop all payload bits and make inf
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even;
  // a carry out of the mantissa correctly bumps the exponent (up to inf).
  uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7FFFu + lsb) >> 16);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal: mant * 2^-24, exactly representable as a normal float.
    float v = static_cast<float>(mant) * 0x1p-24f;
    bits = sign | std::bit_cast<uint32_t>(v);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return sign | 0x7E00u | static_cast<uint16_t>((abs >> 13) & 0x3FFu);  // quiet NaN
  // 65520 is halfway between 65504 (the largest f16, odd mantissa) and 2^16,
  // so ties-to-even already sends it to infinity.
  if (abs >= 0x477FF000u) return sign | 0x7C00u;

  auto round_shift = [](uint32_t m, unsigned shift) -> uint32_t {
    if (shift >= 32) return 0;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return q;
  };

  uint32_t exp = abs >> 23;
  if (abs < 0x38800000u) {
    // Below the smallest normal f16 (2^-14): the result is a subnormal
    // count of 2^-24 units, possibly rounding up into the smallest normal
    // (whose encoding follows on naturally). Float subnormals are far below
    // 2^-25 and round to zero.
    if (exp == 0) return sign;
    uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;  // value = m * 2^(exp-150)
    return sign | static_cast<uint16_t>(round_shift(m, 126 - exp));
  }
  uint32_t q = ((exp - 127 + 15) << 10) | ((abs & 0x7FFFFFu) >> 13);
  uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // carry may bump the exponent
  return sign | static_cast<uint16_t>(q);
}

// ---------------------------------------------------------------- File

File File::open(const std::string& path) {
  File f;
  f.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(err));
  }
  if (S_ISREG(st.st_mode) && st.st_size > 0) {
    void* m = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
      f.map_ = m;
      f.data_ = static_cast<const uint8_t*>(m);
      f.size_ = static_cast<size_t>(st.st_size);
    }
  }
  ::close(fd);  // a mapping stays valid after the descriptor is closed
  if (!f.map_) {
    // Empty files, pipes, or filesystems that cannot mmap.
    f.owned_ = read_file(path);
    f.data_ = f.owned_.data();
    f.size_ = f.owned_.size();
  }
  f.parse();
  return f;
}

File File::from_bytes(std::vector<uint8_t> bytes, std::string name_for_errors) {
  File f;
  f.path_ = std::move(name_for_errors);
  f.owned_ = std::move(bytes);
  f.data_ = f.owned_.data();
  f.size_ = f.owned_.size();
  f.parse();
  return f;
}

File::File(File&& o) noexcept { *this = std::move(o); }

File& File::operator=(File&& o) noexcept {
  if (this == &o) return *this;
  release();
  path_ = std::move(o.path_);
  map_ = std::exchange(o.map_, nullptr);
  owned_ = std::move(o.owned_);
  size_ = std::exchange(o.size_, 0);
  // A moved vector keeps its buffer, but recompute rather than rely on it.
  data_ = map_ ? static_cast<const uint8_t*>(map_) : owned_.data();
  o.data_ = nullptr;
  o.owned_.clear();
  header_size_ = std::exchange(o.header_size_, 0);
  tensors_ = std::move(o.tensors_);
  index_ = std::move(o.index_);
  metadata_ = std::move(o.metadata_);
  o.tensors_.clear();
  o.index_.clear();
  o.metadata_.clear();
  return *this;
}

File::~File() { release(); }

void File::release() noexcept {
  if (map_) ::munmap(map_, size_);
  map_ = nullptr;
  data_ = nullptr;
  size_ = 0;
  owned_.clear();
}

void File::parse() {
  const std::string& p = path_;
  if (size_ < 8) fail(p, ": file is ", size_, " bytes, too small for the 8-byte header length");
  const uint64_t n = load<uint64_t>(data_);
  if (n > kMaxHeaderSize) fail(p, ": header length ", n, " exceeds the limit of ", kMaxHeaderSize, " bytes");
  if (n > size_ - 8)
    fail(p, ": header length ", n, " runs past the end of the file (", size_, " bytes; truncated?)");
  header_size_ = static_cast<size_t>(n);

  std::string_view text(reinterpret_cast<const char*>(data_ + 8), header_size_);
  if (size_t bad = invalid_utf8_at(text); bad != std::string_view::npos)
    fail(p, ": header is not valid UTF-8 (byte ", bad, " of the header)");
  if (text.empty() || text.front() != '{') fail(p, ": header does not start with '{'");
  json header = parse_header_json(text, p);
  if (!header.is_object()) fail(p, ": header is not a JSON object");

  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") read_metadata(v, p, metadata);
    else tensors.push_back(read_tensor_entry(name, v, p));
  }

  // Ties (empty tensors at one offset) are broken by name so the order does
  // not depend on the JSON key order.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors) {
    if (t.begin != pos) {
      const char* kind = t.begin > pos ? "gap" : "overlap";
      if (prev)
        fail(p, ": tensor '", t.name, "' starts at ", t.begin, " but the previous tensor '", prev->name, "' ends at ",
             pos, " (", kind, " in the data section)");
      fail(p, ": tensor '", t.name, "' starts at ", t.begin, " but the data section starts at 0 (", kind, ")");
    }
    pos = t.end;
    prev = &t;
  }
  const uint64_t data_size = size_ - 8 - header_size_;
  if (pos != data_size)
    fail(p, ": tensors end at byte ", pos, " of the data section but it holds ", data_size, " bytes (file ", size_,
         " bytes, header ", header_size_, ")", pos > data_size ? "; truncated?" : "; trailing bytes");

  tensors_ = std::move(tensors);
  metadata_ = std::move(metadata);
  index_.clear();
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo* File::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(path_, ": no tensor '", name, "'");
  return *t;
}

std::span<const uint8_t> File::bytes(const TensorInfo& t) const {
  const uint64_t data_size = size_ - 8 - header_size_;
  INTELLECT_CHECK(t.begin <= t.end && t.end <= data_size, "tensor '", t.name, "' is not from ", path_);
  return {data_ + 8 + header_size_ + t.begin, static_cast<size_t>(t.end - t.begin)};
}

std::vector<float> File::read_f32(std::string_view name) const {
  const TensorInfo& t = get(name);
  auto b = bytes(t);
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(out.data(), b.data(), n * sizeof(float));
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(b.data() + 2 * i));
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(load<uint16_t>(b.data() + 2 * i));
      break;
    default:
      fail(path_, ": tensor '", t.name, "' is ", dtype_name(t.dtype), ", expected F32, BF16 or F16");
  }
  return out;
}

std::vector<int32_t> File::read_i32(std::string_view name) const {
  const TensorInfo& t = get(name);
  auto b = bytes(t);
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<int32_t> out(n);
  switch (t.dtype) {
    case DType::I32:
      if (n) std::memcpy(out.data(), b.data(), n * sizeof(int32_t));
      break;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) {
        int64_t v = load<int64_t>(b.data() + 8 * i);
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
          fail(path_, ": tensor '", t.name, "' element ", i, " is ", v, ", which does not fit in int32");
        out[i] = static_cast<int32_t>(v);
      }
      break;
    default:
      fail(path_, ": tensor '", t.name, "' is ", dtype_name(t.dtype), ", expected I32 or I64");
  }
  return out;
}

// ---------------------------------------------------------------- Writer

void Writer::add(std::string name, DType dtype, std::vector<int64_t> shape, const void* data, size_t nbytes) {
  check_tensor_name(name, "tensor name");
  if (name == "__metadata__") fail("safetensors writer: '__metadata__' cannot be a tensor name");
  if (names_.count(name)) fail("safetensors writer: tensor '", name, "' added twice");
  std::vector<uint64_t> dims;
  for (int64_t d : shape) {
    if (d < 0) fail("safetensors writer: tensor '", name, "' has negative dimension in shape ", shape_str(shape));
    dims.push_back(static_cast<uint64_t>(d));
  }
  auto numel = checked_numel(dims);
  uint64_t need = 0;
  if (!numel || __builtin_mul_overflow(*numel, static_cast<uint64_t>(dtype_size(dtype)), &need))
    fail("safetensors writer: tensor '", name, "' shape ", shape_str(shape), " overflows a 64-bit byte count");
  if (need != nbytes)
    fail("safetensors writer: tensor '", name, "' ", dtype_name(dtype), " ", shape_str(shape), " needs ", need,
         " bytes but ", nbytes, " were given");
  if (nbytes && !data) fail("safetensors writer: tensor '", name, "' has null data");
  Entry e{std::move(name), dtype, std::move(shape), {}};
  if (nbytes) e.data.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + nbytes);
  names_.emplace(e.name, entries_.size());
  entries_.push_back(std::move(e));
}

namespace {
size_t numel_for_writer(const std::string& name, const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("safetensors writer: tensor '", name, "' has negative dimension in shape ", shape_str(shape));
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      fail("safetensors writer: tensor '", name, "' shape ", shape_str(shape), " is too large");
  }
  if (n > std::numeric_limits<size_t>::max() / 4)
    fail("safetensors writer: tensor '", name, "' shape ", shape_str(shape), " is too large");
  return static_cast<size_t>(n);
}
}  // namespace

void Writer::add_f32(std::string name, std::vector<int64_t> shape, const float* data) {
  size_t n = numel_for_writer(name, shape);
  add(std::move(name), DType::F32, std::move(shape), data, n * sizeof(float));
}

void Writer::add_bf16_from_f32(std::string name, std::vector<int64_t> shape, const float* data) {
  size_t n = numel_for_writer(name, shape);
  std::vector<uint16_t> conv(n);
  for (size_t i = 0; i < n; ++i) conv[i] = f32_to_bf16(data[i]);
  add(std::move(name), DType::BF16, std::move(shape), conv.data(), n * sizeof(uint16_t));
}

void Writer::set_metadata(std::string key, std::string value) {
  if (invalid_utf8_at(key) != std::string_view::npos)
    fail("safetensors writer: metadata key '", key, "' is not valid UTF-8");
  if (invalid_utf8_at(value) != std::string_view::npos)
    fail("safetensors writer: metadata value for '", key, "' is not valid UTF-8");
  metadata_[std::move(key)] = std::move(value);
}

std::vector<uint8_t> Writer::serialize_header() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = dtype_name(e.dtype);
    t["shape"] = e.shape;
    t["data_offsets"] = {offset, offset + e.data.size()};
    header[e.name] = std::move(t);
    offset += e.data.size();
  }
  std::string text = header.dump();
  // Pad so the data section starts 8-byte aligned (8 + N is a multiple of
  // 8), which lets readers of an mmap use the tensors in place.
  text.append((8 - text.size() % 8) % 8, ' ');

  const uint64_t n = text.size();
  std::vector<uint8_t> out(8 + text.size());
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

std::vector<uint8_t> Writer::serialize() const {
  std::vector<uint8_t> out = serialize_header();
  for (const auto& e : entries_) out.insert(out.end(), e.data.begin(), e.data.end());
  return out;
}

void Writer::write(const std::string& path) const {
  // Streamed entry by entry so a large checkpoint is not copied once more.
  std::vector<uint8_t> header = serialize_header();
  AtomicFile f(path);
  f.write(header.data(), header.size());
  for (const auto& e : entries_)
    if (!e.data.empty()) f.write(e.data.data(), e.data.size());
  f.commit();
}

}  // namespace intellect::st
