#include "actors/partitions.h"

#include <algorithm>
#include <tuple>
#include <utility>

namespace asteroid::actors {

void PartitionJudge::report(const std::string& device, std::vector<std::string> unreachable) {
  reports_[device] = std::set<std::string>(unreachable.begin(), unreachable.end());
}

PartitionJudge::Changes PartitionJudge::judge(const std::set<std::string>& alive,
                                              const std::vector<std::string>& plan_order, Time now) {
  // Cut links between live devices, as (reporter, unreachable) pairs.
  std::vector<std::pair<std::string, std::string>> cuts;
  for (const auto& [reporter, peers] : reports_) {
    if (!alive.count(reporter)) continue;
    for (const auto& peer : peers) {
      if (peer != reporter && alive.count(peer)) cuts.emplace_back(reporter, peer);
    }
  }
  auto touches = [&](const std::string& device) {
    return std::any_of(cuts.begin(), cuts.end(),
                       [&](const auto& c) { return c.first == device || c.second == device; });
  };
  Changes changes;
  for (auto it = partitioned_.begin(); it != partitioned_.end();) {
    if (!alive.count(*it)) {
      ++it;  // silent: judged again once it answers (its old cut may stand)
    } else if (touches(*it)) {
      clear_since_.erase(*it);
      ++it;
    } else if (now - clear_since_.emplace(*it, now).first->second >= settle_) {
      clear_since_.erase(*it);
      changes.healed.push_back(*it);
      it = partitioned_.erase(it);
    } else {
      ++it;
    }
  }
  // Later in the plan ranks higher; outside the plan highest.
  auto position = [&](const std::string& device) {
    auto at = std::find(plan_order.begin(), plan_order.end(), device);
    return at == plan_order.end() ? plan_order.size() : static_cast<size_t>(at - plan_order.begin());
  };
  for (;;) {
    // Each device's cut partners (either side reporting) among the links
    // no named device explains.
    std::map<std::string, std::set<std::string>> partners;
    for (const auto& [reporter, peer] : cuts) {
      if (partitioned_.count(reporter) || partitioned_.count(peer)) continue;
      partners[reporter].insert(peer);
      partners[peer].insert(reporter);
    }
    if (partners.empty()) break;
    std::map<std::string, size_t> cut_links;
    for (const auto& [device, with] : partners) cut_links[device] = with.size();
    const auto chosen = std::max_element(cut_links.begin(), cut_links.end(), [&](const auto& a, const auto& b) {
      return std::make_tuple(a.second, position(a.first), a.first) <
             std::make_tuple(b.second, position(b.first), b.first);
    });
    partitioned_.insert(chosen->first);
    changes.partitioned.push_back(chosen->first);
  }
  return changes;
}

}  // namespace asteroid::actors
