#!/usr/bin/env bash
# Builds the release binaries for the two images and lays out their root filesystems:
#
#   OUT/drainer/   quiesce, /etc/ssl/certs/ca-certificates.crt, passwd, group, nsswitch.conf
#   OUT/init/      quiesce-init and quiesce-init.sha256
#
# The Dockerfile's build stage runs it (for `docker build .` / `podman build .`), and
# scripts/image runs it on the host before buildah assembles the same Dockerfile's final stages
# from OUT (no base image is pulled). One script, so both ways produce the same files.
#
#   build/stage.sh OUT
#
# Both binaries are static glibc executables (-C target-feature=+crt-static): they run on
# `scratch`. Name resolution needs no NSS module on disk: glibc >= 2.34 links its `files` and
# `dns` modules into libc.a, and nsswitch.conf names only those two (build/README.md has the
# proof).
set -euo pipefail
out=${1:?usage: build/stage.sh OUT_DIR}
cd "$(dirname "$0")/.."

# The property the images rely on, checked where it lives: this glibc's libc.a carries the
# `files` and `dns` NSS modules (true since glibc 2.34; Debian 12 has 2.36). With an older one,
# a static binary would look for libnss_dns.so.2 on disk and resolve no name on scratch.
libc_a=$(cc -print-file-name=libc.a)
symbols=$(nm "$libc_a" 2>/dev/null || true)
for module in files dns; do
  if ! grep -q " T _nss_${module}_gethostbyname4_r$" <<<"$symbols"; then
    echo "stage: $libc_a has no built-in '$module' NSS module: use a builder with glibc >= 2.34" >&2
    exit 1
  fi
done
bundle=/usr/share/ca-certificates/mozilla
if ! compgen -G "$bundle/*.crt" >/dev/null; then
  echo "stage: no CA certificates in $bundle: install Debian's ca-certificates package" >&2
  exit 1
fi

# x86_64 only for now (the one Rust target installed where the images are checked).
# `cargo rustc` gives +crt-static to the final link only: build scripts and proc macros stay
# dynamic (as they must), and the dependencies are the same objects as in a plain release build,
# which scripts/lambda-bundle's dynamic quiesce-lambda reuses instead of compiling them again.
#
# QUIESCE_ARTIFACT_PROFILE=dev (what scripts/test sets) checks the same recipe on a debug build
# that reuses the test build's dependencies, instead of a release build on every CI run.
profile=${QUIESCE_ARTIFACT_PROFILE:-release}
case $profile in release) profile_dir=release ;; dev) profile_dir=debug ;;
  *) echo "stage: QUIESCE_ARTIFACT_PROFILE is '$profile', expected release or dev" >&2; exit 2 ;;
esac
static=(-- -C target-feature=+crt-static)
nice -n 10 cargo rustc --locked --profile "$profile" -p quiesce --bin quiesce "${static[@]}"
nice -n 10 cargo rustc --locked --profile init -p quiesce-init --bin quiesce-init "${static[@]}"

rm -rf "$out/drainer" "$out/init"
mkdir -p "$out/drainer/etc/ssl/certs" "$out/init"
# Without its symbol table (47 MB → 35 MB); target/release/quiesce keeps it, to symbolize a
# backtrace from the image built from the same commit.
strip -o "$out/drainer/quiesce" "target/$profile_dir/quiesce"
chmod 0755 "$out/drainer/quiesce"
# Mozilla's roots as Debian ships them, in a fixed order; not the build machine's
# /etc/ssl/certs, which may carry local additions.
for crt in "$bundle"/*.crt; do cat "$crt"; done >"$out/drainer/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/drainer/etc/ssl/certs/ca-certificates.crt"
# The chart runs the drainer as 65532:65532 (podSecurityContext); naming the user lets
# anything that looks up the home directory (getpwuid) find one.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' \
  >"$out/drainer/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/drainer/etc/group"
# Explicit, because glibc's built-in default for a missing file has changed between versions;
# kubelet's /etc/hosts (hostAliases, the pod's own name) first, then the cluster DNS.
printf 'hosts: files dns\n' >"$out/drainer/etc/nsswitch.conf"

install -m 0755 target/init/quiesce-init "$out/init/quiesce-init"
(cd "$out/init" && sha256sum quiesce-init >quiesce-init.sha256)
echo "stage: $out/drainer and $out/init"
