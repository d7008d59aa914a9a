// Test support: real `asteroid node` processes on 127.0.0.1 with ports the
// nodes pick themselves (port 0, read back from their first output line).
// The destructor stops every node it started, by pid, even when a test
// fails; each step waits with a deadline.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "apps/testbed/process.h"
#include "planner/types.h"

namespace asteroid::test_support {

class LocalNodes {
 public:
  // Starts one node per id; extra arguments go to every node, and
  // per_node[id] to that node only (e.g. {"--crash-at", "allreduce:3"}).
  explicit LocalNodes(const std::vector<std::string>& ids, const std::vector<std::string>& extra_args = {},
                      const std::map<std::string, std::vector<std::string>>& per_node = {});
  ~LocalNodes();

  // The devices with host and port, default bandwidth 1000 Mbit/s.
  const planner::Cluster& cluster() const { return cluster_; }
  testbed::Subprocess& process(const std::string& id);
  // Starts node `id` again on its old port (after it was killed), without
  // its per-node arguments.
  void restart(const std::string& id);

 private:
  void start(size_t index, int port, const std::vector<std::string>& args);
  std::vector<std::string> extra_args_;
  planner::Cluster cluster_;
  std::vector<testbed::Subprocess> processes_;
};

}  // namespace asteroid::test_support
