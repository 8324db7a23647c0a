// File helpers. AtomicFile is how every output of intellect reaches its final
// name: written under a temporary name, fsynced, renamed, and the directory
// fsynced, so a crash never leaves a half-written file under the final name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace intellect {

std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);
bool path_exists(const std::string& path);
void make_dirs(const std::string& path);  // mkdir -p
void fsync_dir(const std::string& dir);

class AtomicFile {
 public:
  // `mode`: the new file's permissions (0600 for secrets), before the umask.
  explicit AtomicFile(std::string final_path, unsigned mode = 0644);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void commit();  // flush, fsync, rename to the final name, fsync the directory
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string final_path_, temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Whole-buffer convenience over AtomicFile.
void write_file_atomic(const std::string& path, const void* data, size_t n);

}  // namespace intellect
