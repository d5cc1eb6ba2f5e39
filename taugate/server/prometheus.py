"""``GET /metrics``: the server's counters (:mod:`taugate.server.metrics`), the runtime's
resident sessions and the process's gauges in Prometheus' text exposition format 0.0.4.

Written here (no client library): a few dozen lines of text. Process gauges follow the names
of prometheus_client's process collector and come from ``/proc`` where there is one (Linux);
elsewhere only the CPU seconds are given. Format:
https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import os

from taugate import __version__
from taugate.server.messages import HttpResponse
from taugate.server.metrics import BUCKETS, ServerMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = ("input", "queue", "infer", "output")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(**labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(v) -> str:
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else ("+Inf" if v > 0 else "NaN")
    return str(v)


class _Page:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples) -> None:
        """One metric family: ``samples`` are (suffix, labels dict, value)."""
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{suffix}{_labels(**labels)} {_number(value)}"
                       for suffix, labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _histogram(mode: str, c) -> list:
    out, total = [], 0
    for bound, count in zip((*BUCKETS, float("inf")), c.buckets):
        total += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(("_bucket", {"mode": mode, "le": le}, total))
    return out + [("_sum", {"mode": mode}, c.duration_s), ("_count", {"mode": mode}, total)]


def process_samples() -> dict[str, float]:
    """Resident and virtual memory, CPU seconds, open and max fds, start time (``/proc``)."""
    times = os.times()
    out = {"process_cpu_seconds_total": times.user + times.system}
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
        out["process_virtual_memory_bytes"] = int(fields[20])
        out["process_resident_memory_bytes"] = int(fields[21]) * page
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        out["process_start_time_seconds"] = boot + int(fields[19]) / ticks
        out["process_open_fds"] = len(os.listdir("/proc/self/fd"))
        import resource

        out["process_max_fds"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError, IndexError, StopIteration, ImportError):
        pass  # not Linux: the CPU seconds only
    return out


_PROCESS_HELP = {
    "process_cpu_seconds_total": ("counter", "User and system CPU time spent, in seconds."),
    "process_virtual_memory_bytes": ("gauge", "Virtual memory size in bytes."),
    "process_resident_memory_bytes": ("gauge", "Resident memory size in bytes."),
    "process_start_time_seconds": ("gauge", "Start time of the process since the epoch, in "
                                            "seconds."),
    "process_open_fds": ("gauge", "Number of open file descriptors."),
    "process_max_fds": ("gauge", "Maximum number of open file descriptors."),
}


def exposition(metrics: ServerMetrics, runtime) -> str:
    """The ``/metrics`` page of a server with ``metrics`` serving ``runtime``."""
    page, modes = _Page(), metrics.modes()
    page.family("taugate_inference_requests_total", "counter",
                "Inference requests answered, per mode ('(unknown)': no such mode).",
                [("", {"mode": m}, c.requests) for m, c in modes.items()])
    page.family("taugate_inference_failures_total", "counter",
                "Inference requests that failed, per mode and cause.",
                [("", {"mode": m, "cause": k}, n) for m, c in modes.items()
                 for k, n in sorted(c.failures.items())])
    page.family("taugate_inference_rows_total", "counter",
                "Samples (batch rows) inferred by successful requests, per mode.",
                [("", {"mode": m}, c.rows) for m, c in modes.items()])
    page.family("taugate_inference_request_duration_seconds", "histogram",
                "Time from routing a request to its encoded answer, per mode.",
                [s for m, c in modes.items() for s in _histogram(m, c)])
    page.family("taugate_inference_phase_seconds_total", "counter",
                "Time of successful requests per phase: input (parse, validate), queue (waiting "
                "for a batch; 0 without batching), infer (the model run), output (encode the "
                "answer).",
                [("", {"mode": m, "phase": p}, getattr(c, f"{p}_ns") / 1e9)
                 for m, c in modes.items() for p in PHASES])
    page.family("taugate_batches_total", "counter",
                "Batches run by the dynamic batcher (taugate serve --batch-delay-ms).",
                [("", {}, metrics.batches)])
    page.family("taugate_batch_requests_total", "counter",
                "Requests coalesced into those batches.", [("", {}, metrics.batch_requests)])
    page.family("taugate_batch_rows_total", "counter",
                "Rows (samples) in those batches.", [("", {}, metrics.batch_rows)])
    page.family("taugate_http_responses_total", "counter", "HTTP answers per status code.",
                [("", {"code": code}, n) for code, n in sorted(metrics.responses().items())])
    down = runtime.unavailable()
    page.family("taugate_modes", "gauge", "Models served (the modes and dense), by state.",
                [("", {"state": "ready"}, len(runtime.modes) + 1 - len(down)),
                 ("", {"state": "unavailable"}, len(down))])
    resident = runtime.resident_bytes()
    page.family("taugate_sessions_resident", "gauge", "onnxruntime sessions loaded now.",
                [("", {}, len(resident))])
    page.family("taugate_session_bytes", "gauge",
                "Model bytes held per loaded session (file plus materialized weights).",
                [("", {"mode": m}, n) for m, n in resident.items()])
    page.family("taugate_build_info", "gauge", "taugate's version.",
                [("", {"version": __version__}, 1)])
    for name, value in process_samples().items():
        kind, help_ = _PROCESS_HELP[name]
        page.family(name, kind, help_, [("", {}, value)])
    return page.text()


def metrics_response(metrics: ServerMetrics, runtime) -> HttpResponse:
    return HttpResponse(200, exposition(metrics, runtime).encode("utf-8"),
                        {"content-type": CONTENT_TYPE})
