"""What machine this is: for the figures the benchmarks print, and for the tests whose reference bytes were
recorded on one CPU model."""

import platform


def cpu_model():
    """The CPU's model name from ``/proc/cpuinfo`` (e.g. ``AMD EPYC``), else the machine type (e.g. ``x86_64``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:          # not Linux
        pass
    return platform.machine()
