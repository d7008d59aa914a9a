// CPU quota and memory limit per emulated device through Linux cgroups, v1
// (cpu + memory hierarchies) or v2 (unified), whichever this machine offers
// to this process. Detection never assumes: it reads /proc/mounts and
// /proc/self/cgroup and proves it may create a group before saying yes.
//
// Groups are created as <base>/asteroid-<cluster id>/d<index>; v1 bases are
// this process's own cgroup in each hierarchy (so a sandbox's limits still
// apply), the v2 base is the root of the unified mount. Only groups whose
// names start with "asteroid-" are ever removed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace asteroid::testbed {

enum class CgroupVersion { none, v1, v2 };

struct CgroupSupport {
  CgroupVersion version = CgroupVersion::none;
  std::string cpu_base;     // where cluster groups are created (cpu controller)
  std::string memory_base;  // same for memory; empty: no memory limits
  std::string reason;       // why none (for the summary)
};

// Probes this process's cgroup situation (creates and removes a probe group).
CgroupSupport detect_cgroups();

struct CpuQuota {
  long quota_us = -1;   // -1: unlimited
  long period_us = 10000;
};
inline constexpr long kShortestPeriodUs = 2000;
// The shortest period whose quota is the kernel's 1 ms minimum (at least
// 2 ms, at most 1 s): a throttled node runs at most 1 ms, or its share of
// 2 ms, before it waits, so it is slow the way a slower CPU is slow and not
// in bursts. (A 10 ms period let a 0.12-core node run 1.2 ms at full speed
// then stall 8.8 ms: every message to it waited up to 8.8 ms, and pipelined
// plans measured half of what the same average speed predicts.)
// share >= 64 or <= 0 means unlimited.
CpuQuota cpu_quota_for(double share);

struct NodeCgroup {
  std::string cpu_dir;     // v1: in the cpu hierarchy; v2: the group
  std::string memory_dir;  // v1: in the memory hierarchy; v2: == cpu_dir; empty: none
  // cgroup.procs files a process writes "0" into to join this group.
  std::vector<std::string> procs_files() const;
};

// Creates <base>/<cluster_group> in each hierarchy; returns the created
// directories (to give to remove_cgroups). Throws std::runtime_error naming
// the path on failure.
std::vector<std::string> create_cluster_cgroup(const CgroupSupport& s, const std::string& cluster_group);

// Creates the node group under the cluster group and applies the limits
// (memory_bytes <= 0: no memory limit).
NodeCgroup create_node_cgroup(const CgroupSupport& s, const std::string& cluster_group,
                              const std::string& node_group, double cpu_share, double memory_bytes);

// Changes a node group's CPU quota (fault injection `slow`).
void set_cgroup_cpu_share(CgroupVersion v, const std::string& cpu_dir, double share);
CpuQuota read_cgroup_cpu_quota(CgroupVersion v, const std::string& cpu_dir);

// Pids in a group (empty if it does not exist).
std::vector<pid_t> cgroup_pids(const std::string& dir);

// SIGKILLs what is left in each directory (deepest first), waits for the
// groups to empty and removes them. Refuses (skips) paths without an
// "asteroid-" component. Returns error messages (empty: all removed).
std::vector<std::string> remove_cgroups(const std::vector<std::string>& dirs);

std::string to_string(CgroupVersion v);

}  // namespace asteroid::testbed
