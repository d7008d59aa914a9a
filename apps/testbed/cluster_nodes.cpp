#include "apps/testbed/cluster_nodes.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

#include "apps/testbed/cgroups.h"
#include "apps/testbed/netns.h"

namespace asteroid::testbed {

namespace fs = std::filesystem;

std::string format_double(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

bool can_connect(const std::string& host, int port, Millis timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1) {
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (rc == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        ok = err == 0;
      }
    }
  }
  ::close(fd);
  return ok;
}

std::string log_tail(const std::string& path, int lines) {
  std::ifstream in(path);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  std::string s;
  for (const auto& l : tail) s += "\n    | " + l;
  return s.empty() ? " (log empty)" : s;
}

std::vector<std::pair<std::string, std::string>> device_env(const ClusterState& s, const NodeRecord& n) {
  std::vector<std::pair<std::string, std::string>> env = {
      {"ASTEROID_DEVICE_ID", n.id},
      {"ASTEROID_CLUSTER_DIR", s.dir},
      {"ASTEROID_DEVICE_ADDRESS", n.listen_host},
      {"ASTEROID_HUB_ADDRESS", s.hub_address},
  };
  if (s.mech.cpu == "throttle" || s.mech.cpu == "none") {
    // The throttle's control file (slow-down faults), and the share itself
    // for programs that do not get --cpu-share.
    env.emplace_back("ASTEROID_THROTTLE_FILE", (fs::path(s.dir) / "control" / (n.id + ".slow")).string());
    if (s.mech.cpu == "throttle" && n.base_share > 0)
      env.emplace_back("ASTEROID_CPU_SHARE", format_double(n.base_share));
  }
  return env;
}

std::vector<std::string> node_procs_files(const NodeRecord& n) {
  NodeCgroup g{n.cgroup_cpu, n.cgroup_memory};
  return g.procs_files();
}

Subprocess spawn_node(NodeRecord& n, bool die_with_parent, const std::string& log_heading,
                      const std::function<void()>& record) {
  SpawnOptions so;
  so.argv = n.argv;
  so.env = n.env;
  so.output_file = n.log;
  so.new_session = true;
  so.die_with_parent = die_with_parent;
  if (!n.netns.empty()) so.netns_path = netns_path(n.netns);
  so.cgroup_procs_files = node_procs_files(n);
  std::ofstream(n.log, std::ios::app) << "# " << log_heading << join_command(n.argv) << "\n";
  so.on_forked = [&](pid_t pid) {
    n.pid = pid;
    n.start = process_start_time(pid);
    record();
  };
  return Subprocess::spawn(so);
}

Readiness wait_until_accepting(const std::vector<NodeRecord>& nodes, Clock::time_point deadline,
                               const std::string& netns, const StartupChecks& checks) {
  Readiness out;
  auto poll = [&] {
    std::vector<bool> accepting(nodes.size(), false);
    size_t left = nodes.size();
    bool others_ready = !checks.others_ready;
    for (;;) {
      if (checks.each_round) checks.each_round();
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (accepting[i]) continue;
        if (checks.ensure_running) checks.ensure_running(i);
        if (can_connect(nodes[i].listen_host, nodes[i].listen_port)) {
          accepting[i] = true;
          --left;
        }
      }
      if (!others_ready) others_ready = checks.others_ready();
      if (left == 0 && others_ready) {
        out.ready = true;
        return;
      }
      if (Clock::now() >= deadline) {
        for (size_t i = 0; i < nodes.size(); ++i)
          if (!accepting[i]) out.not_accepting.push_back(i);
        return;
      }
      std::this_thread::sleep_for(Millis(20));
    }
  };
  if (!netns.empty())
    run_in_netns(netns, poll);
  else
    poll();
  return out;
}

}  // namespace asteroid::testbed
