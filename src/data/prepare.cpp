#include "data/prepare.h"

#include <sodium.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "data/input_stream.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};

// Raw documents of one input, as read: whole files (.txt) or JSON lines.
struct Batch {
  size_t source = 0;
  std::string data;                                // the items, back to back
  std::vector<std::pair<size_t, size_t>> spans;    // (offset, length) into data
  std::vector<uint64_t> line_numbers;              // per item (JSON lines only)
  uint64_t file_bytes_done = 0;                    // progress once this batch is written
};

struct BatchResult {
  size_t source = 0;
  std::vector<std::vector<uint32_t>> documents;  // BOS + ids + EOS each
  std::vector<std::string> bad_lines;            // messages, in line order
  uint64_t file_bytes_done = 0;
};

// A fixed set of threads taking tasks from one queue.
class WorkerPool {
 public:
  explicit WorkerPool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  template <class F>
  auto submit(F f) -> std::future<decltype(f())> {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.emplace_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return fut;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (stopping_) return;  // queued work is abandoned: only an error or a stop gets here
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::vector<std::thread> threads_;
  std::deque<std::function<void()>> tasks_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

// Reads the inputs in order and cuts them into batches.
class BatchReader {
 public:
  BatchReader(const std::vector<std::string>& paths, const std::vector<InputFormat>& formats,
              size_t batch_bytes)
      : paths_(paths), formats_(formats), batch_bytes_(batch_bytes), chunk_(1 << 20) {}

  // False when every input is exhausted.
  bool next(Batch& b) {
    b = Batch{};
    while (source_ < paths_.size()) {
      if (!stream_) {
        stream_ = open_input(paths_[source_], formats_[source_]);
        carry_.clear();
        line_ = 0;
      }
      b.source = source_;
      const bool jsonl = is_jsonl(formats_[source_]);
      bool at_end = false;
      while (!at_end && (!jsonl || b.data.size() < batch_bytes_)) {
        const size_t got = stream_->read(chunk_.data(), chunk_.size());
        if (got == 0) {
          at_end = true;
          break;
        }
        if (!jsonl) {
          b.data.append(chunk_.data(), got);  // a .txt file is one document
          continue;
        }
        carry_.append(chunk_.data(), got);
        take_lines(b, false);
      }
      if (at_end) {
        if (jsonl) take_lines(b, true);
        else b.spans.push_back({0, b.data.size()});
        b.file_bytes_done = stream_->file_bytes_read();
        stream_.reset();
        ++source_;
        return true;  // a file's last batch ends it, so a batch never spans two files
      }
      b.file_bytes_done = stream_->file_bytes_read();
      return true;
    }
    return false;
  }

 private:
  // Moves complete lines from carry_ into the batch (at the end of the
  // file, the unterminated rest too).
  void take_lines(Batch& b, bool final) {
    size_t pos = 0;
    for (;;) {
      const size_t nl = carry_.find('\n', pos);
      if (nl == std::string::npos) break;
      add_line(b, std::string_view(carry_).substr(pos, nl - pos));
      pos = nl + 1;
    }
    if (final && pos < carry_.size()) {
      add_line(b, std::string_view(carry_).substr(pos));
      pos = carry_.size();
    }
    carry_.erase(0, pos);
  }
  void add_line(Batch& b, std::string_view line) {
    ++line_;
    b.spans.push_back({b.data.size(), line.size()});
    b.line_numbers.push_back(line_);
    b.data.append(line);
  }

  const std::vector<std::string>& paths_;
  const std::vector<InputFormat>& formats_;
  size_t batch_bytes_;
  std::vector<char> chunk_;
  size_t source_ = 0;
  std::unique_ptr<InputStream> stream_;
  std::string carry_;
  uint64_t line_ = 0;
};

// Parses (JSON lines) and tokenizes one batch.
BatchResult process(const Batch& b, const std::string& path, bool jsonl, const Tokenizer& tok,
                    int threads) {
  BatchResult r;
  r.source = b.source;
  r.file_bytes_done = b.file_bytes_done;
  const uint32_t eos = tok.eos_id();
  for (size_t i = 0; i < b.spans.size(); ++i) {
    std::string_view raw = std::string_view(b.data).substr(b.spans[i].first, b.spans[i].second);
    std::string text_storage;
    std::string_view text = raw;
    if (jsonl) {
      const uint64_t line = b.line_numbers[i];
      auto bad = [&](const std::string& why) {
        r.bad_lines.push_back(str(path, ":", line, ": skipped: ", why));
      };
      if (raw.find_first_not_of(" \t\r") == std::string_view::npos) {
        bad("empty line");
        continue;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(raw);
      } catch (const nlohmann::json::parse_error& e) {
        bad(str("invalid JSON (", e.what(), ")"));
        continue;
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        bad(!j.is_object() ? "the line is not a JSON object"
            : !j.contains("text") ? "no \"text\" field"
                                  : "\"text\" is not a string");
        continue;
      }
      text_storage = j["text"].get<std::string>();
      text = text_storage;
    }
    // A document much larger than a batch (a big .txt) is split over threads
    // inside the tokenizer; everything else is one document per worker.
    std::vector<uint32_t> ids = text.size() > (16u << 20) ? tok.encode_parallel(text, true, threads)
                                                          : tok.encode(text, true);
    ids.push_back(eos);
    r.documents.push_back(std::move(ids));
  }
  return r;
}

// Packs documents into shards of at most shard_tokens tokens.
class ShardWriter {
 public:
  ShardWriter(std::string dir, uint64_t shard_tokens)
      : dir_(std::move(dir)), shard_tokens_(shard_tokens) {}

  void add(const std::vector<uint32_t>& doc, PrepareSummary& summary) {
    if (current_.size() + doc.size() <= shard_tokens_) {
      current_.insert(current_.end(), doc.begin(), doc.end());
      if (current_.size() == shard_tokens_) flush(summary);
      return;
    }
    if (!current_.empty()) flush(summary);
    if (doc.size() <= shard_tokens_) {
      current_.assign(doc.begin(), doc.end());
      return;
    }
    // Longer than a shard: whole shards of it, the rest starts the next one.
    ++summary.split_documents;
    size_t pos = 0;
    for (; doc.size() - pos >= shard_tokens_; pos += shard_tokens_) {
      current_.assign(doc.begin() + static_cast<ptrdiff_t>(pos),
                      doc.begin() + static_cast<ptrdiff_t>(pos + shard_tokens_));
      flush(summary);
    }
    current_.assign(doc.begin() + static_cast<ptrdiff_t>(pos), doc.end());
  }

  void finish(PrepareSummary& summary) {
    if (!current_.empty()) flush(summary);
  }

 private:
  void flush(PrepareSummary& summary) {
    char name[32];
    std::snprintf(name, sizeof(name), "shard_%06zu.bin", summary.shards.size());
    write_token_shard((fs::path(dir_) / name).string(), current_);
    summary.shards.push_back({name, current_.size()});
    current_.clear();
  }

  std::string dir_;
  uint64_t shard_tokens_;
  std::vector<uint32_t> current_;
};

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof(buf), "%ld:%02ld", t / 60, t % 60);
  return buf;
}

class Progress {
 public:
  Progress(const PrepareOptions& o, uint64_t total_bytes)
      : log_(o.log), bar_(o.progress_bar), interval_(o.progress_interval_s), total_(total_bytes),
        start_(Clock::now()), last_(start_) {}

  void update(uint64_t bytes, uint64_t tokens, uint64_t docs, bool final = false) {
    if (log_ == nullptr) return;
    const auto now = Clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!final && since < (bar_ ? 0.2 : interval_)) return;
    last_ = now;
    const double el = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
    const double frac = total_ > 0 ? std::min(1.0, double(bytes) / double(total_)) : 1.0;
    const double mbs = double(bytes) / el / 1e6, toks = double(tokens) / el / 1e6;
    const double eta = frac > 0 ? el * (1 - frac) / frac : -1;
    char line[256];
    if (bar_) {
      constexpr int kWidth = 24;
      std::string bar(kWidth, ' ');
      for (int i = 0; i < static_cast<int>(frac * kWidth); ++i) bar[i] = '#';
      std::snprintf(line, sizeof(line),
                    "\r[%s] %5.1f%%  %.1f MB/s  %.2f Mtok/s  %llu docs  ETA %s   ", bar.c_str(),
                    100 * frac, mbs, toks, static_cast<unsigned long long>(docs),
                    format_duration(eta).c_str());
      *log_ << line << (final ? "\n" : "") << std::flush;
    } else {
      std::snprintf(line, sizeof(line),
                    "prepare_data: %.1f%% of input, %.1f MB/s, %.2f Mtok/s, %llu docs, %llu "
                    "tokens, ETA %s\n",
                    100 * frac, mbs, toks, static_cast<unsigned long long>(docs),
                    static_cast<unsigned long long>(tokens), format_duration(eta).c_str());
      *log_ << line << std::flush;
    }
  }
  // Keeps a bad-line message from landing in the middle of the bar.
  void before_message() {
    if (log_ != nullptr && bar_) *log_ << "\r\033[K";
  }

 private:
  std::ostream* log_;
  bool bar_;
  double interval_;
  uint64_t total_;
  Clock::time_point start_, last_;
};

bool is_output_file(const fs::path& p) {
  const std::string name = p.filename().string();
  return name == "manifest.json" ||
         (name.rfind("shard_", 0) == 0 && p.extension() == ".bin");
}

void prepare_output_dir(const PrepareOptions& o) {
  make_dirs(o.output_dir);
  std::vector<fs::path> existing;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(o.output_dir, ec))
    if (is_output_file(e.path())) existing.push_back(e.path());
  if (ec) fail("cannot list output directory '", o.output_dir, "': ", ec.message());
  if (existing.empty()) return;
  if (!o.overwrite)
    fail("output directory '", o.output_dir, "' already holds ", existing.size(),
         " shard/manifest files (e.g. '", existing.front().filename().string(),
         "'); choose an empty directory, or pass --force to replace them");
  for (const auto& p : existing) {
    fs::remove(p, ec);
    if (ec) fail("cannot remove '", p.string(), "': ", ec.message());
  }
}

void write_manifest(const PrepareOptions& o, const Tokenizer& tok, const std::string& tok_sha,
                    const PrepareSummary& s) {
  using nlohmann::json;
  json sources = json::array();
  for (const auto& src : s.sources)
    sources.push_back({{"path", src.path}, {"format", src.format}, {"bytes", src.bytes},
                       {"documents", src.documents}, {"bad_lines", src.bad_lines},
                       {"tokens", src.tokens}});
  json shards = json::array();
  for (const auto& sh : s.shards) shards.push_back({{"file", sh.file}, {"tokens", sh.tokens}});
  json tokenizer = {{"spec", o.tokenizer}, {"file", tok.name() == "byte" ? json(nullptr) : json(tok.name())},
                    {"sha256", tok_sha.empty() ? json(nullptr) : json(tok_sha)},
                    {"vocab_size", tok.vocab_size()}, {"bos_id", tok.bos_id()},
                    {"eos_id", tok.eos_id()}};
  json m = {{"created_by", "prepare_data"},
            {"format", {{"magic", kShardMagic}, {"version", kShardVersion}, {"token_type", "uint32"}}},
            {"document_framing", "BOS + ids + EOS"},
            {"shard_tokens", o.shard_tokens},
            {"tokenizer", tokenizer},
            {"sources", sources},
            {"documents", s.documents},
            {"bad_lines", s.bad_lines},
            {"tokens", s.tokens},
            {"documents_split_across_shards", s.split_documents},
            {"shards", shards}};
  const std::string text = m.dump(2) + "\n";
  write_file_atomic((fs::path(o.output_dir) / "manifest.json").string(), text.data(), text.size());
}

}  // namespace

void request_prepare_stop() { g_stop.store(true); }

std::string sha256_file(const std::string& path) {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) fail("cannot open '", path, "' to hash it: ", std::strerror(errno));
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  std::vector<unsigned char> buf(1 << 20);
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f)) > 0;)
    crypto_hash_sha256_update(&st, buf.data(), n);
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err) fail("cannot read '", path, "' to hash it");
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
  return hex;
}

PrepareSummary prepare_data(const PrepareOptions& o) {
  const auto start = Clock::now();
  if (o.inputs.empty()) fail("no inputs given");
  if (o.output_dir.empty()) fail("no output directory given");
  if (o.shard_tokens == 0 || o.shard_tokens > static_cast<uint64_t>(INT32_MAX))
    fail("shard size ", o.shard_tokens, " is out of range (1 .. ", INT32_MAX, " tokens)");

  // Every input is checked before any work, so a typo fails in a second, not an hour in.
  PrepareSummary summary;
  std::vector<InputFormat> formats;
  uint64_t total_bytes = 0;
  for (const std::string& path : o.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail("input '", path, "' does not exist or is not a file");
    formats.push_back(input_format_of(path));
    PrepareSource src;
    src.path = path;
    src.format = input_format_name(formats.back());
    src.bytes = fs::file_size(path, ec);
    if (::access(path.c_str(), R_OK) != 0) fail("input '", path, "' is not readable");
    total_bytes += src.bytes;
    summary.sources.push_back(src);
  }
  const auto tok = load_tokenizer(o.tokenizer);
  const std::string tok_sha = tok->name() == "byte" ? "" : sha256_file(tok->name());
  tok->eos_id();  // fails now, not in a worker, if the tokenizer has none
  prepare_output_dir(o);

  const int threads = resolve_threads(o.threads);
  Progress progress(o, total_bytes);
  ShardWriter writer(o.output_dir, o.shard_tokens);
  uint64_t bytes_before_source = 0;  // of the files finished, for progress
  size_t progress_source = 0;

  auto consume = [&](BatchResult r) {
    PrepareSource& src = summary.sources[r.source];
    for (const std::string& msg : r.bad_lines) {
      progress.before_message();
      if (o.log != nullptr) *o.log << "prepare_data: " << msg << "\n";
    }
    src.bad_lines += r.bad_lines.size();
    summary.bad_lines += r.bad_lines.size();
    for (const auto& doc : r.documents) {
      writer.add(doc, summary);
      src.tokens += doc.size();
      summary.tokens += doc.size();
    }
    src.documents += r.documents.size();
    summary.documents += r.documents.size();
    while (progress_source < r.source) bytes_before_source += summary.sources[progress_source++].bytes;
    progress.update(bytes_before_source + r.file_bytes_done, summary.tokens, summary.documents);
  };

  {
    WorkerPool pool(threads);
    std::deque<std::future<BatchResult>> in_flight;
    const size_t max_in_flight = size_t(threads) * 2 + 1;  // bounds memory
    BatchReader reader(o.inputs, formats, o.batch_bytes);
    for (Batch b; reader.next(b);) {
      if (g_stop.load()) fail("interrupted; no manifest was written");
      const std::string& path = o.inputs[b.source];
      const bool jsonl = is_jsonl(formats[b.source]);
      in_flight.push_back(pool.submit([batch = std::move(b), &path, jsonl, &tok, threads] {
        return process(batch, path, jsonl, *tok, threads);
      }));
      while (in_flight.size() >= max_in_flight) {
        consume(in_flight.front().get());
        in_flight.pop_front();
      }
    }
    while (!in_flight.empty()) {
      if (g_stop.load()) fail("interrupted; no manifest was written");
      consume(in_flight.front().get());
      in_flight.pop_front();
    }
  }
  writer.finish(summary);
  write_manifest(o, *tok, tok_sha, summary);
  progress.update(total_bytes, summary.tokens, summary.documents, true);
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

}  // namespace intellect
