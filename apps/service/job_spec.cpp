#include "apps/service/job_spec.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include "compute/model_zoo.h"

namespace asteroid::apps::service {
namespace {

enum class Kind { text, whole, number, flag, list, document };

struct Field {
  const char* name;
  Kind kind;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices = {};  // text: the values allowed (empty: any)
};

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {"name", Kind::text},
      {"devices", Kind::list},
      {"model", Kind::text},
      {"data", Kind::text},
      {"test_data", Kind::text},
      {"strategy", Kind::text, 0, 0, {"hpp", "dp", "pp", "single"}},
      {"epochs", Kind::whole, 1, 1e6},
      {"rounds", Kind::whole, 0, 1e12},
      {"batch", Kind::whole, 1, 1e6},
      {"seed", Kind::whole, 0, 9.0e15},
      {"optimizer", Kind::text, 0, 0, {"sgd", "momentum", "adam"}},
      {"lr", Kind::number, 1e-12, 1e3},
      {"test_samples", Kind::whole, 0, 1e9},
      {"wire", Kind::text, 0, 0, {"exact", "fp16", "int8", "int4", "auto"}},
      {"codec_block", Kind::whole, 1, 4096},
      {"rank", Kind::text, 0, 0, {"simulated", "model"}},
      {"min_gain", Kind::number, 0, 100},
      {"probe_rounds", Kind::whole, 0, 1e6},
      {"baseline_rounds", Kind::whole, 0, 1e6},
      {"microbatches", Kind::whole, 0, 1e6},
      {"profile_batches", Kind::text},
      {"profile_repeats", Kind::whole, 1, 1000},
      {"profile_points", Kind::whole, 0, 64},
      {"profile_timeout", Kind::number, 1, 86400},
      {"planner_on", Kind::text},
      {"replan", Kind::text, 0, 0, {"lightweight", "heavy", "restart", "stop"}},
      {"replicate_every", Kind::whole, 0, 1e9},
      {"central_every", Kind::whole, 0, 1e9},
      {"checkpoint_every", Kind::whole, 1, 1e9},
      {"heartbeat_interval", Kind::whole, 1, 60000},
      {"heartbeat_deadline", Kind::whole, 1, 600000},
      {"straggler_factor", Kind::number, 1, 1000},
      {"straggler_rounds", Kind::whole, 1, 1e6},
      {"adapt", Kind::text, 0, 0, {"on", "off"}},
      {"adapt_threshold", Kind::number, 0.01, 100},
      {"adapt_rounds", Kind::whole, 1, 1e6},
      {"adapt_horizon", Kind::whole, 1, 1e8},
      {"connect_timeout", Kind::number, 0.1, 3600},
      {"no_plots", Kind::flag},
      {"faults", Kind::document},
      {"plan", Kind::document},
      {"plan_switches", Kind::document},
  };
  return table;
}

// What the service decides itself (job_spec.h).
const std::set<std::string>& owned_by_service() {
  static const std::set<std::string> owned = {"cluster", "env",   "out",        "resume", "job_id",
                                              "metrics", "summary", "checkpoint", "trace",  "weights_out",
                                              "progress", "data_dir", "threads",  "bandwidth", "cpu_budget",
                                              "skip_unreachable"};
  return owned;
}

std::string flag_of(const std::string& field) {
  std::string flag = "--" + field;
  for (char& c : flag) c = c == '_' ? '-' : c;
  return flag;
}

std::string number_text(double v) {
  if (std::floor(v) == v && std::fabs(v) < 9.0e15) return std::to_string(static_cast<long long>(v));
  nlohmann::json j = v;
  return j.dump();
}

void check_range(const Field& f, double v) {
  if (!std::isfinite(v) || v < f.min || v > f.max) {
    throw JobSpecError(f.name, std::string("field '") + f.name + "' must be between " + number_text(f.min) +
                                   " and " + number_text(f.max) + ", got " + number_text(v));
  }
}

void check_model(const std::string& model) {
  const bool file = model.size() > 3 && model.compare(model.size() - 3, 3, ".pt") == 0;
  if (file) {
    if (!std::filesystem::is_regular_file(model))
      throw JobSpecError("model", "field 'model': no TorchScript file at '" + model + "' on the service's machine");
    return;
  }
  if (!compute::is_known_model(model))
    throw JobSpecError("model", "field 'model': unknown model '" + model + "' (" + compute::known_models_text() +
                                    ", or a TorchScript .pt file)");
}

}  // namespace

JobRequest parse_job_spec(const nlohmann::json& spec) {
  if (!spec.is_object()) throw JobSpecError("", "a job spec is a JSON object of asteroid train's flags");
  JobRequest request;
  for (const auto& [key, value] : spec.items()) {
    if (owned_by_service().count(key)) {
      throw JobSpecError(key, "field '" + key + "' is decided by the service (where a job runs and what it writes)");
    }
    const Field* field = nullptr;
    for (const auto& f : fields()) {
      if (key == f.name) field = &f;
    }
    if (!field) throw JobSpecError(key, "unknown field '" + key + "'; known: " + [] {
                                          std::string all;
                                          for (const auto& f : fields()) all += (all.empty() ? "" : ", ") + std::string(f.name);
                                          return all;
                                        }());
    const std::string flag = flag_of(key);
    auto wrong_type = [&](const char* expected) {
      return JobSpecError(key, "field '" + key + "' must be " + expected + ", got " + value.dump());
    };
    switch (field->kind) {
      case Kind::text: {
        if (!value.is_string()) throw wrong_type("a string");
        const std::string text = value.get<std::string>();
        if (text.empty() || text.size() > 4096) throw JobSpecError(key, "field '" + key + "' must be 1 to 4096 characters");
        if (!field->choices.empty()) {
          bool allowed = false;
          std::string list;
          for (const auto& c : field->choices) {
            allowed |= c == text;
            list += (list.empty() ? "" : ", ") + c;
          }
          if (!allowed) throw JobSpecError(key, "field '" + key + "' must be one of " + list + ", got '" + text + "'");
        }
        if (key == "model") check_model(text);
        if (key == "name") {
          request.name = text;
        } else {
          request.train_args.insert(request.train_args.end(), {flag, text});
        }
        break;
      }
      case Kind::whole:
      case Kind::number: {
        if (!value.is_number()) throw wrong_type("a number");
        const double v = value.get<double>();
        if (field->kind == Kind::whole && std::floor(v) != v) throw wrong_type("a whole number");
        check_range(*field, v);
        request.train_args.insert(request.train_args.end(), {flag, number_text(v)});
        break;
      }
      case Kind::flag:
        if (!value.is_boolean()) throw wrong_type("true or false");
        if (value.get<bool>()) request.train_args.push_back(flag);
        break;
      case Kind::list: {
        if (!value.is_array() || value.empty()) throw wrong_type("a non-empty list of device ids");
        std::set<std::string> seen;
        for (const auto& d : value) {
          if (!d.is_string() || d.get<std::string>().empty()) throw wrong_type("a non-empty list of device ids");
          if (!seen.insert(d.get<std::string>()).second)
            throw JobSpecError(key, "field 'devices' names '" + d.get<std::string>() + "' twice");
          request.devices.push_back(d.get<std::string>());
        }
        break;
      }
      case Kind::document:
        if (!value.is_object() && !value.is_array()) throw wrong_type("a JSON object (what its file would hold)");
        request.files[flag] = value;
        break;
    }
  }
  if (request.name.empty()) request.name = spec.value("model", std::string("fmnist-resnet"));
  return request;
}

std::vector<std::string> job_spec_fields() {
  std::vector<std::string> names;
  for (const auto& f : fields()) names.push_back(f.name);
  return names;
}

}  // namespace asteroid::apps::service
