// The in-memory subject index over the real RocksDB: what it serves, its
// load at Open (and writes during it), and what happens when a record does
// not parse.
#include "storage/subject_index.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/audit_chain.h"
#include "storage/consent_store.h"
#include "storage/history_runs.h"
#include "storage/keys.h"
#include "tests/storage/store_test_util.h"
#include "tests/test_util.h"

namespace consent::storage {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Opens with the subject index. With `pause`, the load stops once it has
// taken its snapshot (snapshot_taken) until `resume` is notified.
struct IndexedStore {
  explicit IndexedStore(StoreOptions options, bool pause = false) {
    options.subject_index = true;
    if (pause) {
      options.on_index_snapshot = [this] {
        snapshot_taken.Notify();
        resume.WaitForNotification();
      };
    }
    options.on_index_loaded = [this](const absl::Status& s, int64_t subjects, absl::Duration) {
      load_status = s;
      loaded_subjects = subjects;
      ++load_reports;
      loaded.Notify();
    };
    auto opened = ConsentStore::Open(options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (opened.ok()) store = *std::move(opened);
  }
  ~IndexedStore() {
    if (!resume.HasBeenNotified()) resume.Notify();
    if (store) store->Close().IgnoreError();
    EXPECT_EQ(load_reports.load(), 1);
  }
  // The view GetSubjects gives of one user (null: none), on `arena`.
  const SubjectView* Read(absl::string_view user) {
    std::vector<const SubjectView*> records;
    EXPECT_TRUE(store->GetSubjects({&user, 1}, &arena, &records).ok());
    return records.at(0);
  }
  int64_t Ready() { return store->Stats()->index_ready; }

  std::unique_ptr<ConsentStore> store;
  SubjectViewArena arena;
  absl::Notification snapshot_taken, resume;
  absl::Notification loaded;
  absl::Status load_status;
  int64_t loaded_subjects = -1;
  std::atomic<int> load_reports{0};
};

// A batch from the index: every item gets its own user's view, in order,
// with users repeated many times (ParseMany parses a repeat once), users
// sharing its memory of the batch (1,000 users for 256 places), and users
// without a record.
TEST(StoreTest, SubjectIndexBatchWithRepeatedUsersGivesEachItsOwnView) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  ConsentStore& store = *indexed.store;
  constexpr int kUsers = 1000;
  std::vector<SubjectUpdate> updates;
  for (int u = 0; u < kUsers; ++u) {
    updates.push_back(SetJurisdiction(absl::StrCat("user-", u), absl::StrCat("J", u)));
  }
  ASSERT_TRUE(Commit(store, std::move(updates)).ok());
  std::vector<std::string> names;
  std::vector<int> users;  // -1: a user without a record
  for (int i = 0; i < 5000; ++i) {
    // Item i: user 0 every third item, else one of 1,000 (some repeated,
    // 1 in 10 without a record).
    const int u = i % 3 == 0 ? 0 : (i * 7919) % (kUsers + kUsers / 10);
    users.push_back(u < kUsers ? u : -1);
    names.push_back(u < kUsers ? absl::StrCat("user-", u) : absl::StrCat("nobody-", u));
  }
  const std::vector<absl::string_view> ids(names.begin(), names.end());
  SubjectViewArena arena;
  std::vector<const SubjectView*> records;
  ASSERT_TRUE(store.GetSubjects(ids, &arena, &records).ok());
  ASSERT_EQ(records.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (users[i] < 0) {
      EXPECT_EQ(records[i], nullptr) << ids[i];
    } else {
      ASSERT_NE(records[i], nullptr) << ids[i];
      EXPECT_EQ(records[i]->jurisdiction, absl::StrCat("J", users[i])) << ids[i];
    }
  }
}

TEST(StoreTest, SubjectIndexServesEveryAcknowledgedWriteAndIsRebuiltAtOpen) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    IndexedStore indexed(options);
    indexed.loaded.WaitForNotification();
    ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
    EXPECT_EQ(indexed.loaded_subjects, 0);
    EXPECT_EQ(indexed.Ready(), 1);
    ConsentStore& store = *indexed.store;
    ASSERT_TRUE(Commit(store, {SetJurisdiction("alice", "GB")}).ok());
    ASSERT_TRUE(
        Commit(store, {SetJurisdiction("alice", "DE"), Object("alice", "ai_training")}).ok());
    // GetSubjects: the decision view, from the index.
    SubjectViewArena arena;
    std::vector<const SubjectView*> records;
    const std::vector<absl::string_view> ids = {"bob", "alice"};
    ASSERT_TRUE(store.GetSubjects(ids, &arena, &records).ok());
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[0], nullptr);
    ASSERT_NE(records[1], nullptr);
    EXPECT_EQ(records[1]->jurisdiction, "DE");
    EXPECT_EQ(records[1]->revision, 3);
    ASSERT_EQ(records[1]->preferences.size(), 1u);
    const PreferenceView& view = records[1]->preferences[0];
    EXPECT_EQ(view.purpose, "ai_training");
    EXPECT_EQ(view.state, v1::PREFERENCE_STATE_OBJECTED);
    EXPECT_EQ(view.revision, 3);
    EXPECT_EQ(view.expire_time, absl::FromUnixSeconds(1'900'000'000));
    EXPECT_EQ(view.effective_time, std::nullopt);
    // GetSubject: the whole record, from RocksDB.
    auto full = store.GetSubject("alice");
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(full->preferences(0).source().channel(), "settings");
    EXPECT_TRUE(full->has_update_time());
    EXPECT_EQ(store.GetSubject("bob").status().code(), absl::StatusCode::kNotFound);
    auto stats = store.Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->index_subjects, 1);
    EXPECT_GT(stats->index_bytes, 0);
  }
  // Written without the index; opened with it: loaded from RocksDB.
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("carol", "IE")}).ok());
    EXPECT_EQ(store->Stats()->index_ready, -1);
  }
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
  EXPECT_EQ(indexed.loaded_subjects, 2);
  EXPECT_EQ(indexed.Ready(), 1);
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "DE");
  EXPECT_EQ(indexed.Read("alice")->preferences[0].state, v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
  EXPECT_EQ(indexed.Read("bob"), nullptr);
}

// The index keeps of the notices only each covered purpose's earliest
// delivery, as a purpose number and Unix seconds rounded up: 9 bytes for a
// subject notified once of one purpose.
TEST(StoreTest, DecisionViewKeepsEachPurposesFirstNoticeCompactly) {
  v1::Subject subject;
  subject.set_user_id("alice");
  subject.mutable_attributes()->set_jurisdiction("GB");
  subject.set_revision(12);
  const std::string without = DecisionView(subject);
  v1::NoticeDelivery* first = subject.add_notices();
  first->set_notice_id("ai-notice");
  first->set_notice_version("2026-05");
  first->add_purposes("ai_training");
  first->mutable_delivery_time()->set_seconds(1'780'000'000);
  first->set_revision(3);
  const std::string one = DecisionView(subject);
  EXPECT_EQ(one.size() - without.size(), 9u);

  v1::NoticeDelivery* second = subject.add_notices();
  second->set_notice_id("ai-notice");
  second->set_notice_version("2026-06");
  second->add_purposes("ai_training");
  second->add_purposes("ai_training.ranking");
  second->mutable_delivery_time()->set_seconds(1'790'000'000);
  second->mutable_delivery_time()->set_nanos(1);
  SubjectViewArena arena;
  const SubjectView* view = arena.Decode(DecisionView(subject));
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->jurisdiction, "GB");
  std::map<std::string, absl::Time> first_delivery;
  for (const NoticeView& n : view->notices) {
    EXPECT_TRUE(first_delivery.emplace(std::string(n.purpose), n.delivery_time).second);
    EXPECT_EQ(n.notice_id, "");
  }
  EXPECT_THAT(
      first_delivery,
      ElementsAre(
          std::pair(std::string("ai_training"), absl::FromUnixSeconds(1'780'000'000)),
          std::pair(std::string("ai_training.ranking"), absl::FromUnixSeconds(1'790'000'001))));
}

// The index loads in the background from a snapshot. Writes made while it
// loads are read from RocksDB until it is ready, and the load must not put
// the snapshot's older record over them.
TEST(StoreTest, WritesDuringTheIndexLoadAreKept) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(
        Commit(*store, {SetJurisdiction("alice", "GB"), SetJurisdiction("bob", "GB")}).ok());
  }
  IndexedStore indexed(options, /*pause=*/true);
  indexed.snapshot_taken.WaitForNotification();
  EXPECT_EQ(indexed.Ready(), 0);
  ASSERT_TRUE(
      Commit(*indexed.store, {SetJurisdiction("alice", "DE"), Object("alice", "ai_training"),
                              SetJurisdiction("carol", "IE")})
          .ok());
  // Not loaded yet: read from RocksDB.
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "DE");
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
  indexed.resume.Notify();
  indexed.loaded.WaitForNotification();
  ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
  EXPECT_EQ(indexed.loaded_subjects, 2);  // the snapshot's alice and bob
  EXPECT_EQ(indexed.Ready(), 1);
  EXPECT_EQ(indexed.store->Stats()->index_subjects, 3);
  const auto alice = indexed.Read("alice");
  EXPECT_EQ(alice->jurisdiction, "DE");
  ASSERT_EQ(alice->preferences.size(), 1u);
  EXPECT_EQ(alice->revision, 4);
  EXPECT_EQ(indexed.Read("bob")->jurisdiction, "GB");
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
}

// Closing while the index loads stops the load; it reports once.
TEST(StoreTest, CloseStopsTheIndexLoad) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    std::vector<SubjectUpdate> updates;
    for (int i = 0; i < 2000; ++i) updates.push_back(SetJurisdiction(absl::StrCat("u", i), "GB"));
    ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  }
  IndexedStore indexed(options, /*pause=*/true);
  indexed.snapshot_taken.WaitForNotification();
  std::thread closer([&] { EXPECT_TRUE(indexed.store->Close().ok()); });
  // Close asks the loader to stop before it waits for it, so whatever the
  // order here, the load ends (cancelled, or complete if it won the race).
  indexed.resume.Notify();
  closer.join();
  ASSERT_TRUE(indexed.loaded.HasBeenNotified());
  EXPECT_TRUE(indexed.load_status.ok() || absl::IsCancelled(indexed.load_status))
      << indexed.load_status;
  EXPECT_EQ(indexed.store->GetSubject("u1").status().code(), absl::StatusCode::kFailedPrecondition);
}

// A subject record that does not parse: the index is not used (reads stay
// on RocksDB, which reports that record as lost, and serve the others).
TEST(StoreTest, AnUnreadableRecordLeavesReadsOnRocksDb) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  }
  {
    RawDb raw(options.data_dir);
    ASSERT_TRUE(
        raw.db()->Put(rocksdb::WriteOptions(), raw.family("subjects"), "mallory", "\xff\xff").ok());
  }
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  EXPECT_EQ(indexed.load_status.code(), absl::StatusCode::kDataLoss) << indexed.load_status;
  EXPECT_EQ(indexed.Ready(), 0);
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "GB");
  const absl::string_view mallory = "mallory";
  std::vector<const SubjectView*> records;
  EXPECT_EQ(indexed.store->GetSubjects({&mallory, 1}, &indexed.arena, &records).code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace consent::storage
