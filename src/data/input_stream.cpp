#include "data/input_stream.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "util/error.h"

namespace intellect {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

class PlainStream final : public InputStream {
 public:
  explicit PlainStream(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (f_ == nullptr) fail("cannot open input '", path, "': ", std::strerror(errno));
  }
  ~PlainStream() override { std::fclose(f_); }
  size_t read(char* buf, size_t n) override {
    const size_t got = std::fread(buf, 1, n, f_);
    if (got < n && std::ferror(f_)) fail("cannot read input '", path_, "': ", std::strerror(errno));
    consumed_ += got;
    return got;
  }
  uint64_t file_bytes_read() const override { return consumed_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  uint64_t consumed_ = 0;
};

class GzipStream final : public InputStream {
 public:
  explicit GzipStream(const std::string& path) : path_(path) {
    gz_ = gzopen(path.c_str(), "rb");
    if (gz_ == nullptr) fail("cannot open input '", path, "': ", std::strerror(errno));
    gzbuffer(gz_, 1 << 18);
  }
  ~GzipStream() override { gzclose(gz_); }
  size_t read(char* buf, size_t n) override {
    const unsigned want = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
    const int got = gzread(gz_, buf, want);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(gz_, &code);
      fail("cannot read gzip input '", path_, "': ", msg,
           " (the file is corrupt or truncated; check it with gzip -t)");
    }
    // zlib reads non-gzip data through unchanged; a .gz that is not gzip is an error.
    if (got > 0 && gzdirect(gz_))
      fail("input '", path_, "' is named .gz but is not gzip-compressed");
    if (got == 0) {
      // At the end, Z_BUF_ERROR means the file stopped inside a gzip stream.
      int code = Z_OK;
      gzerror(gz_, &code);
      if (code == Z_BUF_ERROR)
        fail("gzip input '", path_, "' is truncated (it ends inside a gzip stream)");
    }
    return static_cast<size_t>(got);
  }
  uint64_t file_bytes_read() const override {
    const z_off_t off = gzoffset(gz_);
    return off < 0 ? 0 : static_cast<uint64_t>(off);
  }

 private:
  std::string path_;
  gzFile gz_ = nullptr;
};

class ZstdStream final : public InputStream {
 public:
  explicit ZstdStream(const std::string& path) : path_(path), in_buf_(ZSTD_DStreamInSize()) {
    f_ = std::fopen(path.c_str(), "rb");
    if (f_ == nullptr) fail("cannot open input '", path, "': ", std::strerror(errno));
    ds_ = ZSTD_createDStream();
    if (ds_ == nullptr) fail("out of memory creating a zstd decoder for '", path, "'");
    ZSTD_initDStream(ds_);
    in_ = {in_buf_.data(), 0, 0};
  }
  ~ZstdStream() override {
    ZSTD_freeDStream(ds_);
    std::fclose(f_);
  }
  size_t read(char* buf, size_t n) override {
    ZSTD_outBuffer out = {buf, n, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        if (eof_) {
          // A frame left unfinished means the file was cut short.
          if (last_hint_ != 0)
            fail("zstd input '", path_, "' is truncated (it ends inside a frame)");
          return 0;
        }
        const size_t got = std::fread(in_buf_.data(), 1, in_buf_.size(), f_);
        if (got < in_buf_.size()) {
          if (std::ferror(f_)) fail("cannot read input '", path_, "': ", std::strerror(errno));
          eof_ = true;
        }
        consumed_ += got;
        in_ = {in_buf_.data(), got, 0};
        if (got == 0) continue;
      }
      const size_t hint = ZSTD_decompressStream(ds_, &out, &in_);
      if (ZSTD_isError(hint))
        fail("cannot decompress zstd input '", path_, "': ", ZSTD_getErrorName(hint),
             " (the file is corrupt or not zstd; check it with zstd -t)");
      last_hint_ = hint;
    }
    return out.pos;
  }
  uint64_t file_bytes_read() const override { return consumed_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  ZSTD_DStream* ds_ = nullptr;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{};
  bool eof_ = false;
  size_t last_hint_ = 0;
  uint64_t consumed_ = 0;
};

}  // namespace

InputFormat input_format_of(const std::string& path) {
  if (ends_with(path, ".jsonl.gz")) return InputFormat::kJsonlGz;
  if (ends_with(path, ".jsonl.zst")) return InputFormat::kJsonlZst;
  if (ends_with(path, ".jsonl")) return InputFormat::kJsonl;
  if (ends_with(path, ".txt")) return InputFormat::kText;
  fail("input '", path, "' has an unknown kind: expected .txt (one document), .jsonl, "
       ".jsonl.gz or .jsonl.zst (one JSON object per line with a \"text\" field)");
}

const char* input_format_name(InputFormat f) {
  switch (f) {
    case InputFormat::kText: return "txt";
    case InputFormat::kJsonl: return "jsonl";
    case InputFormat::kJsonlGz: return "jsonl.gz";
    case InputFormat::kJsonlZst: return "jsonl.zst";
  }
  return "?";
}

std::unique_ptr<InputStream> open_input(const std::string& path, InputFormat format) {
  switch (format) {
    case InputFormat::kJsonlGz: return std::make_unique<GzipStream>(path);
    case InputFormat::kJsonlZst: return std::make_unique<ZstdStream>(path);
    default: return std::make_unique<PlainStream>(path);
  }
}

}  // namespace intellect
