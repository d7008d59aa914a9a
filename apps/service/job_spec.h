// A served job's spec, as `POST /jobs` gives it: a JSON object whose
// fields are `asteroid train`'s flags with underscores for dashes
// ({"model": "fmnist-cnn", "rounds": 200, "replicate_every": 1}).
// parse_job_spec checks every field (known, of the flag's type and range)
// and turns the spec into the train command's arguments, so that a bad
// spec is refused at submission with the field named, not when it runs.
//
// Besides the flags: "name" (a label), "devices" (the job runs on these
// devices of the service's cluster only; jobs on disjoint devices run side
// by side), and "faults", "plan", "plan_switches" given inline as the JSON
// their files would hold. The service owns where a job runs and what it
// writes: cluster, out, resume, job_id, metrics, summary, checkpoint and
// trace are refused.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace asteroid::apps::service {

// A spec refused: `field` names what was wrong ("" for the spec as a whole).
struct JobSpecError : std::invalid_argument {
  JobSpecError(std::string field_name, const std::string& message)
      : std::invalid_argument(message), field(std::move(field_name)) {}
  std::string field;
};

struct JobRequest {
  std::string name;                  // "name", else the model's
  std::vector<std::string> devices;  // "devices" (empty: the whole cluster)
  // `asteroid train` flags and values for the scalar fields, in the spec's
  // field order (nlohmann's: alphabetical).
  std::vector<std::string> train_args;
  // Inline documents by the flag that takes their file: "--faults" ->
  // the schedule; the runner writes each into the job's folder.
  std::map<std::string, nlohmann::json> files;
};

// Throws JobSpecError for a spec that is not an object, an unknown or
// refused field, a value of the wrong type or out of range.
JobRequest parse_job_spec(const nlohmann::json& spec);

// The fields a spec may have, with a word on each (for the error of an
// unknown field and for docs/service.md).
std::vector<std::string> job_spec_fields();

}  // namespace asteroid::apps::service
