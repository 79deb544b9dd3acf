"""LiteRT's GPU accelerator, always in a child process of its own (`runner.run_child`).

Why a child: the accelerator reaches the GPU through WebGPU/Dawn and the Vulkan loader, which loads
every installed Vulkan driver (ICD) into the calling process. Mesa's drivers (lavapipe, radv, anv)
link their own LLVM; in a process that also holds TensorFlow, whose libraries export LLVM's global
command-line options, the two copies register the same options and the exit handlers free them
twice: `free(): invalid pointer`, exit 134, after every successful `convert` on a machine with
mesa-vulkan-drivers (issue 24). The child imports no TensorFlow, so neither crash nor driver can
take the parent down, and whatever a driver prints stays in the child's captured stderr.
"""
