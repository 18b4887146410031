// consentctl's notice commands: notice, notices (bulk, with progress) and
// summary (the user's own view).
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/consentctl_common.h"
#include "core/enum_names.h"

ABSL_FLAG(std::string, notice_channel, "",
          "notice and notices (CSV without the column): how the notice reached the user, "
          "EMAIL, IN_APP or BANNER.");
ABSL_FLAG(std::string, delivery_time, "",
          "notice: when the user was given the notice (RFC 3339; default: now).");
ABSL_FLAG(bool, backfill, false,
          "notice: the delivery was more than 30 days ago and is recorded late.");
ABSL_FLAG(int, batch_size, 1000, "notices: items per atomic BatchRecordNotices call, 1 to 10000.");

namespace consent::consentctl {
namespace {

v1::NoticeChannel ParseChannel(const std::string& text, absl::string_view what) {
  return static_cast<v1::NoticeChannel>(
      ParseEnum(v1::NoticeChannel_descriptor(), "NOTICE_CHANNEL_", text, what));
}

// Fills the purposes from "a,b" or "a;b".
void AddPurposes(absl::string_view text, v1::RecordNoticeRequest* request) {
  for (absl::string_view p : absl::StrSplit(text, absl::ByAnyChar(",;"), absl::SkipWhitespace())) {
    request->add_purposes(std::string(absl::StripAsciiWhitespace(p)));
  }
}

std::string DescribeNotice(const v1::NoticeDelivery& n) {
  return absl::StrCat("notice ", n.notice_id(), " version ", n.notice_version(), " for ",
                      absl::StrJoin(n.purposes(), ","), " delivered ",
                      FormatTimestamp(n.delivery_time()), " by ",
                      EnumValueName(v1::NoticeChannel_descriptor(), n.channel(), "NOTICE_CHANNEL_"),
                      ", recorded at revision ", n.revision());
}

}  // namespace

int NoticeCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 5) Usage("notice takes USER NOTICE_ID VERSION PURPOSE[,PURPOSE...]");
  v1::RecordNoticeRequest request;
  request.set_user_id(args[1]);
  request.set_notice_id(args[2]);
  request.set_notice_version(args[3]);
  AddPurposes(args[4], &request);
  if (absl::GetFlag(FLAGS_notice_channel).empty()) {
    Usage("notice needs --notice_channel=EMAIL, IN_APP or BANNER");
  }
  request.set_channel(ParseChannel(absl::GetFlag(FLAGS_notice_channel), "notice_channel"));
  if (!absl::GetFlag(FLAGS_delivery_time).empty()) {
    *request.mutable_delivery_time() =
        ParseTimestamp(absl::GetFlag(FLAGS_delivery_time), "--delivery_time");
  }
  request.set_backfill(absl::GetFlag(FLAGS_backfill));
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  auto response = client.RecordNotice(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::cout << args[1] << ": " << DescribeNotice(response->notice()) << " (revision "
              << response->revision() << ")\n";
  }
  return 0;
}

int NoticesCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("notices takes FILE");
  const int chunk = absl::GetFlag(FLAGS_batch_size);
  if (chunk < 1 || chunk > 10000) Usage("--batch_size must be 1 to 10000");
  // Each batch is atomic; batches go in order and the first failure stops
  // the load (earlier batches stay written; with --request_id, a rerun
  // replays them without writing them twice).
  v1::BatchRecordNoticesRequest request;
  size_t written = 0, batches = 0, last_line = 0;
  InputLines input(args[1]);
  Progress progress(input, "notices", "recorded");
  // `last`: the file is read; the final progress line follows.
  auto flush = [&](bool last) -> int {
    if (request.requests_size() == 0) return 0;
    if (!absl::GetFlag(FLAGS_request_id).empty()) {
      request.set_request_id(absl::StrCat(absl::GetFlag(FLAGS_request_id), "/", batches));
    }
    auto response = client.BatchRecordNotices(request);
    if (!response.ok()) {
      std::cerr << "consentctl: batch ending at input line " << last_line << " failed; " << written
                << " notices recorded before it\n";
      return Fail(response.status());
    }
    ++batches;
    written += static_cast<size_t>(request.requests_size());
    if (absl::GetFlag(FLAGS_json)) PrintJson(*response);
    request.clear_requests();
    if (!last) progress.Update(written, false);
    return 0;
  };
  const std::string default_channel = absl::GetFlag(FLAGS_notice_channel);
  std::string line;
  while (input.Next(&line)) {
    last_line = input.line_number();
    v1::RecordNoticeRequest item;
    if (input.csv()) {
      // user_id,notice_id,notice_version,purposes,channel,delivery_time[,backfill]
      std::vector<std::string> cols;
      if (!CsvColumns(line, last_line, 6, 7, "user_id", &cols)) continue;
      item.set_user_id(cols[0]);
      item.set_notice_id(cols[1]);
      item.set_notice_version(cols[2]);
      AddPurposes(cols[3], &item);
      const std::string& channel = cols[4].empty() ? default_channel : cols[4];
      if (channel.empty()) {
        Usage(absl::StrCat("line ", last_line, ": no channel (column 5 or --notice_channel)"));
      }
      item.set_channel(ParseChannel(channel, absl::StrCat("line ", last_line, " channel")));
      if (!cols[5].empty()) {
        *item.mutable_delivery_time() =
            ParseTimestamp(cols[5], absl::StrCat("line ", last_line, " delivery_time"));
      }
      if (cols.size() > 6 && !cols[6].empty()) {
        if (cols[6] != "true" && cols[6] != "false") {
          Usage(absl::StrCat("line ", last_line, ": backfill must be true or false"));
        }
        item.set_backfill(cols[6] == "true");
      }
    } else {
      ParseJsonLine(line, last_line, &item);
    }
    *request.add_requests() = std::move(item);
    if (request.requests_size() == chunk) {
      if (int rc = flush(false); rc != 0) return rc;
    }
  }
  if (int rc = flush(true); rc != 0) return rc;
  progress.Update(written, true);
  std::cerr << written << " notices recorded in " << batches
            << (batches == 1 ? " batch\n" : " batches\n");
  return 0;
}

int SummaryCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("summary takes USER");
  v1::GetSubjectSummaryRequest request;
  request.set_user_id(args[1]);
  auto response = client.GetSubjectSummary(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
    return 0;
  }
  std::cout << "# " << response->user_id() << (response->recorded() ? "" : " (nothing recorded)")
            << ", jurisdiction "
            << (response->jurisdiction().empty() ? "unknown" : response->jurisdiction())
            << ", policy " << response->policy_version() << ", revision " << response->revision()
            << ", at " << FormatTimestamp(response->evaluation_time()) << "\n";
  for (const v1::PurposeSummary& s : response->purposes()) {
    std::cout << s.purpose() << "\t" << (s.allowed() ? "USED" : "NOT USED") << "\t"
              << EnumValueName(v1::DecisionReason_descriptor(), s.reason(), "DECISION_REASON_")
              << "\t"
              << (s.legal_basis() == v1::LEGAL_BASIS_UNSPECIFIED
                      ? std::string("no legal basis")
                      : EnumValueName(v1::LegalBasis_descriptor(), s.legal_basis(), "LEGAL_BASIS_"))
              << "\n  " << s.explanation() << "\n";
    if (s.has_preference()) {
      const v1::Preference& p = s.preference();
      std::cout << "  preference: "
                << EnumValueName(v1::PreferenceState_descriptor(), p.state(), "PREFERENCE_STATE_")
                << " for " << p.purpose() << " since " << FormatTimestamp(p.update_time())
                << (p.source().channel().empty() ? "" : " via " + p.source().channel()) << "\n";
    }
    if (s.has_notice()) std::cout << "  " << DescribeNotice(s.notice()) << "\n";
    if (s.has_notice_period_end_time()) {
      std::cout << "  notice period of " << s.min_notice_days() << " days ends "
                << FormatTimestamp(s.notice_period_end_time()) << "\n";
    }
  }
  return 0;
}

}  // namespace consent::consentctl
