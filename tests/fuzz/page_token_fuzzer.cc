// ListHistory page tokens (and user ids) from the caller, on a real
// (temporary) store: never a crash; a token either pages or is refused as
// INVALID_ARGUMENT naming page_token or user_id.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/registry.h"
#include "tests/fuzz/fuzz_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  consent::Registry& registry = consent::fuzzing::FuzzRegistry();
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  consent::v1::ListHistoryRequest request;
  // The first byte splits user id from token; most inputs page "alice".
  const size_t split = size == 0 ? 0 : data[0] % 4 == 0 ? std::min<size_t>(data[0] / 4, size) : 0;
  request.set_user_id(split == 0 ? std::string("alice") : bytes.substr(1, split - 1));
  request.set_page_token(bytes.substr(split));
  request.set_page_size(2);
  consent::v1::ListHistoryResponse response;
  absl::Status status = registry.ListHistory(request, &response);
  if (!status.ok() && !absl::IsInvalidArgument(status)) std::abort();
  return 0;
}
