#include "storage/rocksdb_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace consent::storage {
namespace {

constexpr off_t kRotateBytes = off_t{32} << 20;

class RocksDbLog final : public rocksdb::Logger {
 public:
  explicit RocksDbLog(const std::string& data_dir) : Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
    const std::string path = data_dir + "/LOG";
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && st.st_size > kRotateBytes) {
      rename(path.c_str(), (data_dir + "/LOG.old").c_str());
    }
    fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  ~RocksDbLog() override {
    if (fd_ >= 0) close(fd_);
  }

  using Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (fd_ < 0) return;
    char line[4096];
    const std::string stamp =
        absl::FormatTime("%Y/%m/%d-%H:%M:%E6S ", absl::Now(), absl::UTCTimeZone());
    size_t n = stamp.copy(line, sizeof(line) - 2);
    const int body = vsnprintf(line + n, sizeof(line) - n - 1, format, ap);
    if (body < 0) return;
    n += std::min(static_cast<size_t>(body), sizeof(line) - n - 2);
    if (n == 0 || line[n - 1] != '\n') line[n++] = '\n';
    // Errors (a full disk) drop the line: the log is diagnostics only.
    if (write(fd_, line, n) < 0) return;
  }

 private:
  int fd_ = -1;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> NewRocksDbLog(const std::string& data_dir) {
  return std::make_shared<RocksDbLog>(data_dir);
}

}  // namespace consent::storage
