# Sourced by the GPU bundle scripts (gpu_bench.sh, gpu_check.sh): copies this machine's Vulkan
# loader, libvulkan.so.1, into a bundle, for GPU machines that have a driver but no loader.
# Where none is installed here, Debian's libvulkan1 package is taken apart instead.

bundle_vulkan_loader() {
    local bundle="$1" loader
    loader="$(ldconfig -p 2>/dev/null | awk '/libvulkan\.so\.1 / {print $NF; exit}')"
    if [ -z "$loader" ] && command -v apt-get >/dev/null 2>&1; then
        local scratch
        scratch="$(mktemp -d)"
        (cd "$scratch" && apt-get download libvulkan1 >/dev/null && dpkg-deb -x libvulkan1_*.deb root)
        loader="$(find "$scratch/root" -name 'libvulkan.so.1*' -type f | head -n 1)"
    fi
    if [ -n "$loader" ]; then
        cp -L "$loader" "$bundle/libvulkan.so.1"
    else
        echo "warning: no Vulkan loader found to bundle; the GPU machine must have libvulkan1" >&2
    fi
}

# Warns when the machine has no NVIDIA Vulkan ICD manifest, so that a Vulkan run which picks
# another device (or none) is explained.
warn_without_nvidia_icd() {
    if ! compgen -G "/usr/share/vulkan/icd.d/nvidia*.json" >/dev/null &&
        ! compgen -G "/etc/vulkan/icd.d/nvidia*.json" >/dev/null; then
        echo "warning: no NVIDIA Vulkan ICD manifest found (nvidia_icd.json): the Vulkan backend may pick another device or none" >&2
    fi
}
