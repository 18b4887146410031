// consentctl snapshot: ExportSnapshot into a file, and the checks a training
// job's loader makes (signature, structure, policy) on a file.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/consentctl_common.h"
#include "client/offline/offline_registry.h"
#include "core/snapshot_signing.h"

ABSL_FLAG(bool, pseudonymize, false,
          "snapshot export: user ids replaced by their HMAC-SHA256 under the server's "
          "--pseudonymize_key_file.");
ABSL_FLAG(std::string, public_key, "",
          "snapshot verify: PEM file of the Ed25519 public key the snapshot must be signed with.");

namespace consent::consentctl {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// Writes the snapshot to PATH.tmp (owner only: it holds personal data),
// syncs it, renames it to PATH and syncs the directory, so PATH is never a
// partial file.
int Export(Client& client, const std::string& path) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(Errno(absl::StrCat("cannot create ", tmp)));
  v1::ExportSnapshotRequest request;
  request.set_pseudonymize(absl::GetFlag(FLAGS_pseudonymize));
  const absl::Time start = absl::Now();
  absl::Time shown = start;
  int64_t written = 0;
  v1::ExportSnapshotResponse last;
  absl::Status io;
  absl::Status status = client.ExportSnapshot(request, [&](const v1::ExportSnapshotResponse& m) {
    const std::string& chunk = m.chunk();
    for (size_t done = 0; done < chunk.size();) {
      const ssize_t n = write(fd, chunk.data() + done, chunk.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        io = Errno(absl::StrCat("writing ", tmp));
        return false;
      }
      done += static_cast<size_t>(n);
    }
    written += static_cast<int64_t>(chunk.size());
    if (m.last()) last = m;
    const absl::Time now = absl::Now();
    if (now - shown >= absl::Seconds(1)) {
      shown = now;
      std::cerr << absl::StrFormat("snapshot: %.1f MiB received, %.1f MiB/s\n", written / 1048576.0,
                                   written / 1048576.0 / absl::ToDoubleSeconds(now - start));
    }
    return true;
  });
  if (io.ok() && status.ok() && !last.last()) {
    io = absl::DataLossError("the stream ended before the snapshot's last message");
  }
  if (io.ok() && status.ok() && fsync(fd) != 0) io = Errno(absl::StrCat("syncing ", tmp));
  close(fd);
  if (status.ok()) status = io;
  if (status.ok() && rename(tmp.c_str(), path.c_str()) != 0) {
    status = Errno(absl::StrCat("renaming ", tmp, " to ", path));
  }
  if (status.ok()) {
    // The rename itself, synced: after a crash PATH is the whole file or
    // absent.
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const int dir_fd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_CLOEXEC);
    if (dir_fd < 0 || fsync(dir_fd) != 0)
      status = Errno(absl::StrCat("syncing the directory of ", path));
    if (dir_fd >= 0) close(dir_fd);
  }
  if (!status.ok()) {
    unlink(tmp.c_str());
    return Fail(status);
  }
  if (absl::GetFlag(FLAGS_json)) {
    last.clear_chunk();
    PrintJson(last);
  } else {
    std::cout << absl::StrFormat(
        "snapshot of revision %d: %d subjects, %d bytes (%.1f bytes a subject)%s, in %s, "
        "written to %s\n",
        last.revision(), last.subjects(), last.size_bytes(),
        last.subjects() > 0 ? static_cast<double>(last.size_bytes()) / last.subjects() : 0.0,
        request.pseudonymize() ? ", pseudonymized" : "",
        absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))), path);
  }
  return 0;
}

int Verify(const std::string& path) {
  const std::string key_file = absl::GetFlag(FLAGS_public_key);
  if (key_file.empty()) Usage("snapshot verify needs --public_key=PEM_FILE");
  absl::StatusOr<std::string> key = snapshot::ReadPublicKeyFile(key_file);
  if (!key.ok()) return Fail(key.status());
  const absl::Time start = absl::Now();
  auto loaded = offline::OfflineRegistry::Load(path, *key);
  if (!loaded.ok()) return Fail(loaded.status());
  const snapshot::SnapshotInfo& info = (*loaded)->info();
  std::cout << absl::StrFormat(
      "%s: signature good (Ed25519 %s); revision %d taken %s; %d subjects, %d exclusions; "
      "policy version %s%s; loaded in %s\n",
      path, snapshot::Hex(*key), info.revision, absl::FormatTime(info.create_time), info.subjects,
      info.exclusions, (*loaded)->policy()->version(),
      info.pseudonymized ? "; user ids pseudonymized" : "",
      absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))));
  return 0;
}

}  // namespace

int SnapshotCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 3) Usage("snapshot takes export FILE or verify FILE");
  if (args[1] == "export") return Export(client, args[2]);
  if (args[1] == "verify") return Verify(args[2]);
  Usage(absl::StrCat("unknown snapshot command \"", args[1], "\""));
}

}  // namespace consent::consentctl
