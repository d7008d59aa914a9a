// The dashboard page served at `/` (apps/service/dashboard.html, compiled
// into the binary: the service needs no files beside it). Plain HTML,
// SVG and JavaScript; it polls the API (/jobs, /jobs/ID, /jobs/ID/rounds,
// /cluster) once a second.
#pragma once

#include <string>

namespace asteroid::apps::service {

const std::string& dashboard_html();

}  // namespace asteroid::apps::service
