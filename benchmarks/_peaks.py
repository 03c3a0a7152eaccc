"""Peak resident memory of each step of ``plmsae associate`` (Linux), for the benchmarks."""

from __future__ import annotations


def track_step_peaks(peaks: dict[str, float], resident: dict[str, float] | None = None) -> None:
    """Wrap each timed step of the associator so that ``peaks[step]`` gets its peak RSS (MiB)
    and ``resident[step]`` the RSS when it starts: what the steps before it still hold, once
    their freed pages went back to the system (``peaks["between steps"]`` is the high-water
    mark outside the steps, freed pages not yet returned included)."""
    from plmsae.analysis import associate

    def status_mib(field: str) -> float:
        with open("/proc/self/status") as fh:
            line = next(x for x in fh if x.startswith(field))
        return int(line.split()[1]) / 1024

    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the high-water mark drops to the current RSS

    for step, _ in associate.TIMED_STEPS:
        method = getattr(associate.Associator, step)

        def wrapped(self, _method=method, _step=step):
            # model loading before the first step, writing between steps
            hwm = round(status_mib("VmHWM:"))
            peaks["between steps"] = max(peaks.get("between steps", 0), hwm)
            if resident is not None:
                resident[_step] = round(status_mib("VmRSS:"))
            reset()
            try:
                return _method(self)
            finally:
                peaks[_step] = round(status_mib("VmHWM:"))
                reset()

        setattr(associate.Associator, step, wrapped)
