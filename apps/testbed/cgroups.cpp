#include "apps/testbed/cgroups.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace asteroid::testbed {

namespace {

bool exists(const std::string& p) {
  struct stat sb;
  return ::stat(p.c_str(), &sb) == 0;
}

std::string read_file(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `value` to a cgroup control file; throws naming the file.
void write_control(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  if (out) out << value << std::flush;
  if (!out)
    throw std::runtime_error("cannot write '" + value + "' to " + path + ": " + std::strerror(errno));
}

bool has_token(const std::string& list, const std::string& token, char sep) {
  std::istringstream in(list);
  std::string t;
  while (std::getline(in, t, sep))
    if (t == token) return true;
  return false;
}

struct Mount {
  std::string dir, type, options;
};

std::vector<Mount> cgroup_mounts() {
  std::vector<Mount> m;
  std::ifstream in("/proc/mounts");
  std::string dev, dir, type, opts, rest;
  while (in >> dev >> dir >> type >> opts) {
    std::getline(in, rest);
    if (type == "cgroup" || type == "cgroup2") m.push_back({dir, type, opts});
  }
  return m;
}

// This process's path in the v1 hierarchy that has `controller`, or in v2 ("").
std::string own_cgroup_path(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controller.empty() ? ctrls.empty() : has_token(ctrls, controller, ',')) return path;
  }
  return "/";
}

std::string join(const std::string& base, const std::string& rel) {
  if (rel.empty() || rel == "/") return base;
  return base + (rel.front() == '/' ? "" : "/") + rel;
}

// Proves we may create a group with a CPU quota under `base`.
bool can_create(const std::string& base, std::string& why) {
  std::string probe = base + "/asteroid-probe-" + std::to_string(::getpid());
  if (::mkdir(probe.c_str(), 0755) != 0 && errno != EEXIST) {
    why = "cannot create a cgroup under " + base + ": " + std::strerror(errno);
    return false;
  }
  ::rmdir(probe.c_str());
  return true;
}

}  // namespace

std::string to_string(CgroupVersion v) {
  switch (v) {
    case CgroupVersion::v1: return "cgroup-v1";
    case CgroupVersion::v2: return "cgroup-v2";
    default: return "none";
  }
}

CgroupSupport detect_cgroups() {
  CgroupSupport s;
  auto mounts = cgroup_mounts();
  // Unified (v2) with the cpu controller available.
  for (const auto& m : mounts) {
    if (m.type != "cgroup2") continue;
    std::string ctrls = read_file(m.dir + "/cgroup.controllers");
    std::istringstream words(ctrls);
    bool cpu = false, mem = false;
    std::string w;
    while (words >> w) {
      cpu = cpu || w == "cpu";
      mem = mem || w == "memory";
    }
    if (!cpu) continue;
    std::string why;
    if (!can_create(m.dir, why)) {
      s.reason = why;
      continue;
    }
    // Children of the root need the controllers enabled in its subtree.
    try {
      write_control(m.dir + "/cgroup.subtree_control", mem ? "+cpu +memory" : "+cpu");
    } catch (const std::exception& e) {
      s.reason = std::string("cgroup v2 controllers cannot be delegated: ") + e.what();
      continue;
    }
    s.version = CgroupVersion::v2;
    s.cpu_base = m.dir;
    s.memory_base = mem ? m.dir : "";
    s.reason.clear();
    return s;
  }
  // v1: separate cpu (and memory) hierarchies.
  std::string cpu_mount, mem_mount;
  for (const auto& m : mounts) {
    if (m.type != "cgroup") continue;
    if (has_token(m.options, "cpu", ',') && cpu_mount.empty()) cpu_mount = m.dir;
    if (has_token(m.options, "memory", ',') && mem_mount.empty()) mem_mount = m.dir;
  }
  if (!cpu_mount.empty()) {
    std::string base = join(cpu_mount, own_cgroup_path("cpu"));
    std::string why;
    if (!exists(base + "/cpu.cfs_quota_us")) {
      s.reason = "no cpu.cfs_quota_us in " + base + " (kernel without CFS bandwidth control)";
    } else if (can_create(base, why)) {
      s.version = CgroupVersion::v1;
      s.cpu_base = base;
      if (!mem_mount.empty()) {
        std::string mb = join(mem_mount, own_cgroup_path("memory"));
        std::string why_mem;
        if (can_create(mb, why_mem)) s.memory_base = mb;
      }
      return s;
    } else {
      s.reason = why;
    }
  }
  if (s.reason.empty()) s.reason = "no cgroup hierarchy with the cpu controller is mounted";
  return s;
}

CpuQuota cpu_quota_for(double share) {
  CpuQuota q;
  if (!(share > 0) || share >= 64) return q;  // unlimited
  q.period_us = std::clamp(static_cast<long>(std::ceil(1000 / share)), kShortestPeriodUs, 1000000L);
  q.quota_us = std::max(1000L, std::lround(share * q.period_us));
  return q;
}

std::vector<std::string> NodeCgroup::procs_files() const {
  std::vector<std::string> f;
  if (!cpu_dir.empty()) f.push_back(cpu_dir + "/cgroup.procs");
  if (!memory_dir.empty() && memory_dir != cpu_dir) f.push_back(memory_dir + "/cgroup.procs");
  return f;
}

std::vector<std::string> create_cluster_cgroup(const CgroupSupport& s, const std::string& group) {
  std::vector<std::string> made;
  for (const std::string& base : {s.cpu_base, s.memory_base}) {
    if (base.empty()) continue;
    std::string dir = base + "/" + group;
    bool dup = false;
    for (const auto& m : made) dup = dup || m == dir;
    if (dup) continue;
    if (::mkdir(dir.c_str(), 0755) != 0)
      throw std::runtime_error("cannot create cgroup " + dir + ": " + std::strerror(errno));
    made.push_back(dir);
    if (s.version == CgroupVersion::v2)
      write_control(dir + "/cgroup.subtree_control", s.memory_base.empty() ? "+cpu" : "+cpu +memory");
  }
  return made;
}

void set_cgroup_cpu_share(CgroupVersion v, const std::string& dir, double share) {
  CpuQuota q = cpu_quota_for(share);
  if (v == CgroupVersion::v2) {
    write_control(dir + "/cpu.max",
                  (q.quota_us < 0 ? std::string("max") : std::to_string(q.quota_us)) + " " +
                      std::to_string(q.period_us));
  } else if (v == CgroupVersion::v1) {
    // Unlimited first, so that no intermediate (quota, period) pair is rejected.
    write_control(dir + "/cpu.cfs_quota_us", "-1");
    write_control(dir + "/cpu.cfs_period_us", std::to_string(q.period_us));
    write_control(dir + "/cpu.cfs_quota_us", std::to_string(q.quota_us));
  }
}

CpuQuota read_cgroup_cpu_quota(CgroupVersion v, const std::string& dir) {
  CpuQuota q;
  if (v == CgroupVersion::v2) {
    std::istringstream in(read_file(dir + "/cpu.max"));
    std::string quota;
    in >> quota >> q.period_us;
    q.quota_us = quota == "max" ? -1 : std::stol(quota);
  } else if (v == CgroupVersion::v1) {
    q.quota_us = std::stol(read_file(dir + "/cpu.cfs_quota_us"));
    q.period_us = std::stol(read_file(dir + "/cpu.cfs_period_us"));
  }
  return q;
}

NodeCgroup create_node_cgroup(const CgroupSupport& s, const std::string& group,
                              const std::string& node, double cpu_share, double memory_bytes) {
  NodeCgroup n;
  n.cpu_dir = s.cpu_base + "/" + group + "/" + node;
  if (::mkdir(n.cpu_dir.c_str(), 0755) != 0)
    throw std::runtime_error("cannot create cgroup " + n.cpu_dir + ": " + std::strerror(errno));
  set_cgroup_cpu_share(s.version, n.cpu_dir, cpu_share);
  if (!s.memory_base.empty()) {
    if (s.version == CgroupVersion::v2) {
      n.memory_dir = n.cpu_dir;
    } else {
      n.memory_dir = s.memory_base + "/" + group + "/" + node;
      if (::mkdir(n.memory_dir.c_str(), 0755) != 0)
        throw std::runtime_error("cannot create cgroup " + n.memory_dir + ": " + std::strerror(errno));
    }
    if (memory_bytes > 0) {
      std::string bytes = std::to_string(static_cast<long long>(memory_bytes));
      write_control(n.memory_dir + (s.version == CgroupVersion::v2 ? "/memory.max" : "/memory.limit_in_bytes"),
                    bytes);
    }
  }
  return n;
}

std::vector<pid_t> cgroup_pids(const std::string& dir) {
  std::vector<pid_t> pids;
  std::ifstream in(dir + "/cgroup.procs");
  pid_t p;
  while (in >> p) pids.push_back(p);
  return pids;
}

std::vector<std::string> remove_cgroups(const std::vector<std::string>& dirs_in) {
  std::vector<std::string> errors;
  // Deepest first: node groups before their cluster group.
  std::vector<std::string> dirs = dirs_in;
  std::stable_sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  for (const auto& dir : dirs) {
    if (dir.find("/asteroid-") == std::string::npos) {
      errors.push_back("refusing to remove " + dir + " (not an asteroid- group)");
      continue;
    }
    if (!exists(dir)) continue;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
      for (pid_t p : cgroup_pids(dir)) {
        ::kill(p, SIGKILL);
        ::kill(p, SIGCONT);
      }
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        errors.push_back("cannot remove cgroup " + dir + ": " + std::strerror(errno));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return errors;
}

}  // namespace asteroid::testbed
