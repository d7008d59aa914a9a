// Stand-in for `asteroid` in the testbed tests: dummy node, relay, probes,
// burn (apps/testbed/tools.h). `node --fail-id X` exits at once with status 3
// when its --id is X (a node that fails while the cluster starts);
// `hang ...` ignores its arguments and sleeps 60 s (a node that never listens).
#include <unistd.h>

#include <cstring>
#include <string>

#include "apps/testbed/tools.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "node") == 0) {
    std::string fail, id;
    for (int i = 2; i + 1 < argc; ++i) {
      if (std::strcmp(argv[i], "--fail-id") == 0) fail = argv[i + 1];
      if (std::strcmp(argv[i], "--id") == 0) id = argv[i + 1];
    }
    if (!fail.empty() && fail == id) return 3;
  }
  if (argc > 1 && std::strcmp(argv[1], "hang") == 0) {
    ::sleep(60);
    return 0;
  }
  return asteroid::testbed::tool_main(argc, argv);
}
