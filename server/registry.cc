#include "server/registry.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/validation.h"
#include "server/log.h"
#include "server/policy_change.h"

namespace consent {

absl::Status Registry::LoadStoredPolicies() {
  auto records = store_->ListPolicies();
  if (!records.ok()) return records.status();
  for (const auto& record : *records) {
    const std::string name =
        absl::StrCat("stored policy active from ", absl::FormatTime(record.activate_time));
    auto compiled = CompiledPolicy::FromText(record.text, name);
    if (!compiled.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a policy kept for point-in-time checks no longer loads: ", compiled.status().message()));
    }
    policies_->Activate(record.activate_time, *std::move(compiled));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Registry::CheckActivation(const CompiledPolicy& next) {
  const auto current = policies_->Get();
  if (current == nullptr) return true;
  if (current->text() == next.text()) return false;  // nothing new
  if (current->version() == next.version()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the policy text changed but its version \"", next.version(),
        "\" is the active policy's; decisions record the version, so give the new policy a "
        "new version"));
  }
  // A policy that allows more than the one in force must say so itself.
  auto changes = LooseningChanges(*current, next, [this](const std::vector<std::string>& dropped) {
    return store_->PurposesInUse(dropped);
  });
  if (!changes.ok()) return changes.status();
  if (absl::Status s = CheckLoosening(*current, next, *changes); !s.ok()) return s;
  return true;
}

absl::StatusOr<PolicyChange> Registry::ActivatePolicyAt(std::shared_ptr<const CompiledPolicy> next,
                                                        absl::Time now) {
  absl::MutexLock lock(&activate_mu_);
  const auto current = policies_->Get();
  PolicyChange change;
  change.version = next->version();
  change.previous_version = current ? current->version() : "";
  auto changed = CheckActivation(*next);
  if (!changed.ok()) return changed.status();
  if (!*changed) return change;
  auto at = store_->RecordPolicy(now, next->text());
  if (!at.ok()) return at.status();
  policies_->Activate(*at, std::move(next));
  change.changed = true;
  return change;
}

absl::Status Registry::CreateBackup(const v1::CreateBackupRequest& request,
                                    v1::CreateBackupResponse* response) {
  // A name, not a path: a caller with the admin role can write backups
  // under --backup_dir only, never elsewhere on the server's disk.
  const std::string& name = request.directory();
  if (name.empty()) return FieldError("directory", "is required");
  const bool well_formed = name.size() <= 128 && name != "." && name != ".." &&
                           std::all_of(name.begin(), name.end(), [](char c) {
                             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
                           });
  if (!well_formed) {
    return FieldError("directory",
                      "must be the name of a new directory under the server's --backup_dir: "
                      "1-128 of [A-Za-z0-9._-], not . or .. (a name, not a path)");
  }
  if (backup_dir_.empty()) {
    return absl::FailedPreconditionError(
        "backups are disabled: consentd was started without --backup_dir");
  }
  const std::string directory = absl::StrCat(backup_dir_, "/", name);
  auto position = store_->Checkpoint(directory);
  if (!position.ok()) return position.status();
  response->set_directory(directory);
  response->set_revision(position->revision);
  response->set_applied_log_sequence(position->applied_sequence);
  if (backup_keep_ > 0) {
    // The backup itself succeeded; a failure to prune is logged, not
    // returned.
    auto pruned = storage::PruneBackups(backup_dir_, static_cast<size_t>(backup_keep_));
    if (!pruned.ok()) {
      LogWarning("removing old backups failed", {{"error", pruned.status().ToString()}});
    } else {
      for (const std::string& old : *pruned) {
        LogInfo("removed an old backup (--backup_keep)", {{"directory", old}});
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace consent
