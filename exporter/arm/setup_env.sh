#!/usr/bin/env bash
# Builds the ARM emulation environment `exporter.arm.runner` needs (`make arm-env`):
#   QEMU's user-mode emulator (apt), the plugin header of the installed QEMU version (from the
#   matching Debian/Ubuntu source package, through a private sources list), an arm64 Debian userland
#   (debootstrap first stage + dpkg -x), the aarch64 wheels pinned in locks/arm-aarch64.txt (the
#   host's ai-edge-litert and its requirements), the instruction-counting plugin built from exporter/arm/icount.c, and one fake
#   /proc/cpuinfo (+ /sys cpu topology) per emulated core.
# Everything but the apt packages lives under one cache folder ($SEGEXPORT_ARM_CACHE, default
# .cache/arm in the repository). Each step leaves a stamp recording what it was built from and is
# redone only when that changes, so a second run does nothing.
# Needs root on Debian/Ubuntu x86_64 for the first build; exits non-zero with one line otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SEGEXPORT_ARM_CACHE:-$REPO/.cache/arm}"
HOST_PYTHON="${HOST_PYTHON:-$REPO/.venv/bin/python}"
SUITE="${SEGEXPORT_ARM_SUITE:-bookworm}"
MIRROR="${SEGEXPORT_ARM_MIRROR:-http://deb.debian.org/debian}"
CORES="cortex-a76 cortex-a55"
STAMPS="$CACHE/stamps"

say() { echo "arm-env: $*"; }
fail() {  # one line, also kept for exporter.arm.env.check() to quote
    echo "arm-env: not built: $*" >&2
    { mkdir -p "$CACHE" && echo "make arm-env failed: $*" >"$CACHE/not-built.txt"; } 2>/dev/null || true
    exit 1
}

# The stamp $1 holds exactly the text $2: the step is done.
fresh() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }

[[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] || fail "needs Linux on x86_64, this is $(uname -s)/$(uname -m)"
[[ -x "$HOST_PYTHON" ]] || fail "no host Python at $HOST_PYTHON (run make setup)"
command -v setarch >/dev/null || fail "setarch (util-linux) is missing"

# What the aarch64 side must match: the locked ai-edge-litert and its requirements (`make lock`
# writes the file from the host's versions), which must be what the host runs.
LOCK="$REPO/locks/arm-aarch64.txt"
[[ -f "$LOCK" ]] || fail "no $LOCK (make lock writes it)"
REQUIREMENTS="$(grep -vE '^[[:space:]]*(#|$)' "$LOCK" | tr '\n' ' ' | sed 's/ *$//')"
HOST_LITERT="$("$HOST_PYTHON" -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))' 2>/dev/null)" \
    || fail "ai-edge-litert is not installed in $HOST_PYTHON"
tr ' ' '\n' <<<"$REQUIREMENTS" | grep -qxF "ai-edge-litert==$HOST_LITERT" \
    || fail "the host runs ai-edge-litert $HOST_LITERT but $LOCK pins another: make setup installs the locked one"

ROOTFS="$CACHE/rootfs"
ROOTFS_KEY="$SUITE $MIRROR python3 libstdc++6"
if { ! fresh rootfs "$ROOTFS_KEY" || [[ ! -d "$ROOTFS/usr/bin" ]]; } && [[ "$(id -u)" != 0 ]]; then
    fail "the arm64 userland is not built and debootstrap needs root: run sudo make arm-env"
fi

# ---------------------------------------------------------------------------------------------
# 1. System packages (only the missing ones).
have_packages() {
    command -v qemu-aarch64 >/dev/null && command -v debootstrap >/dev/null && command -v gcc >/dev/null \
        && command -v pkg-config >/dev/null && pkg-config --exists glib-2.0 \
        && [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]
}
if ! have_packages; then
    [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null || fail "qemu-user/debootstrap missing and this is not Debian/Ubuntu (no apt-get)"
    [[ "$(id -u)" == 0 ]] || fail "qemu-user/debootstrap missing: run as root (sudo make arm-env)"
    say "apt-get install qemu-user debootstrap gcc libglib2.0-dev pkg-config debian-archive-keyring"
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -qq --no-install-recommends qemu-user debootstrap gcc libc6-dev libglib2.0-dev
             pkg-config debian-archive-keyring)
    "${install[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${install[@]}" >/dev/null; } \
        || fail "apt-get install failed"
    have_packages || fail "the packages installed but qemu-aarch64/debootstrap/glib are still missing"
fi
QEMU_BIN="$(command -v qemu-aarch64)"
QEMU_PKG="$(dpkg-query -S "$(readlink -f "$QEMU_BIN")" 2>/dev/null | cut -d: -f1 | head -1)" || true
[[ -n "$QEMU_PKG" ]] || fail "$QEMU_BIN does not belong to a Debian package (cannot find its source version)"
QEMU_SRC_VERSION="$(dpkg-query -W -f='${source:Version}' "$QEMU_PKG")"
QEMU_SRC_PKG="$(dpkg-query -W -f='${source:Package}' "$QEMU_PKG")"
QEMU_UPSTREAM="$(echo "$QEMU_SRC_VERSION" | sed -E 's/^[0-9]+://; s/[+~-].*//')"
QEMU_CPUS="$("$QEMU_BIN" -cpu help 2>/dev/null)" || true
grep -qw cortex-a76 <<<"$QEMU_CPUS" || fail "$QEMU_BIN ($QEMU_UPSTREAM) has no cortex-a76 CPU model"
# QEMU 7.2 has no cortex-a55 model: the A76's ISA (ARMv8.2-A, dot product, fp16) is the A55's, so
# its -cpu stands in and the A55's identity in /proc/cpuinfo steers XNNPACK's kernel choice.
QEMU_CPU_A55=cortex-a55
grep -qw cortex-a55 <<<"$QEMU_CPUS" || QEMU_CPU_A55=cortex-a76

# ---------------------------------------------------------------------------------------------
# 2. qemu-plugin.h of the installed QEMU, from its source package, with a private apt setup.
INCLUDE="$CACHE/include"
if ! fresh header "$QEMU_SRC_PKG=$QEMU_SRC_VERSION" || [[ ! -f "$INCLUDE/qemu-plugin.h" ]]; then
    say "qemu-plugin.h from the source package $QEMU_SRC_PKG=$QEMU_SRC_VERSION"
    APT="$CACHE/apt"
    rm -rf "$APT" && mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/parts" "$APT/src"
    # deb-src lines for the Debian/Ubuntu archives the system already uses.
    apt-get indextargets --format '$(ORIGIN)|$(REPO_URI)|$(RELEASE)|$(COMPONENT)' 'Created-By: Packages' \
        | awk -F'|' '$1 == "Debian" || $1 == "Ubuntu" { print "deb-src " $2 " " $3 " " $4 }' | sort -u \
        >"$APT/sources.list"
    [[ -s "$APT/sources.list" ]] || fail "no Debian/Ubuntu archive in the system's apt sources to take deb-src lines from"
    apt_private=(-o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts="$APT/parts"
                 -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Sandbox::User=root -qq)
    apt-get "${apt_private[@]}" update >/dev/null || fail "apt-get update of the private deb-src list failed"
    version="$QEMU_SRC_VERSION"
    versions="$(apt-cache "${apt_private[@]}" showsrc "$QEMU_SRC_PKG" | sed -n 's/^Version: //p')" || true
    if ! grep -qxF "$version" <<<"$versions"; then
        # The archive moved on: any source of the same upstream version has the same plugin API.
        version="$(grep -E "^([0-9]+:)?${QEMU_UPSTREAM//./\\.}[+~-]" <<<"$versions" | head -1)" \
            || fail "no $QEMU_SRC_PKG source of upstream version $QEMU_UPSTREAM in the archives"
        say "source $QEMU_SRC_VERSION is gone from the archive, using $version (same upstream version)"
    fi
    (cd "$APT/src" && apt-get "${apt_private[@]}" source --download-only "$QEMU_SRC_PKG=$version" >/dev/null) \
        || fail "apt-get source $QEMU_SRC_PKG=$version failed"
    orig="$(ls "$APT"/src/*.orig.tar.* | head -1)"
    mkdir -p "$APT/x"
    tar -xf "$orig" -C "$APT/x" --wildcards '*/include/qemu/qemu-plugin.h' || fail "no qemu-plugin.h in $orig"
    mkdir -p "$INCLUDE"
    cp "$(find "$APT/x" -path '*/include/qemu/qemu-plugin.h' | head -1)" "$INCLUDE/qemu-plugin.h"
    # A Debian patch touching the header would be applied here; say so if there is one.
    debian_tar="$(ls "$APT"/src/*.debian.tar.* 2>/dev/null | head -1)"
    if [[ -n "$debian_tar" ]] && tar -xOf "$debian_tar" --wildcards 'debian/patches/*' 2>/dev/null \
            | grep -q '^+++ .*include/qemu/qemu-plugin.h'; then
        fail "a Debian patch of $QEMU_SRC_PKG changes include/qemu/qemu-plugin.h: apply it by hand"
    fi
    rm -rf "$APT"
    stamp header "$QEMU_SRC_PKG=$QEMU_SRC_VERSION"
fi

# ---------------------------------------------------------------------------------------------
# 3. arm64 userland with Python: debootstrap's first stage, then every downloaded .deb unpacked.
if ! fresh rootfs "$ROOTFS_KEY" || [[ ! -d "$ROOTFS/usr/bin" ]]; then
    say "debootstrap --arch=arm64 --variant=minbase $SUITE (python3, libstdc++6)"
    rm -rf "$ROOTFS" "$ROOTFS.tmp"
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libstdc++6 \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$SUITE" "$ROOTFS.tmp" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || fail "debootstrap failed: $(tail -1 "$CACHE/debootstrap.log")"
    for deb in "$ROOTFS.tmp"/var/cache/apt/archives/*.deb; do
        dpkg -x "$deb" "$ROOTFS.tmp"
    done
    rm -f "$ROOTFS.tmp"/var/cache/apt/archives/*.deb
    mv "$ROOTFS.tmp" "$ROOTFS"
    stamp rootfs "$ROOTFS_KEY"
fi
GUEST_PYTHON="$(cd "$ROOTFS/usr/bin" && ls python3.[0-9]* | grep -E '^python3\.[0-9]+$' | sort -V | tail -1)"
[[ -n "$GUEST_PYTHON" ]] || fail "no python3.X in $ROOTFS/usr/bin"
PYVER="${GUEST_PYTHON#python}"          # 3.11
PYTAG="cp${PYVER/./}"                    # cp311

# ---------------------------------------------------------------------------------------------
# 4. aarch64 wheels of the host's versions, unpacked onto one folder (the guest's PYTHONPATH).
SITE="$CACHE/site"
if ! fresh wheels "$PYTAG $REQUIREMENTS" || [[ ! -d "$SITE/ai_edge_litert" ]]; then
    say "aarch64 wheels for $PYTAG: $REQUIREMENTS"
    rm -rf "$CACHE/wheels" "$SITE.tmp" && mkdir -p "$CACHE/wheels" "$SITE.tmp"
    # shellcheck disable=SC2086  # one word per requirement
    "$HOST_PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --python-version "$PYVER" --implementation cp --abi "$PYTAG" \
        -d "$CACHE/wheels" $REQUIREMENTS || fail "pip download of the aarch64 wheels failed"
    for wheel in "$CACHE"/wheels/*.whl; do
        "$HOST_PYTHON" -m zipfile -e "$wheel" "$SITE.tmp"
    done
    rm -rf "$SITE" "$CACHE/wheels" && mv "$SITE.tmp" "$SITE"
    stamp wheels "$PYTAG $REQUIREMENTS"
fi

# ---------------------------------------------------------------------------------------------
# 5. The instruction-counting plugin, rebuilt when its source or the QEMU version changes.
PLUGIN="$CACHE/libicount.so"
PLUGIN_KEY="$(sha256sum "$HERE/icount.c" | cut -d' ' -f1) $QEMU_SRC_VERSION"
if ! fresh plugin "$PLUGIN_KEY" || [[ ! -f "$PLUGIN" ]]; then
    say "building libicount.so from exporter/arm/icount.c"
    # shellcheck disable=SC2046
    gcc -O2 -Wall -Werror -shared -fPIC -fvisibility=hidden $(pkg-config --cflags glib-2.0) -I"$INCLUDE" \
        "$HERE/icount.c" -o "$PLUGIN.tmp" || fail "the plugin did not compile"
    mv "$PLUGIN.tmp" "$PLUGIN"
    stamp plugin "$PLUGIN_KEY"
fi

# ---------------------------------------------------------------------------------------------
# 6. One sysroot per core for qemu's -L: the userland (symlinks) plus a fixed /proc/cpuinfo and
#    /sys cpu topology. QEMU 7.2 does not emulate /proc/cpuinfo for aarch64, so without this
#    XNNPACK's CPU detection would read the host's x86 file; with it kernel selection is fixed per
#    named core and independent of the host.
write_core() {  # core part variant revision max_khz l1d l2 (cache sizes as /sys writes them)
    local core="$1" part="$2" variant="$3" revision="$4" khz="$5" l1d="$6" l2="$7" root="$CACHE/sysroot/$1.tmp"
    rm -rf "$root" && mkdir -p "$root/proc" "$root/sys/devices/system/cpu"
    for entry in "$ROOTFS"/*; do
        case "$(basename "$entry")" in dev|proc|sys|tmp|run) continue ;; esac
        ln -s "../../rootfs/$(basename "$entry")" "$root/$(basename "$entry")"
    done
    local features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
    : >"$root/proc/cpuinfo"
    for cpu in 0 1; do
        printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x%x\nCPU part\t: 0x%x\nCPU revision\t: %s\n\n' \
            "$cpu" "$features" "$variant" "$part" "$revision" >>"$root/proc/cpuinfo"
        local dir="$root/sys/devices/system/cpu/cpu$cpu"
        mkdir -p "$dir/topology" "$dir/cpufreq" "$dir/regs/identification"
        echo "$cpu" >"$dir/topology/core_id"
        echo 0 >"$dir/topology/physical_package_id"
        echo 0 >"$dir/topology/cluster_id"
        for list in core_siblings_list package_cpus_list cluster_cpus_list; do echo 0-1 >"$dir/topology/$list"; done
        for list in thread_siblings_list core_cpus_list; do echo "$cpu" >"$dir/topology/$list"; done
        # index0 L1d, index1 L1i (private), index2 L2 (private), index3 L3 (shared): the host's would
        # be read otherwise.
        local index=0 level type size shared
        for cache in "1 Data $l1d $cpu" "1 Instruction 64K $cpu" "2 Unified $l2 $cpu" "3 Unified 2048K 0-1"; do
            read -r level type size shared <<<"$cache"
            mkdir -p "$dir/cache/index$index"
            echo "$level" >"$dir/cache/index$index/level"
            echo "$type" >"$dir/cache/index$index/type"
            echo "$size" >"$dir/cache/index$index/size"
            echo "$shared" >"$dir/cache/index$index/shared_cpu_list"
            echo 64 >"$dir/cache/index$index/coherency_line_size"
            index=$((index + 1))
        done
        echo "$khz" >"$dir/cpufreq/cpuinfo_max_freq"
        echo 500000 >"$dir/cpufreq/cpuinfo_min_freq"
        printf '0x00000000%08x\n' $(( (0x41 << 24) | (variant << 20) | (0xf << 16) | (part << 4) | revision )) \
            >"$dir/regs/identification/midr_el1"
    done
    for list in possible present online; do echo 0-1 >"$root/sys/devices/system/cpu/$list"; done
    echo 1 >"$root/sys/devices/system/cpu/kernel_max"
    rm -rf "$CACHE/sysroot/$core" && mv "$root" "$CACHE/sysroot/$core"
}
SYSROOT_KEY="$(sha256sum "$HERE/setup_env.sh" | cut -d' ' -f1) $CORES"
if ! fresh sysroots "$SYSROOT_KEY"; then
    say "sysroots with a fixed /proc/cpuinfo for $CORES"
    mkdir -p "$CACHE/sysroot"
    write_core cortex-a76 0xd0b 4 1 2400000 64K 512K   # Cortex-A76 r4p1
    write_core cortex-a55 0xd05 2 0 1800000 32K 128K   # Cortex-A55 r2p0
    stamp sysroots "$SYSROOT_KEY"
fi

# ---------------------------------------------------------------------------------------------
# 7. What was built, for exporter.arm.env.check().
cat >"$CACHE/env.txt.tmp" <<EOF
qemu=$QEMU_BIN
qemu_version=$QEMU_SRC_VERSION
python=$ROOTFS/usr/bin/$GUEST_PYTHON
site=$SITE
plugin=$PLUGIN
cores=$CORES
cpu.cortex-a76=cortex-a76
cpu.cortex-a55=$QEMU_CPU_A55
requirements=$REQUIREMENTS
EOF
mv "$CACHE/env.txt.tmp" "$CACHE/env.txt"
rm -f "$CACHE/not-built.txt"
say "ready in $CACHE (qemu $QEMU_SRC_VERSION, $GUEST_PYTHON, $(echo "$REQUIREMENTS" | tr ' ' '\n' | grep -E '^ai-edge-litert=='))"
