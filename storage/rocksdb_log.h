// RocksDB's diagnostic log (the LOG file in the data directory), written so
// that a failing disk cannot take the process down: RocksDB's own file
// logger, as Debian builds it, aborts on an assertion when it appends to
// its LOG after an earlier append failed (a full disk does that). Part of
// the RocksDB store; nothing outside storage/ uses it.
#ifndef CONSENT_STORAGE_ROCKSDB_LOG_H_
#define CONSENT_STORAGE_ROCKSDB_LOG_H_

#include <memory>
#include <string>

#include "rocksdb/env.h"

namespace consent::storage {

// A logger appending to `data_dir`/LOG (a LOG over 32 MiB is first renamed
// LOG.old, replacing the previous one). A line that cannot be written is
// dropped; nothing is retried or reported. Thread safe: each line is one
// write(2) to a file opened with O_APPEND. If the file cannot be opened,
// every line is dropped.
std::shared_ptr<rocksdb::Logger> NewRocksDbLog(const std::string& data_dir);

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_ROCKSDB_LOG_H_
