#include "client/offline/offline_registry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/proto_time.h"
#include "core/snapshot_signing.h"
#include "core/subject_view.h"
#include "core/validation.h"

namespace consent::offline {

// A subject changed since the snapshot: its state folded from the
// snapshot's record and the events applied since, and its decision view.
struct OfflineRegistry::Changed {
  SubjectAsOf state;
  std::unique_ptr<SubjectViewArena> arena;
  const SubjectView* view = nullptr;

  void Rebuild() {
    arena = std::make_unique<SubjectViewArena>();
    view = state.exists ? arena->Decode(DecisionView(state.subject)) : nullptr;
  }
};

namespace {

// The record's state as the server holds it, for the decisions: what a
// snapshot keeps of a subject (its decision view) as a v1::Subject.
void SeedState(absl::string_view user_id, const SubjectView& view,
               const std::vector<snapshot::Exclusion>& exclusions, SubjectAsOf* state) {
  v1::Subject& s = state->subject;
  s.set_user_id(std::string(user_id));
  v1::SubjectAttributes* attributes = s.mutable_attributes();
  attributes->set_jurisdiction(std::string(view.jurisdiction));
  if (view.birth_date) {
    attributes->mutable_birth_date()->set_year(view.birth_date->year);
    attributes->mutable_birth_date()->set_month(view.birth_date->month);
    attributes->mutable_birth_date()->set_day(view.birth_date->day);
  }
  attributes->set_account_state(view.account_state);
  for (const PreferenceView& p : view.preferences) {
    v1::Preference* preference = s.add_preferences();
    preference->set_purpose(std::string(p.purpose));
    preference->set_state(p.state);
    if (p.effective_time) *preference->mutable_effective_time() = ToProto(*p.effective_time);
    if (p.expire_time) *preference->mutable_expire_time() = ToProto(*p.expire_time);
    preference->set_revision(p.revision);
  }
  // Each covered purpose's earliest delivery, under no notice id: events
  // name theirs (1-128 bytes), so they never merge with these.
  for (const NoticeView& n : view.notices) {
    v1::NoticeDelivery* notice = s.add_notices();
    notice->add_purposes(std::string(n.purpose));
    *notice->mutable_delivery_time() = ToProto(n.delivery_time);
  }
  for (const snapshot::Exclusion& e : exclusions) {
    state->exclusions[e.content_id].push_back(e.purpose);
  }
  s.set_exclusion_count(static_cast<int64_t>(exclusions.size()));
  s.set_revision(view.revision);
  state->exists = true;
}

const std::vector<std::string> kNoExclusions;

}  // namespace

absl::StatusOr<std::unique_ptr<OfflineRegistry>> OfflineRegistry::Load(
    const std::string& path, absl::string_view public_key) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot read snapshot ", path, ": ", strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat("snapshot ", path, " is empty"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  // Populated at once: the signature check reads every byte anyway, and
  // the kernel maps the pages faster than faults one by one would.
  void* mapped = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot map snapshot ", path, ": ", strerror(errno)));
  }
  std::unique_ptr<OfflineRegistry> registry(new OfflineRegistry());
  registry->mapped_ = mapped;
  registry->mapped_size_ = size;
  const absl::string_view bytes(static_cast<const char*>(mapped), size);
  auto prefixed = [&path](const absl::Status& s) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot ", path, ": ", s.message()));
  };
  absl::StatusOr<absl::string_view> body = snapshot::VerifySigned(bytes, public_key);
  if (!body.ok()) return prefixed(body.status());
  absl::StatusOr<snapshot::SnapshotReader> reader = snapshot::SnapshotReader::Open(*body);
  if (!reader.ok()) return prefixed(reader.status());
  registry->reader_ = *std::move(reader);
  absl::StatusOr<std::shared_ptr<const CompiledPolicy>> policy =
      CompiledPolicy::FromText(registry->reader_.info().policy_text, "in the snapshot");
  if (!policy.ok()) return prefixed(policy.status());
  // Lookups from here on go wherever the ids lead.
  madvise(mapped, size, MADV_RANDOM);
  absl::MutexLock lock(&registry->mu_);
  registry->policy_ = *std::move(policy);
  registry->revision_ = registry->reader_.info().revision;
  return registry;
}

OfflineRegistry::~OfflineRegistry() {
  if (mapped_ != nullptr) munmap(mapped_, mapped_size_);
}

int64_t OfflineRegistry::revision() const {
  absl::ReaderMutexLock lock(&mu_);
  return revision_;
}

std::shared_ptr<const CompiledPolicy> OfflineRegistry::policy() const {
  absl::ReaderMutexLock lock(&mu_);
  return policy_;
}

absl::Status OfflineRegistry::SetPolicy(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const CompiledPolicy>> policy =
      CompiledPolicy::FromText(text, "from the server");
  if (!policy.ok()) return policy.status();
  absl::MutexLock lock(&mu_);
  policy_ = *std::move(policy);
  return absl::OkStatus();
}

size_t OfflineRegistry::changed_subjects() const {
  absl::ReaderMutexLock lock(&mu_);
  return changed_.size();
}

absl::Status OfflineRegistry::Lookup(absl::string_view user_id, uint64_t snapshot_offset,
                                     absl::string_view content_id,
                                     snapshot::SnapshotReader::Scratch* scratch,
                                     SubjectView* storage, const SubjectView** record,
                                     absl::Span<const std::string>* excluded) const {
  if (!changed_.empty()) {
    if (auto it = changed_.find(user_id); it != changed_.end()) {
      const Changed& changed = *it->second;
      *record = changed.view;
      auto found = changed.state.exclusions.find(content_id);
      *excluded = found == changed.state.exclusions.end() ? kNoExclusions : found->second;
      return absl::OkStatus();
    }
  }
  if (snapshot_offset == 0) {
    *record = nullptr;
    *excluded = {};
    return absl::OkStatus();
  }
  if (absl::Status s = reader_.Decode(snapshot_offset, content_id, scratch, storage); !s.ok()) {
    return s;
  }
  *record = storage;
  *excluded = scratch->excluded;
  return absl::OkStatus();
}

absl::Status OfflineRegistry::Check(const v1::CheckRequest& request, absl::Time at,
                                    v1::Decision* decision) const {
  Violations v;
  if (std::string p = PurposeProblem(request.purpose()); !p.empty()) v.Add("purpose", p);
  ValidateCheckItem(request.user_id(), request.has_content(), request.content(), -1, &v);
  if (request.has_as_of()) {
    v.Add("as_of", "is not answered offline: a snapshot holds one revision; ask the server");
  }
  if (!v.empty()) return v.ToStatus();
  absl::ReaderMutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  if (request.min_revision() > revision_) {
    return absl::FailedPreconditionError(absl::StrCat("min_revision ", request.min_revision(),
                                                      " is ahead of the offline copy's ", revision_,
                                                      ": catch up first"));
  }
  if (absl::Status s = CheckPurposeDefined(request.purpose(), *policy_); !s.ok()) return s;
  ValidateCreateTime(
      request.content(), at, [] { return std::string("content"); }, &v);
  if (!v.empty()) return v.ToStatus();
  const uint64_t offset = reader_.Find(request.user_id(), snapshot::IdHash(request.user_id()));
  snapshot::SnapshotReader::Scratch scratch;
  SubjectView storage;
  const SubjectView* record = nullptr;
  absl::Span<const std::string> excluded;
  if (absl::Status s = Lookup(request.user_id(), offset, request.content().content_id(), &scratch,
                              &storage, &record, &excluded);
      !s.ok()) {
    return s;
  }
  const Verdict verdict =
      Decide(*policy_, CheckSubject{record, excluded}, request.purpose(), request.content(), at);
  FillDecision(verdict, *policy_, revision_, decision);
  return absl::OkStatus();
}

absl::Status OfflineRegistry::CheckMany(absl::string_view purpose,
                                        absl::Span<const absl::string_view> user_ids,
                                        absl::Span<const absl::string_view> content_ids,
                                        absl::Span<const v1::Content> contents, absl::Time at,
                                        OfflineDecision* out) const {
  if (contents.size() != 1 && contents.size() != user_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat("contents: ", contents.size(), " for ",
                                                   user_ids.size(), " user ids (1 or as many)"));
  }
  if (!content_ids.empty() && content_ids.size() != user_ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("content_ids: ", content_ids.size(), " for ", user_ids.size(), " user ids"));
  }
  absl::ReaderMutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  const CompiledPolicy& policy = *policy_;
  if (absl::Status s = CheckPurposeDefined(purpose, policy); !s.ok()) return s;
  RuleFinder rules(policy, purpose);
  snapshot::SnapshotReader::Scratch scratch;
  SubjectView storage;
  // Items go in groups: every slot of a group is read, then every
  // record's first lines, then each item is decided. A group's reads are
  // independent of each other, so they are in flight together and cost
  // about one memory latency per stage, not one per item.
  constexpr size_t kGroup = 64;
  uint64_t hashes[kGroup];
  uint64_t located[kGroup];
  const size_t n = user_ids.size();
  for (size_t i = 0; i < n; ++i) {
    if (i % kGroup == 0) {
      const size_t end = std::min(n, i + kGroup);
      for (size_t k = i; k < end; ++k) hashes[k - i] = snapshot::IdHash(user_ids[k]);
      for (size_t k = i; k < end; ++k) located[k - i] = reader_.Locate(hashes[k - i]);
      for (size_t k = i; k < end; ++k) reader_.Load(located[k - i]);
    }
    const v1::Content& content = contents.size() == 1 ? contents[0] : contents[i];
    const absl::string_view content_id =
        content_ids.empty() ? absl::string_view(content.content_id()) : content_ids[i];
    const uint64_t offset = reader_.Find(user_ids[i], hashes[i % kGroup], located[i % kGroup]);
    const SubjectView* record = nullptr;
    absl::Span<const std::string> excluded;
    if (absl::Status s =
            Lookup(user_ids[i], offset, content_id, &scratch, &storage, &record, &excluded);
        !s.ok()) {
      return s;
    }
    const Verdict verdict =
        Decide(policy, CheckSubject{record, excluded}, purpose, content, at, nullptr, &rules);
    out[i] = {verdict.reason, IsAllowed(verdict.reason)};
  }
  return absl::OkStatus();
}

absl::Status OfflineRegistry::Apply(const v1::ChangeEvent& event) {
  if (event.change_case() == v1::ChangeEvent::CHANGE_NOT_SET) {
    return absl::InvalidArgumentError(absl::StrCat(
        "event of revision ", event.revision(),
        " carries no change: the feed redacts attribute values for callers without the auditor "
        "role, and an offline copy needs them"));
  }
  absl::MutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  if (event.revision() != revision_ + 1) {
    return absl::InvalidArgumentError(absl::StrCat("event of revision ", event.revision(),
                                                   " does not follow the offline copy's revision ",
                                                   revision_));
  }
  std::unique_ptr<Changed>& changed = changed_[event.user_id()];
  if (changed == nullptr) {
    changed = std::make_unique<Changed>();
    const uint64_t offset = reader_.Find(event.user_id(), snapshot::IdHash(event.user_id()));
    if (offset != 0) {
      snapshot::SnapshotReader::Scratch scratch;
      SubjectView view;
      std::vector<snapshot::Exclusion> exclusions;
      if (absl::Status s = reader_.DecodeAll(offset, &scratch, &view, &exclusions); !s.ok()) {
        changed_.erase(event.user_id());
        return s;
      }
      SeedState(event.user_id(), view, exclusions, &changed->state);
    }
  }
  ApplyEvent(event, &changed->state);
  changed->Rebuild();
  if (changed->state.exists && changed->view == nullptr) {
    // Never answered as "no record", which could allow what the record
    // denies: the copy decides nothing more.
    failed_ =
        absl::InternalError(absl::StrCat("the offline copy is unusable: the state of a "
                                         "subject after revision ",
                                         event.revision(), " does not decode"));
    return failed_;
  }
  revision_ = event.revision();
  return absl::OkStatus();
}

absl::Status OfflineRegistry::Advance(int64_t revision) {
  absl::MutexLock lock(&mu_);
  if (revision < revision_) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint at revision ", revision,
                                                   " is behind the offline copy's ", revision_));
  }
  revision_ = revision;
  return absl::OkStatus();
}

}  // namespace consent::offline
