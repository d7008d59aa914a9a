#include "tests/support/local_nodes.h"

#include <stdexcept>

namespace asteroid::test_support {

LocalNodes::LocalNodes(const std::vector<std::string>& ids, const std::vector<std::string>& extra_args,
                       const std::map<std::string, std::vector<std::string>>& per_node)
    : extra_args_(extra_args) {
  cluster_.default_bandwidth_mbps = 1000;
  for (const auto& id : ids) {
    planner::Device d;
    d.id = id;
    d.host = "127.0.0.1";
    d.memory_mb = 4096;
    cluster_.devices.push_back(d);
  }
  processes_.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    auto own = per_node.find(ids[i]);
    start(i, 0, own == per_node.end() ? std::vector<std::string>{} : own->second);
  }
}

LocalNodes::~LocalNodes() {
  for (auto& p : processes_) {
    if (p.pid() > 0) p.stop(testbed::Millis(5000));
  }
}

void LocalNodes::start(size_t index, int port, const std::vector<std::string>& args) {
  planner::Device& d = cluster_.devices[index];
  testbed::SpawnOptions options;
  options.argv = {ASTEROID_BIN, "node", "--host", "127.0.0.1", "--port", std::to_string(port), "--id", d.id};
  options.argv.insert(options.argv.end(), extra_args_.begin(), extra_args_.end());
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.capture_stdout = true;
  options.die_with_parent = true;
  processes_[index] = testbed::Subprocess::spawn(options);
  auto line = processes_[index].read_line(testbed::Clock::now() + std::chrono::seconds(30));
  const std::string marker = "listening on 127.0.0.1:";
  if (!line || line->find(marker) == std::string::npos) {
    throw std::runtime_error("node " + d.id + " did not start: " + line.value_or("(no output)"));
  }
  d.port = std::stoi(line->substr(line->find(marker) + marker.size()));
}

testbed::Subprocess& LocalNodes::process(const std::string& id) {
  const int index = cluster_.index_of(id);
  if (index < 0) throw std::invalid_argument("no node " + id);
  return processes_[static_cast<size_t>(index)];
}

void LocalNodes::restart(const std::string& id) {
  const int index = cluster_.index_of(id);
  if (index < 0) throw std::invalid_argument("no node " + id);
  start(static_cast<size_t>(index), cluster_.devices[static_cast<size_t>(index)].port, {});
}

}  // namespace asteroid::test_support
