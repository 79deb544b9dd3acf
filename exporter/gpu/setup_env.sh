#!/usr/bin/env bash
# Builds the software Vulkan device LiteRT's GPU accelerator runs on here (`make gpu-env`):
#   the Vulkan loader (apt: libvulkan1) and SwiftShader, Google's CPU implementation of Vulkan (the
#   device Dawn itself is tested on), taken from Debian's chromium-common package: `apt-get download`
#   + `dpkg -x`, keeping only usr/lib/chromium/libvk_swiftshader.so (needs libc, libm, libgcc) and its
#   ICD manifest, whose library_path is rewritten to the absolute extracted path. Nothing is installed
#   system-wide but libvulkan1, and only the child process (exporter/gpu/child.py) points
#   VK_ICD_FILENAMES at the manifest, so Mesa's lavapipe (which Dawn rejects) is never picked.
# Everything lives under one cache folder ($SEGEXPORT_GPU_CACHE, default .cache/gpu). Each step leaves
# a stamp and is redone only when missing, so a second run does nothing. env.txt is written last;
# a failure leaves one line in not-built.txt for exporter.gpu.env to quote.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SEGEXPORT_GPU_CACHE:-$REPO/.cache/gpu}"
STAMPS="$CACHE/stamps"

say() { echo "gpu-env: $*"; }
fail() {
    echo "gpu-env: not built: $*" >&2
    { mkdir -p "$CACHE" && echo "make gpu-env failed: $*" >"$CACHE/not-built.txt"; } 2>/dev/null || true
    exit 1
}

[[ "$(uname -s)" == Linux ]] || fail "needs Linux, this is $(uname -s)"
mkdir -p "$CACHE" "$STAMPS" || fail "cannot create $CACHE"

# 1. The Vulkan loader (libvulkan.so.1), the one system package.
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; }
if ! have_loader; then
    [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null || fail "libvulkan1 (the Vulkan loader) is missing and this is not Debian/Ubuntu"
    [[ "$(id -u)" == 0 ]] || fail "libvulkan1 (the Vulkan loader) is missing: run as root (sudo make gpu-env)"
    say "apt-get install libvulkan1"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends libvulkan1 >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libvulkan1 >/dev/null; }; } \
        || fail "apt-get install libvulkan1 failed"
    have_loader || fail "libvulkan1 installed but libvulkan.so.1 is still not found"
fi

# 2. SwiftShader out of chromium-common's .deb (not installed: chromium-common pulls a browser's worth of packages).
SS="$CACHE/swiftshader"
if [[ ! -f "$STAMPS/swiftshader" || ! -f "$SS/libvk_swiftshader.so" || ! -f "$SS/vk_swiftshader_icd.json" ]]; then
    command -v apt-get >/dev/null && command -v dpkg >/dev/null || fail "SwiftShader comes from Debian's chromium-common: needs apt-get and dpkg"
    TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
    say "apt-get download chromium-common (SwiftShader's Vulkan ICD)"
    (cd "$TMP" && apt-get download chromium-common >/dev/null 2>&1) \
        || { [[ "$(id -u)" == 0 ]] && apt-get update -qq >/dev/null 2>&1 && (cd "$TMP" && apt-get download chromium-common >/dev/null 2>&1); } \
        || fail "apt-get download chromium-common failed (no package list or no network?)"
    DEB="$(ls "$TMP"/chromium-common_*.deb 2>/dev/null | head -1)"
    [[ -n "$DEB" ]] || fail "apt-get download left no chromium-common .deb"
    dpkg -x "$DEB" "$TMP/x" || fail "dpkg -x $DEB failed"
    LIB="$(find "$TMP/x" -name libvk_swiftshader.so | head -1)"
    ICD="$(find "$TMP/x" -name vk_swiftshader_icd.json | head -1)"
    [[ -n "$LIB" && -n "$ICD" ]] || fail "$(basename "$DEB") has no libvk_swiftshader.so / vk_swiftshader_icd.json"
    mkdir -p "$SS"
    cp "$LIB" "$SS/libvk_swiftshader.so"
    # The manifest names the library relatively; the loader resolves that against its own search path,
    # so point it at the extracted copy.
    python3 - "$ICD" "$SS" <<'PY' || fail "cannot rewrite the ICD manifest"
import json, sys
icd = json.load(open(sys.argv[1]))
icd["ICD"]["library_path"] = sys.argv[2] + "/libvk_swiftshader.so"
json.dump(icd, open(sys.argv[2] + "/vk_swiftshader_icd.json", "w"), indent=2)
PY
    printf '%s' "$(basename "$DEB")" >"$STAMPS/swiftshader"
fi
missing="$(ldd "$SS/libvk_swiftshader.so" 2>/dev/null | grep 'not found' | awk '{print $1}' | tr '\n' ' ')" || true
[[ -z "$missing" ]] || fail "libvk_swiftshader.so needs libraries this machine lacks: $missing"

{
    echo "icd=$SS/vk_swiftshader_icd.json"
    echo "library=$SS/libvk_swiftshader.so"
    echo "source=$(cat "$STAMPS/swiftshader")"
} >"$CACHE/env.txt.tmp" && mv "$CACHE/env.txt.tmp" "$CACHE/env.txt"
rm -f "$CACHE/not-built.txt"
say "ready: $CACHE ($(cat "$STAMPS/swiftshader"))"
