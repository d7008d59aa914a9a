// Small programs the testbed runs as (or next to) emulated devices, to
// measure the emulation and to stand in for nodes. They are hidden
// sub-commands of `asteroid cluster` (probe-link, burn, dummy-node, relay)
// and are also callable from tests.
#pragma once

#include <cstdint>
#include <string>

namespace asteroid::testbed {

// probe-link receiver: listens on host:port (port 0: any), prints
// "listening <port>", accepts one connection, reads until EOF and prints one
// JSON line {"bytes", "seconds", "mbps"}: the payload rate from the first
// byte to the last (the first read excluded from the byte count).
// Gives up after `timeout_s` without a connection or EOF. Returns an exit code.
int run_probe_receiver(const std::string& host, uint16_t port, double timeout_s = 60);

// probe-link sender: connects and sends for `seconds` (or `max_bytes`, if > 0,
// whichever ends first), then prints {"bytes", "seconds", "mbps"}.
int run_probe_sender(const std::string& host, uint16_t port, double seconds, double max_bytes = 0);

// A fixed CPU workload: `iterations` steps of an integer recurrence, in
// slices run through CpuThrottle::from_environment() (so in throttle mode it
// is throttled like a node). Prints {"iterations", "wall_s", "cpu_s"}.
int run_burn(long long iterations);

// A stand-in for `asteroid node` with the same flags: listens on host:port,
// accepts any number of connections, reads and discards, and logs one line
// per closed connection: "conn bytes=N seconds=S mbps=M". Runs until SIGTERM.
int run_dummy_node(const std::string& host, uint16_t port, const std::string& id);

}  // namespace asteroid::testbed

namespace asteroid::testbed {

// A minimal command line over the tools above, for a test helper binary that
// stands in for `asteroid` (no Torch, no CAF):
//   node --port P --host H --id I --memory-mb M [--cpu-share S]   (dummy node)
//   cluster relay --config F
//   probe-link --listen [--host H] [--port P] | --connect H:P [--seconds S]
//   burn --iterations N
int tool_main(int argc, char** argv);

}  // namespace asteroid::testbed
