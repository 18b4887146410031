#include "server/snapshot_export.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/snapshot_format.h"
#include "core/subject_view.h"

namespace consent {

absl::Status SnapshotExporter::Export(
    const v1::ExportSnapshotRequest& request,
    const std::function<bool(const v1::ExportSnapshotResponse&)>& send,
    const std::function<bool()>& stopped) const {
  if (!signing_) {
    return absl::FailedPreconditionError(
        "snapshots are signed: consentd runs without --snapshot_signing_key_file");
  }
  if (request.pseudonymize() && pseudonym_key_.empty()) {
    return absl::FailedPreconditionError(
        "pseudonymize: consentd runs without --pseudonymize_key_file");
  }
  v1::ExportSnapshotResponse message;
  snapshot::Sha256 sha;
  uint64_t size = 0;
  bool gone = false;
  auto emit = [&](absl::string_view bytes) {
    sha.Update(bytes);
    size += bytes.size();
    message.set_chunk(std::string(bytes));
    if (!send(message)) {
      gone = true;
      return absl::CancelledError("the client went away");
    }
    return absl::OkStatus();
  };
  snapshot::SnapshotWriter writer(emit);
  snapshot::SnapshotInfo info;
  info.pseudonymized = request.pseudonymize();
  // Views are decoded onto an arena, replaced now and then: it only grows.
  auto arena = std::make_unique<SubjectViewArena>();
  int64_t in_arena = 0;
  int64_t subjects = 0;
  std::vector<snapshot::Exclusion> exclusions;
  absl::Status status = store_->ScanSubjects(
      [&](int64_t revision) {
        // Taken while no commit runs: the policy and time belong with the
        // revision (a policy activation is not a commit, so one racing
        // this is in force from about now either way).
        info.revision = revision;
        info.create_time = clock_->Now();
        info.policy_text = policies_->Get()->text();
        message.set_revision(revision);
      },
      [&](const v1::Subject& subject, const storage::ConsentStore::ExclusionPairs& pairs) {
        if (++in_arena == 4096) {
          // Now and then, not per subject: a sync call's IsCancelled polls
          // its completion queue (about 15 µs).
          if (stopped()) return absl::CancelledError("consentd is shutting down");
          arena = std::make_unique<SubjectViewArena>();
          in_arena = 0;
        }
        const SubjectView* view = arena->Decode(DecisionView(subject));
        if (view == nullptr)
          return absl::DataLossError("a subject's decision view does not decode");
        ++subjects;
        exclusions.clear();
        for (const auto& [content_id, purpose] : pairs) exclusions.push_back({content_id, purpose});
        return writer.Add(request.pseudonymize()
                              ? snapshot::Pseudonym(pseudonym_key_, subject.user_id())
                              : subject.user_id(),
                          *view, std::move(exclusions));
      });
  if (!status.ok()) return status;
  absl::StatusOr<uint64_t> written = writer.Finish(info);
  if (!written.ok()) return written.status();
  absl::StatusOr<std::string> trailer = signing_->Trailer(sha.Finish());
  if (!trailer.ok()) return trailer.status();
  message.set_chunk(*std::move(trailer));
  message.set_last(true);
  message.set_subjects(subjects);
  message.set_size_bytes(static_cast<int64_t>(*written + snapshot::kTrailerSize));
  if (gone || !send(message)) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

}  // namespace consent
