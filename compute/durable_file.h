// Whole-file writes that a crash cannot tear: the bytes go to PATH.tmp,
// which is flushed to disk (fsync, checked) and renamed over PATH, and the
// directory is synced; a reader sees the old file or the new one, never a
// part. Every file the runtime rewrites (checkpoints, weights, plan and
// summary JSON, the metrics trimmed on resume) goes through here.
#pragma once

#include <string>

namespace asteroid::compute {

// Throws std::runtime_error naming WHAT, the path and the system's reason
// when a step fails; the temporary file is removed then and PATH is left
// as it was. With KEEP_PREVIOUS_AS, an existing PATH is renamed to it
// once the new bytes are on disk, just before they take its place (a
// crash between the two leaves the previous generation and no PATH).
void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what,
                           const std::string& keep_previous_as = "");

}  // namespace asteroid::compute
