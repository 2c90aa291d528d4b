"""Pin the CPU numerics of numpy and OpenCV: the data and the flows are the same bytes on every x86-64 CPU with
AVX2 (docs/engineering/reproducibility.md says what is and is not pinned).

The libraries under the pipeline pick their code paths from the CPU they run on, and different code paths round
differently (vector width, fused multiply-add, reduction order). numpy and OpenCV have switches that cap or fix
their choice; they are read from the environment when the library loads (or first computes), so ``pin()`` sets them
before numpy and OpenCV are imported: ``videoda/__init__.py`` calls it, and every stage script and benchmark imports
``videoda`` first. This module imports only the standard library.

torch is not pinned. Its switches (ATen's capability, oneDNN's ISA, MKL's branch) made training no more
reproducible across CPU models (an AMD EPYC and an Intel Xeon trained to other bytes with them on: oneDNN's AVX2
kernels still follow the cache sizes, oneDNN issue #1443) and cost 12-17% of a training stage on the AVX-512 Xeon
(``benchmarks/pins.py``). Training is reproducible on one CPU model: same params and seed, same bytes.

A pin is a default (``os.environ.setdefault``): a variable the user set explicitly wins, except
``OPENBLAS_CORETYPE``, which some machines set for their own reasons and which is therefore overridden.
``VIDEODA_NUMERICS=native`` turns every pin off (each library then uses the fastest code for this CPU; results
are reproducible on this CPU model only). ``state()`` reports what is in effect.
"""

import os
import sys

MODE_VARIABLE = "VIDEODA_NUMERICS"      # "pinned" (default) | "native"

# OpenCV's AVX-512 feature groups and the CPU flags each needs (OpenCV's cv::CPU_AVX_512F, cv::CPU_AVX512_SKX)
OPENCV_AVX512_GROUPS = (
    ("AVX512F", {"avx512f"}),
    ("AVX512-SKX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}),
)


# variable -> (value, why); each is read by its library when it loads or first computes
PINS = {
    # numpy's runtime SIMD dispatch: the AVX2 (x86-64-v3) targets at most (names of numpy >= 2.4; see below)
    "NPY_DISABLE_CPU_FEATURES": ("X86_V4 AVX512_ICL AVX512_SPR", "numpy: no AVX-512 dispatch targets"),
    # OpenCV: its own dispatched AVX-512 kernels off (only those the CPU has: see opencv_avx512_features), and
    # Intel IPP off (IPP picks its code by CPU model)
    "OPENCV_CPU_DISABLE": (",".join(name for name, _ in OPENCV_AVX512_GROUPS),
                           "OpenCV: no AVX-512 dispatched kernels"),
    "OPENCV_IPP": ("disabled", "OpenCV: no Intel IPP (its code depends on the CPU)"),
    # OpenCV logs a warning that IPP is disabled each time it loads: errors only (decoding errors are raised)
    "OPENCV_LOG_LEVEL": ("ERROR", "OpenCV: no warning noise in the stage logs"),
}

# GNU OpenMP's waiting (torch's threads; speed only, no result changes). Its default, which a stage keeps, spins a
# while before an idle thread sleeps: between two small operators the other thread is still awake. Training alone is
# 5% faster than sleeping at once on a quiet 2-core VM, up to 2x where the VM's host takes CPU time
# (benchmarks/omp_wait.py). Processes started side by side on the same cores (the test suite's workers, dvc exp run
# -j N, several ranks on one node) spin on each other's cores instead: 2-4x slower; there ``share_cores`` makes idle
# threads sleep at once (PASSIVE).
SHARED_CORES = {"OMP_WAIT_POLICY": ("PASSIVE", "OpenMP: idle threads sleep at once (processes share the cores)")}

# overridden even when already set (a machine-wide setting, not a user's choice for this project); numpy's and
# OpenCV's bundled OpenBLAS read it. Haswell = AVX2 kernels; set only on CPUs with AVX2 (else it would crash).
FORCED = {
    "OPENBLAS_CORETYPE": ("Haswell", "numpy's and OpenCV's OpenBLAS: AVX2 kernels"),
}

LIBRARIES = ("numpy", "torch", "cv2")

# numpy before 2.4 names its AVX-512 dispatch targets one by one (it ignores names it does not know)
NUMPY_AVX512_BEFORE_2_4 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


def numpy_avx512_targets():
    """The value of NPY_DISABLE_CPU_FEATURES for the installed numpy (read from its metadata, not imported)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        major, minor = (int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return PINS["NPY_DISABLE_CPU_FEATURES"][0]
    return PINS["NPY_DISABLE_CPU_FEATURES"][0] if (major, minor) >= (2, 4) else NUMPY_AVX512_BEFORE_2_4


def opencv_avx512_features(flags):
    """The value of OPENCV_CPU_DISABLE for a CPU with these flags: the AVX-512 groups it has, or None. OpenCV
    prints a line to stderr for every named feature the CPU lacks, whatever OPENCV_LOG_LEVEL says, so naming
    them all would put two stray lines before every stage's output on an AVX2-only CPU (and there is nothing
    to disable there)."""
    names = [name for name, needs in OPENCV_AVX512_GROUPS if needs <= flags]
    return ",".join(names) or None


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def mode():
    return os.environ.get(MODE_VARIABLE, "pinned").strip().lower() or "pinned"


def pin():
    """Set the pins (unless ``VIDEODA_NUMERICS=native``). Returns the libraries that were already loaded,
    for which it comes too late (their own dispatch was fixed when they loaded)."""
    if mode() == "native":
        return []
    if mode() != "pinned":
        raise SystemExit(f"error: {MODE_VARIABLE} must be 'pinned' or 'native', not {os.environ[MODE_VARIABLE]!r}")
    late = [name for name in LIBRARIES if name in sys.modules]
    flags = cpu_flags()
    for name, (value, _) in PINS.items():
        if name == "NPY_DISABLE_CPU_FEATURES":
            value = numpy_avx512_targets()
        elif name == "OPENCV_CPU_DISABLE":
            value = opencv_avx512_features(flags)
            if value is None:
                continue
        os.environ.setdefault(name, value)
    if "avx2" in flags:
        for name, (value, _) in FORCED.items():
            os.environ[name] = value
    return late


def share_cores(env=os.environ):
    """Make idle OpenMP threads sleep at once (``SHARED_CORES``) in ``env`` (default: this process's environment,
    which the processes it starts inherit): for a process that runs others at the same time on the same cores.
    Read when torch loads, so call it before a process that loads torch starts (or before this one imports torch).
    A wait policy the user set explicitly wins."""
    for name, (value, _) in SHARED_CORES.items():
        env.setdefault(name, value)
    return env


def state():
    """The effective numerics of this process (imports numpy, torch and OpenCV, and runs one tiny convolution
    and one matrix product): {switch: value}. The tests assert it is pinned in every stage's process."""
    import ctypes

    import cv2
    import numpy as np
    import torch
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    x = torch.ones(2, 16, 32, 64)        # large enough for torch to run it on oneDNN (ONEDNN_VERBOSE=1 prints it)
    torch.nn.functional.conv2d(x, torch.ones(16, 16, 3, 3), padding=1)
    torch.ones(64, 64) @ torch.ones(64, 64)                               # initialises MKL
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    cbwr = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 10: "AVX2", 12: "AVX512"}
    branch = lib.mkl_serv_cbwr_get(1)          # MKL_CBWR_BRANCH; MKL is linked statically into libtorch_cpu
    return {
        "mode": mode(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "mkl_cbwr_branch": cbwr.get(branch, str(branch)),
        "numpy_dispatch_enabled": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)],
        "opencv_cpu_features": cv2.getCPUFeaturesLine(),
        "opencv_avx512_skx": bool(cv2.checkHardwareSupport(256)),     # cv::CPU_AVX512_SKX
        "opencv_ipp": bool(cv2.ipp.useIPP()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "numpy_version": np.__version__,
    }
