// consent_offline: decisions inside a training job, from a signed snapshot
// of the registry (ExportSnapshot) kept current by the change feed
// (docs/offline.md). The rules are the server's own (core/decision_engine.h,
// linked here as in consentd); this library adds the snapshot's lookup
// and the changes applied since. No gRPC, no RocksDB: catch_up.h follows
// the feed through the client library.
#ifndef CONSENT_CLIENT_OFFLINE_OFFLINE_REGISTRY_H_
#define CONSENT_CLIENT_OFFLINE_OFFLINE_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "consent/v1/registry.pb.h"
#include "core/decision_engine.h"
#include "core/history.h"
#include "core/policy.h"
#include "core/snapshot_format.h"

namespace consent::offline {

// A decision without its strings: what a batch returns per item.
struct OfflineDecision {
  v1::DecisionReason reason = v1::DECISION_REASON_UNSPECIFIED;
  bool allowed = false;
};

// Thread safe: checks run concurrently with each other and with Apply
// (a batch sees the changes applied before it started, or all of one
// event, never part of one).
class OfflineRegistry {
 public:
  // Maps the snapshot file at `path` and checks, before anything is
  // answered: its signature under `public_key` (raw, 32 bytes:
  // snapshot::ReadPublicKeyFile), its structure and its policy (parsed
  // and validated as consentd does). kNotFound when the file cannot be
  // read; kInvalidArgument, saying why, when a check fails.
  static absl::StatusOr<std::unique_ptr<OfflineRegistry>> Load(const std::string& path,
                                                               absl::string_view public_key);
  ~OfflineRegistry();

  const snapshot::SnapshotInfo& info() const { return reader_.info(); }
  // The snapshot as loaded, before any change applied (benchmarks time
  // its lookups alone).
  const snapshot::SnapshotReader& snapshot() const { return reader_; }
  // The revision decisions are made at: the snapshot's, then that of the
  // last event applied or checkpoint passed.
  int64_t revision() const;
  // The policy decisions follow: the snapshot's, or the one SetPolicy
  // adopted since.
  std::shared_ptr<const CompiledPolicy> policy() const;
  // Adopts the server's policy (catch_up: the server's policy may have
  // changed since the snapshot). kInvalidArgument when it does not parse.
  absl::Status SetPolicy(const std::string& text);

  // As the server's Check without as_of or min_revision: the same
  // validation (kInvalidArgument naming the field) and the same rules, at
  // evaluation time `at`. The decision carries the policy version and
  // revision().
  absl::Status Check(const v1::CheckRequest& request, absl::Time at, v1::Decision* decision) const;

  // Decides `purpose` for user_ids[i] and contents[i] (or contents[0] for
  // every item when contents has one entry) at `at`, into `out` (one per
  // user id). The content ids exclusions are looked up by are
  // content_ids[i] when content_ids is not empty (it then has one per
  // item), else the contents'. Items are not validated one by one, unlike
  // BatchCheck: the caller's ids and contents are taken as they are (the
  // Python module builds valid contents); an unknown purpose, or sizes
  // that do not match, are kInvalidArgument.
  absl::Status CheckMany(absl::string_view purpose, absl::Span<const absl::string_view> user_ids,
                         absl::Span<const absl::string_view> content_ids,
                         absl::Span<const v1::Content> contents, absl::Time at,
                         OfflineDecision* out) const;

  // Applies one change event from the feed (WatchChanges from revision()
  // + 1, in order). kInvalidArgument when the event is not the next one
  // (a gap or a repeat), or carries no change: an attributes change whose
  // values the feed redacted (callers without the auditor role) cannot be
  // applied, and a copy that skipped it would decide wrongly.
  absl::Status Apply(const v1::ChangeEvent& event);
  // A checkpoint: every event up to `revision` was delivered (or filtered
  // out, which catch_up never asks for).
  absl::Status Advance(int64_t revision);

  // Subjects changed since the snapshot (held in memory).
  size_t changed_subjects() const;

 private:
  struct Changed;
  OfflineRegistry() = default;
  // The subject's current state (from the changes, else the snapshot)
  // for `content_id`'s exclusions; `*record` null when there is none.
  absl::Status Lookup(absl::string_view user_id, uint64_t snapshot_offset,
                      absl::string_view content_id, snapshot::SnapshotReader::Scratch* scratch,
                      SubjectView* storage, const SubjectView** record,
                      absl::Span<const std::string>* excluded) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  void* mapped_ = nullptr;
  size_t mapped_size_ = 0;
  snapshot::SnapshotReader reader_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const CompiledPolicy> policy_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, std::unique_ptr<Changed>> changed_ ABSL_GUARDED_BY(mu_);
  // Set when an event could not be applied whole: then every call fails
  // with it, rather than decide from a partial state.
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace consent::offline

#endif  // CONSENT_CLIENT_OFFLINE_OFFLINE_REGISTRY_H_
