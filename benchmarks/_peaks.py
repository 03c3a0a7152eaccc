"""Peak resident memory of each step of ``plmsae associate`` (Linux), for the benchmarks."""

from __future__ import annotations


def track_step_peaks(peaks: dict[str, float]) -> None:
    """Wrap each timed step of the associator so that ``peaks[step]`` gets its peak RSS (MiB)."""
    from plmsae.analysis import associate

    def high_water_mib() -> float:
        with open("/proc/self/status") as fh:
            line = next(x for x in fh if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the high-water mark drops to the current RSS

    for step, _ in associate.TIMED_STEPS:
        method = getattr(associate.Associator, step)

        def wrapped(self, _method=method, _step=step):
            # model loading before the first step, writing between steps
            peaks["between steps"] = max(peaks.get("between steps", 0), round(high_water_mib()))
            reset()
            try:
                return _method(self)
            finally:
                peaks[_step] = round(high_water_mib())
                reset()

        setattr(associate.Associator, step, wrapped)
