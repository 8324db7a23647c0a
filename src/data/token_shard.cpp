#include "data/token_shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "util/error.h"
#include "util/file.h"

namespace intellect {

// The format is little-endian on disk and the tokens are used in place from
// the mapping, so a big-endian host would need a byte-swapping path.
static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; this host is not");

TokenShard::TokenShard(TokenShard&& other) noexcept { *this = std::move(other); }

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

TokenShard::~TokenShard() { unmap(); }

void TokenShard::unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  count_ = 0;
}

TokenShard TokenShard::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open token shard '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("cannot stat token shard '", path, "': ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("token shard '", path, "' is not a regular file");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    fail("token shard '", path, "' is too small: ", file_bytes, " bytes, but the header alone is ",
         kShardHeaderBytes, " bytes (not a token shard, or truncated)");
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive; no descriptor per shard
  if (map == MAP_FAILED)
    fail("cannot map token shard '", path, "': ", std::strerror(map_errno));

  TokenShard shard;
  shard.path_ = path;
  shard.map_ = map;
  shard.map_bytes_ = file_bytes;  // from here on the destructor unmaps on failure

  int32_t header[3];
  std::memcpy(header, map, sizeof(header));
  if (header[0] != kShardMagic) {
    if (header[0] == kGpt2ShardMagic)
      fail("token shard '", path, "' is an llm.c GPT-2 shard (magic ", kGpt2ShardMagic,
           ", uint16 tokens); intellect reads the Llama-3 format (magic ", kShardMagic,
           ", version ", kShardVersion, ", uint32 tokens); re-export it in that format");
    fail("token shard '", path, "' has bad magic ", header[0], ", expected ", kShardMagic,
         " (not an llm.c Llama-3 token shard)");
  }
  if (header[1] != kShardVersion)
    fail("token shard '", path, "' has version ", header[1], ", expected ", kShardVersion);
  if (header[2] < 0)
    fail("token shard '", path, "' has a negative token count ", header[2]);
  const uint64_t count = static_cast<uint64_t>(header[2]);
  const uint64_t expected = kShardHeaderBytes + count * sizeof(uint32_t);
  if (file_bytes != expected) {
    if (file_bytes < expected)
      fail("token shard '", path, "' is truncated: its header says ", count, " tokens (", expected,
           " bytes) but the file has ", file_bytes, " bytes");
    fail("token shard '", path, "' has extra bytes: its header says ", count, " tokens (",
         expected, " bytes) but the file has ", file_bytes, " bytes");
  }
  shard.tokens_ = reinterpret_cast<const uint32_t*>(static_cast<const char*>(map) + kShardHeaderBytes);
  shard.count_ = count;
  // Loaders walk shards front to back; let the kernel read ahead accordingly.
  ::madvise(map, file_bytes, MADV_SEQUENTIAL);
  return shard;
}

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens) {
  if (tokens.size() > static_cast<size_t>(INT32_MAX))
    fail("cannot write token shard '", path, "': ", tokens.size(),
         " tokens exceed the format's limit of ", INT32_MAX, " per shard");
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  AtomicFile f(path);
  f.write(header, sizeof(header));
  if (!tokens.empty()) f.write(tokens.data(), tokens.size_bytes());
  f.commit();
}

std::vector<std::string> expand_shard_pattern(const std::string& pattern) {
  namespace fs = std::filesystem;
  if (pattern.empty()) fail("no token shards given (empty path)");
  std::error_code ec;
  if (fs::is_directory(pattern, ec)) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(pattern, ec)) {
      if (entry.path().extension() == ".bin" && entry.is_regular_file())
        files.push_back(entry.path().string());
    }
    if (ec) fail("cannot list directory '", pattern, "': ", ec.message());
    if (files.empty()) fail("directory '", pattern, "' contains no token shards (*.bin)");
    std::sort(files.begin(), files.end());
    return files;
  }
  if (pattern.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> files;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (rc == GLOB_NOMATCH) fail("no token shards match '", pattern, "'");
    if (rc != 0) fail("cannot expand shard pattern '", pattern, "' (glob error ", rc, ")");
    std::sort(files.begin(), files.end());  // glob sorts by locale; make it bytewise
    return files;
  }
  if (!fs::exists(pattern, ec)) fail("token shard '", pattern, "' does not exist");
  return {pattern};
}

}  // namespace intellect
