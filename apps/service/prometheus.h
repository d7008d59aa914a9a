// The service's /metrics page in the Prometheus text exposition format
// (version 0.0.4): `asteroid_` names, base units (seconds, bytes), `_total`
// counters, a `job` label on every per-job series and a `device` label on
// per-device ones. Per-job series come from the jobs the service still
// watches (running, and the latest finished); counters restart with a
// job's process (a resumed job), which Prometheus takes as a reset.
#pragma once

#include <string>
#include <vector>

#include "apps/service/job_queue.h"
#include "apps/service/job_watch.h"

namespace asteroid::apps::service {

struct WatchedJob {
  const Job* job = nullptr;
  const JobWatch* watch = nullptr;
};

// `all` counts jobs by state; `watched` gives the per-job series.
std::string prometheus_text(const std::map<std::string, Job>& all, const std::vector<WatchedJob>& watched);

// Recovery-time histogram bucket bounds, seconds.
const std::vector<double>& recovery_buckets();

}  // namespace asteroid::apps::service
