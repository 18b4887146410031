// Check and BatchCheck request bytes through validation and decisions on a
// real (temporary) store: never a crash, a BatchCheck answer that parses
// with a decision per item (an invalid item's holding only its error), and
// never an item allowed that the rules deny outright (a private message, a
// non-public post).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "server/registry.h"
#include "server/wire.h"
#include "tests/fuzz/fuzz_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  consent::Registry& registry = consent::fuzzing::FuzzRegistry();
  const char* bytes = reinterpret_cast<const char*>(data) + 1;
  const int length = static_cast<int>(size - 1);
  if (data[0] % 2 == 0) {
    consent::v1::CheckRequest request;
    if (!request.ParseFromArray(bytes, length)) return 0;
    consent::v1::CheckResponse response;
    if (registry.Check(request, &response).ok() && response.decision().allowed() &&
        (request.content().content_type() == consent::v1::CONTENT_TYPE_MESSAGE ||
         request.content().visibility() != consent::v1::VISIBILITY_PUBLIC)) {
      std::abort();  // a wrong "allowed"
    }
    return 0;
  }
  consent::v1::BatchCheckRequest request;
  if (!request.ParseFromArray(bytes, length)) return 0;
  // The bytes the service sends, written by hand: they must parse.
  consent::EncodedDecisions encoded;
  if (!registry.BatchCheck(request, &encoded).ok()) return 0;
  consent::v1::BatchCheckResponse response;
  if (!response.ParseFromString(encoded.bytes())) std::abort();
  if (response.decisions_size() != request.items_size()) std::abort();
  for (int i = 0; i < request.items_size(); ++i) {
    const consent::v1::Content& content = request.items(i).content();
    const consent::v1::Decision& decision = response.decisions(i);
    // An invalid item's answer is its error, never a decision.
    if (decision.has_error() && (decision.allowed() || decision.reason() != 0 ||
                                 decision.error().code() != 3 /* INVALID_ARGUMENT */)) {
      std::abort();
    }
    if (decision.allowed() && (content.content_type() == consent::v1::CONTENT_TYPE_MESSAGE ||
                               content.visibility() != consent::v1::VISIBILITY_PUBLIC)) {
      std::abort();
    }
  }
  return 0;
}
