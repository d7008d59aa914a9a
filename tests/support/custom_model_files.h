// Test support: the model and data files of docs/custom-models.md, made by
// running the document's export snippet (the ```python block after the
// "export-snippet" marker) with Debian's python3-torch, once per test
// binary, in a directory removed at exit; and run_python for the small
// files a test writes itself (models and data that break the rules).
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "tests/support/temp_dir.h"

namespace asteroid::test_support {

// Runs `script` with /usr/bin/python3 in `dir`; throws with its output when
// it fails.
inline void run_python(const std::string& dir, const std::string& script) {
  std::ofstream(dir + "/script.py") << script;
  const std::string command = "cd '" + dir + "' && /usr/bin/python3 script.py > script.log 2>&1";
  if (std::system(command.c_str()) != 0) {
    std::ifstream log(dir + "/script.log");
    std::stringstream text;
    text << log.rdbuf();
    throw std::runtime_error("python failed in " + dir + ":\n" + text.str());
  }
}

// The export snippet of docs/custom-models.md.
inline std::string doc_export_snippet() {
  const std::string path = std::string(ASTEROID_SOURCE_DIR) + "/docs/custom-models.md";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const auto marker = doc.find("export-snippet");
  const auto begin = doc.find("```python\n", marker);
  const auto end = doc.find("```", begin + 10);
  if (marker == std::string::npos || begin == std::string::npos || end == std::string::npos)
    throw std::runtime_error(path + " has no ```python block after the export-snippet marker");
  return doc.substr(begin + 10, end - begin - 10);
}

struct CustomModelFiles {
  std::string model, train, test;  // model.pt, train.pt, test.pt
};

inline const CustomModelFiles& doc_model_files() {
  static TempDir dir("asteroid-custom-model");
  static const CustomModelFiles files = [] {
    run_python(dir.path(), doc_export_snippet());
    return CustomModelFiles{dir.file("model.pt"), dir.file("train.pt"), dir.file("test.pt")};
  }();
  return files;
}

}  // namespace asteroid::test_support
