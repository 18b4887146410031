// The store over the real RocksDB: opening, revisions, reads, checkpoints,
// statistics, request ids and their purge, keys and the audit chain's
// bytes. The commit pipeline, the subject index and the history index have
// their own tests beside this one.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
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

TEST(StoreTest, NewStoreStartsAtRevisionZero) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->CurrentRevision(), 0);
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kNotFound);
}

TEST(StoreTest, RevisionsAreConsecutiveAndSurviveReopen) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction("alice", "GB"));
    updates.push_back(SetJurisdiction("bob", "FR"));
    auto result = store->Commit(std::move(updates), kNow);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_THAT(result->revisions, ElementsAre(1, 2));
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "DE")}).ok());
    EXPECT_EQ(store->CurrentRevision(), 3);
  }
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->CurrentRevision(), 3);
  auto alice = store->GetSubject("alice");
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->attributes().jurisdiction(), "DE");
  EXPECT_EQ(alice->revision(), 3);
  EXPECT_EQ(alice->create_time().seconds(), absl::ToUnixSeconds(kNow));
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("carol", "IE")}).ok());
  EXPECT_EQ(store->CurrentRevision(), 4);
}

TEST(StoreTest, FailingUpdateAbortsTheWholeCommit) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(Failing("bob"));
  EXPECT_EQ(Commit(*store, std::move(updates)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store->CurrentRevision(), 0);
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kNotFound);
  auto events = store->ReadEvents(0, 10);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(events->empty());
}

using CommitDone = std::function<void(absl::StatusOr<CommitResult>)>;

// Starts an asynchronous commit with a `done` that keeps its result, and
// waits for it.
absl::StatusOr<CommitResult> AwaitCommit(const std::function<void(CommitDone)>& start) {
  absl::StatusOr<CommitResult> result = absl::InternalError("not answered");
  absl::Notification done;
  start([&](absl::StatusOr<CommitResult> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

// Commits an import step and waits for it.
absl::StatusOr<CommitResult> ImportStepOf(ConsentStore& store, std::vector<SubjectUpdate> updates,
                                          const std::string& id, int64_t offset) {
  return AwaitCommit([&](CommitDone done) {
    store.ImportAsync(std::move(updates), kNow, ImportStep{id, offset}, std::move(done));
  });
}

TEST(StoreTest, AnImportStepAppliesOnceAndInOrder) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->ImportedThrough("onboarding"), 0);
  std::vector<SubjectUpdate> first;
  first.push_back(SetJurisdiction("alice", "GB"));
  auto applied = ImportStepOf(*store, std::move(first), "onboarding", 100);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_THAT(applied->revisions, ElementsAre(1));
  EXPECT_EQ(*store->ImportedThrough("onboarding"), 100);

  // The same step again, or an earlier one: refused, nothing written.
  for (int64_t offset : {100, 50}) {
    std::vector<SubjectUpdate> again;
    again.push_back(SetJurisdiction("bob", "GB"));
    auto refused = ImportStepOf(*store, std::move(again), "onboarding", offset);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted);
    EXPECT_THAT(refused.status().message(),
                HasSubstr("import \"onboarding\" is already applied through offset 100"));
  }
  EXPECT_EQ(store->CurrentRevision(), 1);

  // A step whose every update skips itself, or that has none, still moves
  // the import on; a skipped update gets revision 0 and writes nothing.
  std::vector<SubjectUpdate> skipped;
  skipped.push_back(SetJurisdiction("carol", "GB"));
  skipped.back().apply = [](UpdateContext& context, v1::Subject& s, v1::ChangeEvent&) {
    s.mutable_attributes()->set_jurisdiction("FR");
    context.Skip();
    return absl::OkStatus();
  };
  skipped.push_back(SetJurisdiction("dave", "GB"));
  auto partly = ImportStepOf(*store, std::move(skipped), "onboarding", 200);
  ASSERT_TRUE(partly.ok()) << partly.status();
  EXPECT_THAT(partly->revisions, ElementsAre(0, 2));
  EXPECT_EQ(store->GetSubject("carol").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(ImportStepOf(*store, {}, "onboarding", 300).ok());
  EXPECT_EQ(store->CurrentRevision(), 2);
  EXPECT_EQ(*store->ImportedThrough("other"), 0);

  // Recorded with the writes: it survives a reopen.
  ASSERT_TRUE(store->Close().ok());
  store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->ImportedThrough("onboarding"), 300);
}

// Applies a command of the replicated log and waits for it.
absl::StatusOr<CommitResult> ApplyLogged(ConsentStore& store, std::vector<SubjectUpdate> updates,
                                         int64_t sequence, RequestKey request = {}) {
  return AwaitCommit([&](CommitDone done) {
    store.ApplyLoggedAsync(std::move(updates), kNow, std::move(request), sequence, std::move(done));
  });
}

TEST(StoreTest, LoggedCommandsApplyOnceInOrderWithNoGap) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->AppliedSequence(), 0);
  std::vector<SubjectUpdate> first;
  first.push_back(SetJurisdiction("alice", "GB"));
  auto applied = ApplyLogged(*store, std::move(first), 1, RequestKey{"req-1", "f1"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_THAT(applied->revisions, ElementsAre(1));
  EXPECT_EQ(*store->AppliedSequence(), 1);

  // Delivered again, an earlier command, or one past a gap: refused as
  // not the next (kUnavailable: read the log again), nothing written.
  for (int64_t sequence : {1, 0, 3}) {
    std::vector<SubjectUpdate> again;
    again.push_back(SetJurisdiction("bob", "GB"));
    auto refused = ApplyLogged(*store, std::move(again), sequence);
    EXPECT_EQ(refused.status().code(),
              sequence > 0 ? absl::StatusCode::kUnavailable : absl::StatusCode::kInvalidArgument);
    if (sequence > 0) {
      EXPECT_EQ(refused.status().message(),
                absl::StrCat("the replicated command log is applied through 1; command ", sequence,
                             " is not the next"));
    }
  }
  EXPECT_EQ(store->CurrentRevision(), 1);

  // A replay, a refusal by an update, and a command with no updates (one
  // refused before the store) write nothing else but are recorded: the
  // next command follows them.
  std::vector<SubjectUpdate> replay;
  replay.push_back(SetJurisdiction("alice", "GB"));
  auto replayed = ApplyLogged(*store, std::move(replay), 2, RequestKey{"req-1", "f1"});
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->outcome, CommitResult::Outcome::kReplayed);
  EXPECT_THAT(replayed->revisions, ElementsAre(1));
  std::vector<SubjectUpdate> failing;
  failing.push_back(Failing("carol"));
  EXPECT_EQ(ApplyLogged(*store, std::move(failing), 3).status().code(), absl::StatusCode::kAborted);
  auto nothing = ApplyLogged(*store, {}, 4);
  ASSERT_TRUE(nothing.ok()) << nothing.status();
  EXPECT_TRUE(nothing->revisions.empty());
  EXPECT_EQ(*store->AppliedSequence(), 4);
  EXPECT_EQ(store->CurrentRevision(), 1);
  EXPECT_EQ(store->GetSubject("carol").status().code(), absl::StatusCode::kNotFound);

  // Recorded with the writes: it survives a reopen.
  std::vector<SubjectUpdate> next;
  next.push_back(SetJurisdiction("dave", "FR"));
  auto written = ApplyLogged(*store, std::move(next), 5);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_THAT(written->revisions, ElementsAre(2));
  ASSERT_TRUE(store->Close().ok());
  store = OpenOrDie(dir.path());
  EXPECT_EQ(*store->AppliedSequence(), 5);
  EXPECT_EQ(store->CurrentRevision(), 2);

  // A failure to read or write is not an outcome: nothing is recorded,
  // and the same command applies once the store can.
  std::vector<SubjectUpdate> broken;
  broken.push_back(SetJurisdiction("erin", "GB"));
  broken.back().apply = [](UpdateContext&, v1::Subject&, v1::ChangeEvent&) {
    return absl::InternalError("reading an exclusion failed");
  };
  EXPECT_EQ(ApplyLogged(*store, std::move(broken), 6).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*store->AppliedSequence(), 5);
  std::vector<SubjectUpdate> retried;
  retried.push_back(SetJurisdiction("erin", "GB"));
  ASSERT_TRUE(ApplyLogged(*store, std::move(retried), 6).ok());
  EXPECT_EQ(*store->AppliedSequence(), 6);
}

// Applies an import step that is a command of the replicated log, and
// waits for it.
absl::StatusOr<CommitResult> ApplyLoggedImport(ConsentStore& store,
                                               std::vector<SubjectUpdate> updates, ImportStep step,
                                               int64_t sequence) {
  return AwaitCommit([&](CommitDone done) {
    store.ApplyLoggedImportAsync(std::move(updates), kNow, std::move(step), sequence,
                                 std::move(done));
  });
}

TEST(StoreTest, LoggedImportStepsRecordProgressAndSequenceTogether) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  std::vector<SubjectUpdate> first;
  first.push_back(SetJurisdiction("alice", "GB"));
  auto applied = ApplyLoggedImport(*store, std::move(first), ImportStep{"load", 100}, 1);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_THAT(applied->revisions, ElementsAre(1));
  EXPECT_EQ(*store->ImportedThrough("load"), 100);
  EXPECT_EQ(*store->AppliedSequence(), 1);

  // A step with no updates (each of its records rejected) still moves the
  // import on, and the log.
  auto empty = ApplyLoggedImport(*store, {}, ImportStep{"load", 250}, 2);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->revisions.empty());
  EXPECT_EQ(*store->ImportedThrough("load"), 250);
  EXPECT_EQ(*store->AppliedSequence(), 2);

  // A step at or below the progress is refused, and recorded as applied;
  // its updates are not written.
  std::vector<SubjectUpdate> stale;
  stale.push_back(SetJurisdiction("bob", "GB"));
  auto refused = ApplyLoggedImport(*store, std::move(stale), ImportStep{"load", 250}, 3);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(*store->AppliedSequence(), 3);
  EXPECT_EQ(*store->ImportedThrough("load"), 250);
  EXPECT_EQ(store->GetSubject("bob").status().code(), absl::StatusCode::kNotFound);

  // Not the next command: nothing written, not even the progress.
  std::vector<SubjectUpdate> early;
  early.push_back(SetJurisdiction("carol", "GB"));
  EXPECT_EQ(ApplyLoggedImport(*store, std::move(early), ImportStep{"load", 300}, 5).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(*store->ImportedThrough("load"), 250);
  EXPECT_EQ(store->CurrentRevision(), 1);
}

TEST(StoreTest, LaterUpdateOfSameUserSeesEarlierOne) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  SubjectUpdate check;
  check.user_id = "alice";
  bool saw_gb = false, saw_exists = false;
  check.apply = [&](UpdateContext& context, v1::Subject& s, v1::ChangeEvent&) {
    saw_gb = s.attributes().jurisdiction() == "GB";
    saw_exists = context.exists();
    EXPECT_EQ(context.revision(), 2);
    EXPECT_EQ(s.revision(), 1);
    return absl::OkStatus();
  };
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(std::move(check));
  ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  EXPECT_TRUE(saw_gb);
  EXPECT_TRUE(saw_exists);
}

TEST(StoreTest, ResultCarriesSubjectsOnlyWhereAsked) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(SetJurisdiction("bob", "FR"));
  updates.back().return_subject = false;
  auto result = store->Commit(std::move(updates), kNow);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->subjects.size(), 2u);
  EXPECT_EQ(result->subjects[0].user_id(), "alice");
  EXPECT_EQ(result->subjects[0].attributes().jurisdiction(), "GB");
  EXPECT_EQ(result->subjects[0].revision(), 1);
  EXPECT_EQ(result->subjects[1].ByteSizeLong(), 0u);
  // Only the result leaves it out: bob is written like alice.
  auto bob = store->GetSubject("bob");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->attributes().jurisdiction(), "FR");
  EXPECT_EQ(bob->revision(), 2);
}

TEST(StoreTest, GetSubjectsKeepsOrderAndMarksMissing) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(SetJurisdiction("carol", "FR"));
  ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  std::vector<absl::string_view> ids = {"carol", "nobody", "alice", "carol"};
  SubjectViewArena arena;
  std::vector<const SubjectView*> out;
  ASSERT_TRUE(store->GetSubjects(ids, &arena, &out).ok());
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]->jurisdiction, "FR");
  EXPECT_EQ(out[0]->revision, 2);
  EXPECT_EQ(out[1], nullptr);
  EXPECT_EQ(out[2]->jurisdiction, "GB");
  EXPECT_EQ(out[2]->revision, 1);
  EXPECT_EQ(out[3]->jurisdiction, "FR");
}

TEST(StoreTest, EventsAreReadInRevisionOrder) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  for (const char* code : {"GB", "FR", "DE"}) {
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", code)}).ok());
  }
  auto events = store->ReadEvents(2, 10);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].revision(), 2);
  EXPECT_EQ((*events)[0].attributes().before().jurisdiction(), "GB");
  EXPECT_EQ((*events)[0].attributes().after().jurisdiction(), "FR");
  EXPECT_EQ((*events)[1].revision(), 3);
  EXPECT_EQ((*events)[1].user_id(), "alice");
  EXPECT_EQ((*events)[1].event_time().seconds(), absl::ToUnixSeconds(kNow));
}

TEST(StoreTest, EmptyCommitIsInvalid) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(Commit(*store, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreTest, SecondOpenOfSameDirectoryFailsOnTheLock) {
  TempDir dir;
  auto first = OpenOrDie(dir.Sub("db"));
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  auto second = ConsentStore::Open(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(dir.Sub("db")));
  EXPECT_THAT(second.status().message(), HasSubstr("another consentd"));
}

TEST(StoreTest, CorruptDatabaseFailsWithDataLoss) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  }
  // Overwrite every MANIFEST with garbage.
  for (const auto& entry : std::filesystem::directory_iterator(dir.Sub("db"))) {
    if (entry.path().filename().string().rfind("MANIFEST-", 0) == 0) {
      testing::WriteFile(entry.path().string(), std::string(4096, '\x5a'));
    }
  }
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr(dir.Sub("db")));
}

TEST(StoreTest, RefusesForeignNonEmptyDirectory) {
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("photos"));
  testing::WriteFile(dir.Sub("photos/cat.jpg"), "meow");
  StoreOptions options;
  options.data_dir = dir.Sub("photos");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("holds no consent-registry database"));
}

TEST(StoreTest, RefusesDataDirThatIsAFile) {
  TempDir dir;
  testing::WriteFile(dir.Sub("file"), "x");
  StoreOptions options;
  options.data_dir = dir.Sub("file");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("not a directory"));
}

TEST(StoreTest, CreatesMissingParentDirectories) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("a/b/c"));
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("a/b/c/CURRENT")));
}

TEST(StoreTest, CheckpointHoldsExactlyTheWritesUpToItsRevision) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("bob", "FR")}).ok());
  auto position = store->Checkpoint(dir.Sub("copy"));
  ASSERT_TRUE(position.ok()) << position.status();
  EXPECT_EQ(position->revision, 2);
  EXPECT_EQ(position->applied_sequence, 0);
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "DE")}).ok());
  EXPECT_EQ(store->Checkpoint(dir.Sub("copy")).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->Checkpoint(dir.Sub("no/such/parent")).status().code(),
            absl::StatusCode::kFailedPrecondition);

  auto copy = OpenOrDie(dir.Sub("copy"));
  EXPECT_EQ(copy->CurrentRevision(), 2);
  EXPECT_EQ(copy->GetSubject("alice")->attributes().jurisdiction(), "GB");
  EXPECT_EQ(copy->GetSubject("bob")->attributes().jurisdiction(), "FR");
  auto chain = copy->VerifyChain(0, 0);
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_TRUE(chain->ok);
  EXPECT_EQ(chain->verified, 2);
  // The copy is independent: it continues its own history from revision 2.
  ASSERT_TRUE(Commit(*copy, {SetJurisdiction("carol", "IE")}).ok());
  EXPECT_EQ(copy->CurrentRevision(), 3);
  EXPECT_EQ(store->GetSubject("carol").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(store->Checkpoint(dir.Sub("late")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(StoreTest, StatsReportStorageHealthAndSyncedWrites) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.rocksdb.collect_statistics = true;
  std::atomic<int> synced{0};
  options.on_synced_write = [&synced](absl::Duration d) {
    EXPECT_GT(d, absl::ZeroDuration());
    synced.fetch_add(1);
  };
  auto store = ConsentStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(Commit(**store, {SetJurisdiction("alice", "GB")}).ok());
  ASSERT_TRUE(Commit(**store, {SetJurisdiction("bob", "GB")}).ok());
  EXPECT_EQ(synced.load(), 2);
  auto stats = (*store)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GE(stats->rocksdb.block_cache_hits, 0);
  EXPECT_GE(stats->rocksdb.block_cache_misses, 0);
  EXPECT_EQ(stats->rocksdb.write_stall_micros, 0);
  EXPECT_EQ(stats->rocksdb.write_stopped, 0);
  EXPECT_GT(stats->rocksdb.memtable_bytes, 0);
  EXPECT_EQ(stats->estimated_subjects, 2);

  auto plain = OpenOrDie(dir.Sub("plain"));
  auto without = plain->Stats();
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->rocksdb.block_cache_hits, -1);   // statistics off
  EXPECT_EQ(without->rocksdb.write_stall_micros, 0);  // from stall notifications, always kept
}

TEST(StoreTest, ClosedStoreRejectsCalls) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Commit(*store, {SetJurisdiction("alice", "GB")}).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(AuditChainTest, StoredBytesAreTheEventWithItsHashes) {
  v1::ChangeEvent event;
  event.set_revision(7);
  event.set_user_id("alice");
  event.mutable_preference()->set_purpose("ai_training");
  event.mutable_preference()->mutable_after()->set_state(v1::PREFERENCE_STATE_OBJECTED);
  const std::string previous(kHashBytes, '\x11');
  ChainedEvent chained;
  chained.bytes = "left over from an earlier event";
  ChainEvent(previous, event, &chained);
  v1::ChangeEvent parsed;
  ASSERT_TRUE(parsed.ParseFromString(chained.bytes));
  EXPECT_EQ(parsed.previous_hash(), previous);
  EXPECT_EQ(parsed.hash(), chained.hash);
  EXPECT_EQ(EventHash(previous, parsed), chained.hash);
  // The stored bytes are exactly what protobuf itself writes for the event.
  EXPECT_EQ(parsed.SerializeAsString(), chained.bytes);
  EXPECT_EQ(chained.hash.size(), kHashBytes);
  // Any change to the event changes the hash.
  parsed.mutable_preference()->mutable_after()->set_state(v1::PREFERENCE_STATE_CONSENTED);
  EXPECT_NE(EventHash(previous, parsed), chained.hash);
}

TEST(AuditChainTest, Sha256KnownAnswer) {
  // FIPS 180-2 test vector.
  std::string digest = Sha256("abc");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : digest) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  EXPECT_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(KeysTest, RevisionEncodingSortsNumerically) {
  EXPECT_LT(EncodeRevision(255), EncodeRevision(256));
  EXPECT_LT(EncodeRevision(1), EncodeRevision(1LL << 40));
  int64_t decoded = 0;
  ASSERT_TRUE(DecodeRevision(EncodeRevision(123456789012), &decoded));
  EXPECT_EQ(decoded, 123456789012);
  EXPECT_FALSE(DecodeRevision("short", &decoded));
  EXPECT_LT(UserEventKey("ab", 9), UserEventKey("ab", 10));
  // "a" and its events sort before "a!" (the separator is the 0 byte).
  EXPECT_LT(UserEventKey("a", 1LL << 50), UserEventKey("a!", 1));
}

// 2,500 expired ids go in three chunks; a commit goes through between
// chunks (from the hook, which would deadlock if the purge held the write
// lock throughout); an expired id used again keeps its new record; ids
// within the window stay.
TEST(StoreTest, PurgeForgetsExpiredIdsInChunksLettingCommitsThrough) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.request_id_retention = absl::Hours(24);
  ConsentStore* store_for_hook = nullptr;
  std::vector<int64_t> chunks;
  options.on_purge_chunk = [&](int64_t purged) {
    chunks.push_back(purged);
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction(absl::StrCat("between-", chunks.size()), "GB"));
    EXPECT_TRUE(store_for_hook->Commit(std::move(updates), kNow + absl::Hours(30)).ok());
  };
  auto opened = ConsentStore::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<ConsentStore> store = *std::move(opened);
  store_for_hook = store.get();
  auto commit_with_id = [&](const std::string& id, absl::Time at) {
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction("alice", "GB"));
    updates.back().request = RequestKey{id, "fingerprint"};
    return store->Commit(std::move(updates), at);
  };
  for (int i = 0; i < 2500; ++i) ASSERT_TRUE(commit_with_id(absl::StrCat("old-", i), kNow).ok());
  ASSERT_TRUE(commit_with_id("recent", kNow + absl::Hours(20)).ok());
  // "old-7" expired, then used again at a later time: a new write.
  auto reused = commit_with_id("old-7", kNow + absl::Hours(25));
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused->outcome, CommitResult::Outcome::kApplied);

  auto purged = store->PurgeRequestIds(kNow + absl::Hours(1));
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 2499);                            // all but old-7, whose record is the new one
  EXPECT_THAT(chunks, ElementsAre(1000, 2000, 2499));  // "old-7" sorts into the third
  // Replays: old-7 and recent still answer; old-0 is a new write.
  auto replay = commit_with_id("old-7", kNow + absl::Hours(26));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
  EXPECT_EQ(replay->revisions, reused->revisions);
  replay = commit_with_id("recent", kNow + absl::Hours(26));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
  // A second purge finds the old-7 time key gone too, and nothing else.
  EXPECT_EQ(*store->PurgeRequestIds(kNow + absl::Hours(1)), 0);
}

// A purge asked for with a clock far ahead of the commits (a replica
// applying the replicated log behind) forgets only ids that no later
// commit can find live: the outcome of a replay never depends on when the
// purge ran.
TEST(StoreTest, PurgeKeepsIdsALaterCommitCouldStillReplay) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.request_id_retention = absl::Hours(24);
  auto store = *ConsentStore::Open(options);
  auto commit_with_id = [&](const std::string& id, absl::Time at) {
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction("alice", "GB"));
    updates.back().request = RequestKey{id, "fingerprint"};
    return store->Commit(std::move(updates), at);
  };
  ASSERT_TRUE(commit_with_id("early", kNow).ok());
  ASSERT_TRUE(commit_with_id("late", kNow + absl::Hours(10)).ok());
  // Latest time stamped: kNow + 10h; only ids before kNow - 14h may go.
  EXPECT_EQ(*store->PurgeRequestIds(kNow + absl::Hours(48)), 0);
  auto replay = commit_with_id("early", kNow + absl::Hours(20));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
  // Once commits are stamped past its window, "early" goes; "late" stays.
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("bob", "GB")}).ok());  // stamped kNow (earlier)
  std::vector<SubjectUpdate> later;
  later.push_back(SetJurisdiction("bob", "FR"));
  ASSERT_TRUE(store->Commit(std::move(later), kNow + absl::Hours(30)).ok());
  EXPECT_EQ(*store->PurgeRequestIds(kNow + absl::Hours(48)), 1);
  replay = commit_with_id("late", kNow + absl::Hours(31));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
}

TEST(KeysTest, RequestRecordsRoundTripAndOldOnesStillDecode) {
  RequestRecord record{1'780'000'000'000'000'000, std::string(32, 'f'), {7, 9}, "reply bytes"};
  RequestRecord decoded;
  ASSERT_TRUE(DecodeRequestRecord(EncodeRequestRecord(record), &decoded));
  EXPECT_EQ(decoded.time_nanos, record.time_nanos);
  EXPECT_EQ(decoded.fingerprint, record.fingerprint);
  EXPECT_THAT(decoded.revisions, ElementsAre(7, 9));
  EXPECT_EQ(decoded.reply, "reply bytes");
  // As written before replies were kept: time, size, fingerprint, revisions.
  const std::string old = EncodeRevision(5) + EncodeRevision(3) + "abc" + EncodeRevision(11);
  ASSERT_TRUE(DecodeRequestRecord(old, &decoded));
  EXPECT_EQ(decoded.time_nanos, 5);
  EXPECT_EQ(decoded.fingerprint, "abc");
  EXPECT_THAT(decoded.revisions, ElementsAre(11));
  EXPECT_EQ(decoded.reply, "");
  // Truncated or lying about its sizes: refused, never read past the end.
  const std::string good = EncodeRequestRecord(record);
  for (size_t n = 0; n < 16 + 32 + 8; ++n) {
    EXPECT_FALSE(DecodeRequestRecord(good.substr(0, n), &decoded)) << n;
  }
  std::string lying = good;
  lying.replace(16 + 32, 8, EncodeRevision(1'000'000));
  EXPECT_FALSE(DecodeRequestRecord(lying, &decoded));
}

// A replay is answered with what the first attempt's `reply` gave, kept
// with the request id: in the same group, from the database, and after a
// reopen; the replay's own `reply` is never called.
TEST(StoreTest, ReplaysCarryTheFirstAttemptsReply) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  int calls = 0;
  auto update = [&calls](const std::string& code) {
    SubjectUpdate u = SetJurisdiction("alice", code);
    u.request = RequestKey{"form-1", "fingerprint"};
    u.reply = [&calls](const v1::Subject& subject, const v1::ChangeEvent& event) {
      ++calls;
      return absl::StrCat(subject.attributes().jurisdiction(), "@", event.revision());
    };
    return u;
  };
  std::vector<SubjectUpdate> updates;
  updates.push_back(update("GB"));
  updates.push_back(update("FR"));  // a replay of the first, in the same commit
  auto first = store->Commit(std::move(updates), kNow);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->replies, ElementsAre("GB@1", "GB@1"));
  EXPECT_THAT(first->replayed, ElementsAre(false, true));
  std::vector<SubjectUpdate> again;
  again.push_back(update("DE"));
  auto replay = store->Commit(std::move(again), kNow);
  ASSERT_TRUE(replay.ok());
  EXPECT_THAT(replay->replies, ElementsAre("GB@1"));
  ASSERT_TRUE(store->Close().ok());
  store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> after_reopen;
  after_reopen.push_back(update("DE"));
  replay = store->Commit(std::move(after_reopen), kNow);
  ASSERT_TRUE(replay.ok());
  EXPECT_THAT(replay->replies, ElementsAre("GB@1"));
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);  // nothing written
  EXPECT_EQ(store->CurrentRevision(), 1);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace consent::storage
