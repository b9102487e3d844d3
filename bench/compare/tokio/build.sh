#!/bin/sh
# Builds the tokio peer offline (Debian's cargo/rustc and crates) and prints the binary's path.
# CARGO / RUSTC / CARGO_TARGET_DIR may be overridden; by default Debian's toolchain in /usr/bin is
# used even when a rustup toolchain comes first on PATH, so the build is what Debian 12 ships.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${CARGO:=/usr/bin/cargo}"
: "${RUSTC:=/usr/bin/rustc}"
: "${CARGO_TARGET_DIR:=/tmp/quell-tokio-target}"
export RUSTC CARGO_TARGET_DIR
# cargo reads .cargo/config.toml (the offline Debian registry) from the working directory.
cd "$here"
nice "$CARGO" build --offline --release -j2 --quiet >&2
echo "$CARGO_TARGET_DIR/release/quell-bench-tokio"
