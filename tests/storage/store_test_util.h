// Helpers shared by the storage tests: a few updates, opening a store,
// and RocksDB opened directly (to tamper with what the store wrote).
#ifndef CONSENT_TESTS_STORAGE_STORE_TEST_UTIL_H_
#define CONSENT_TESTS_STORAGE_STORE_TEST_UTIL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/consent_store.h"

namespace consent::storage {

inline const absl::Time kNow = absl::FromUnixSeconds(1'780'000'000);

// An update that sets the jurisdiction and records an attributes event.
inline SubjectUpdate SetJurisdiction(const std::string& user, const std::string& code) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [code](UpdateContext&, v1::Subject& s, v1::ChangeEvent& e) {
    *e.mutable_attributes()->mutable_before() = s.attributes();
    s.mutable_attributes()->set_jurisdiction(code);
    *e.mutable_attributes()->mutable_after() = s.attributes();
    e.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
    return absl::OkStatus();
  };
  return update;
}

// An update that fails (ABORTED), so its whole commit writes nothing.
inline SubjectUpdate Failing(const std::string& user) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [](UpdateContext&, v1::Subject&, v1::ChangeEvent&) {
    return absl::AbortedError("no");
  };
  return update;
}

inline std::unique_ptr<ConsentStore> OpenOrDie(const std::string& dir) {
  StoreOptions options;
  options.data_dir = dir;
  auto store = ConsentStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

inline absl::Status Commit(ConsentStore& store, std::vector<SubjectUpdate> updates) {
  return store.Commit(std::move(updates), kNow).status();
}

// An update that records an objection to `purpose`, with its source.
inline SubjectUpdate Object(const std::string& user, const std::string& purpose) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [purpose](UpdateContext& context, v1::Subject& s, v1::ChangeEvent& e) {
    v1::Preference* p = s.add_preferences();
    p->set_purpose(purpose);
    p->set_state(v1::PREFERENCE_STATE_OBJECTED);
    p->set_revision(context.revision());
    p->mutable_source()->set_channel("settings");
    p->mutable_expire_time()->set_seconds(1'900'000'000);
    e.set_kind(v1::CHANGE_KIND_PREFERENCE);
    return absl::OkStatus();
  };
  return update;
}

// The database under a closed store, opened with RocksDB itself.
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    std::vector<std::string> names;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    EXPECT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles_, &raw).ok());
    db_.reset(raw);
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* handle : handles_) EXPECT_TRUE(db_->DestroyColumnFamilyHandle(handle).ok());
  }
  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* family(const std::string& name) { return by_name_.at(name); }
  // The keys of a column family that start with `prefix`.
  int Count(const std::string& family_name, const std::string& prefix) {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), family(family_name)));
    int n = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++n;
    return n;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

}  // namespace consent::storage

#endif  // CONSENT_TESTS_STORAGE_STORE_TEST_UTIL_H_
