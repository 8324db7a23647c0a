// The status page's HTTP server: libmicrohttpd (Debian's libmicrohttpd-dev)
// parses HTTP; this class decides what it serves and to whom. GET and HEAD
// only; a bounded number of connections (in all, and per client address);
// request line and headers limited in size (libmicrohttpd answers 414/431
// beyond it); a connection silent for `idle_timeout` or whose request is not
// complete within `request_deadline` (a slowloris trickling bytes) is cut
// off; with a token file, every request must carry the token (compared in
// constant time).
//
// Threads: libmicrohttpd's own polling thread runs the handler (and so every
// render of a snapshot), and a watchdog thread of this class cuts off slow
// requests. Neither touches anything but this object and what the handler
// reaches, so the coordinator's loop never waits on a client.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

struct MHD_Daemon;
struct MHD_Connection;

namespace intellect {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct StatusServerOptions {
  std::string listen;      // "PORT" (loopback) or "IPV4:PORT"; port 0: any free one
  std::string token_file;  // empty: no token
  std::string what = "status page";  // names the setting in errors and logs
  unsigned max_connections = 64;
  unsigned max_per_client = 16;
  std::chrono::seconds idle_timeout{10};
  std::chrono::milliseconds request_deadline{10000};
  size_t max_request_bytes = 16 * 1024;  // request line + headers
  std::function<void(const std::string&)> log;
};

// "8080" -> ("127.0.0.1", 8080); "0.0.0.0:8080" -> as given. Fails naming
// `what` for anything else.
std::pair<std::string, uint16_t> parse_http_listen(const std::string& s, const std::string& what);

class StatusServer {
 public:
  // `handler` answers a GET for a path (without its query); it runs on the
  // server's thread.
  StatusServer(StatusServerOptions options, std::function<HttpReply(const std::string& path)> handler);
  ~StatusServer();
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const;  // "http://HOST:PORT/"
  uint64_t requests_refused() const { return refused_.load(); }
  uint64_t connections_cut() const { return cut_.load(); }

  // libmicrohttpd's callbacks (its thread): a request to answer; a
  // connection opened (true) or closed (false).
  bool answer(MHD_Connection* c, const char* url, const char* method);
  void track(MHD_Connection* c, bool opened);

 private:
  bool authorized(MHD_Connection* c) const;
  void watchdog();

  StatusServerOptions opt_;
  std::function<HttpReply(const std::string&)> handler_;
  std::string host_;
  uint16_t port_ = 0;
  std::string token_digest_;  // BLAKE2b of the token (empty: none)
  MHD_Daemon* daemon_ = nullptr;
  std::atomic<uint64_t> refused_{0}, cut_{0};
  // Open connections: their socket and when their current request began
  // (under mu_; a socket is shut down only while its connection is here, so
  // never after libmicrohttpd closed it and the number was reused).
  struct Open {
    int fd = -1;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<MHD_Connection*, Open> open_;
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace intellect
