// The consent policy: a consent.v1.Policy in text format, validated and
// compiled into lookup tables. A CompiledPolicy is immutable; the active one
// is swapped atomically by PolicyHolder, so a check sees one whole policy.
#ifndef CONSENT_CORE_POLICY_H_
#define CONSENT_CORE_POLICY_H_

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "consent/v1/policy.pb.h"
#include "google/protobuf/descriptor.h"

namespace consent {

// PurposeRule.min_notice_days at most (about ten years).
inline constexpr int kMaxNoticeDays = 3650;

// A validated consent.v1.Policy with what decisions look up precomputed
// (purposes, the rule of each jurisdiction and purpose). Immutable once
// built, so shared freely between threads; PolicyHolder swaps the active
// one atomically.
class CompiledPolicy {
 public:
  // Parses and validates `text`. Errors are kInvalidArgument naming
  // `source_name`, the line (for parse errors) and the reason.
  static absl::StatusOr<std::shared_ptr<const CompiledPolicy>> FromText(
      std::string text, absl::string_view source_name);
  // Reads `path`; kNotFound, naming it, when it cannot be read (missing or
  // not readable).
  static absl::StatusOr<std::shared_ptr<const CompiledPolicy>> FromFile(const std::string& path);

  const std::string& version() const { return proto_.version(); }
  const v1::Policy& proto() const { return proto_; }
  const std::string& text() const { return text_; }

  bool HasPurpose(absl::string_view purpose) const { return purposes_.contains(purpose); }

  // The rule deciding `purpose` for a subject in `jurisdiction`: the rule
  // set of the jurisdiction's group (an unlisted subdivision "US-CA" falls
  // back to "US"; unknown or empty: the default rules), then the most
  // specific rule along the purpose path. nullptr when there is none.
  const v1::PurposeRule* FindRule(absl::string_view jurisdiction, absl::string_view purpose) const;

  // The name of the jurisdiction group whose rules apply, or "default".
  absl::string_view GroupName(absl::string_view jurisdiction) const;

 private:
  using RuleIndex = absl::flat_hash_map<std::string, const v1::PurposeRule*>;

  CompiledPolicy() = default;
  // Index of the group whose rules apply, or -1 for the default rules.
  int GroupIndex(absl::string_view jurisdiction) const;

  v1::Policy proto_;
  std::string text_;
  absl::flat_hash_set<std::string> purposes_;
  // Rule index per jurisdiction group, in the order of the proto.
  std::vector<RuleIndex> group_rules_;
  RuleIndex default_rules_;
  absl::flat_hash_map<std::string, size_t> group_of_jurisdiction_;
};

// CompiledPolicy::FindRule for one purpose, remembering the rules of the
// last few jurisdictions asked about: a batch asks about one purpose for
// many subjects from few jurisdictions, and FindRule's two or three hash
// lookups per item were 5.6% of consentd's samples under BatchCheck
// (docs/performance.md). Not thread safe; `policy` must outlive it.
class RuleFinder {
 public:
  RuleFinder(const CompiledPolicy& policy, absl::string_view purpose)
      : policy_(policy), purpose_(purpose) {}

  // policy.FindRule(jurisdiction, purpose).
  const v1::PurposeRule* Find(absl::string_view jurisdiction) {
    for (size_t i = 0; i < size_; ++i) {
      if (recent_[i].first == jurisdiction) return recent_[i].second;
    }
    const v1::PurposeRule* rule = policy_.FindRule(jurisdiction, purpose_);
    recent_[next_] = {std::string(jurisdiction), rule};
    next_ = (next_ + 1) % kRecent;
    size_ = std::max(size_, next_ == 0 ? kRecent : next_);
    return rule;
  }

 private:
  static constexpr size_t kRecent = 8;
  const CompiledPolicy& policy_;
  std::string purpose_;
  std::array<std::pair<std::string, const v1::PurposeRule*>, kRecent> recent_;
  size_t size_ = 0;  // entries of recent_ in use
  size_t next_ = 0;  // the entry to replace next
};

// Holds the active policy and every version activated before it, with the
// time each became active (for as_of checks). Get() is lock-free in
// practice (std::atomic_load on a shared_ptr) and returns a snapshot that
// stays valid while the caller holds it; a check therefore sees one whole
// policy even while another is activated.
class PolicyHolder {
 public:
  PolicyHolder() = default;

  // The active policy; null until the first Activate.
  std::shared_ptr<const CompiledPolicy> Get() const { return std::atomic_load(&current_); }

  // Makes `policy` active from `at` on (not earlier than the previous
  // activation) and returns the previous one (null for the first).
  std::shared_ptr<const CompiledPolicy> Activate(absl::Time at,
                                                 std::shared_ptr<const CompiledPolicy> policy);

  // The policy that was active at `at`; null before the first activation.
  std::shared_ptr<const CompiledPolicy> ActiveAt(absl::Time at) const;

  // When the first policy became active (InfinitePast when none has).
  absl::Time first_activation() const;

 private:
  std::shared_ptr<const CompiledPolicy> current_;
  mutable absl::Mutex mu_;
  std::vector<std::pair<absl::Time, std::shared_ptr<const CompiledPolicy>>> history_
      ABSL_GUARDED_BY(mu_);
};

// "ai_training.generative.images" -> "ai_training.generative" -> "ai_training"
// -> "" (done). Returns the parent of `purpose`, or "" for a root.
absl::string_view ParentPurpose(absl::string_view purpose);

}  // namespace consent

#endif  // CONSENT_CORE_POLICY_H_
