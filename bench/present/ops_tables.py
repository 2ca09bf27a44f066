"""The operator tables of a recorded trace (``bench trace``, a profile's traced cells): Markdown
tables of the top operators and kernels per measured step, and the JSON of all of them.

Rows are ``bench.measure.profiler.OpRow`` (name, calls, self/total host and self device
microseconds, kind "operator" or "kernel"). Pure formatting; no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

SHORT_NAME_CHARS = 72


def _strip_brackets(text: str, open_: str, close: str) -> str:
    out, depth = [], 0
    for ch in text:
        if ch == open_:
            depth += 1
        elif ch == close:
            depth = max(depth - 1, 0)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def short_name(name: str) -> str:
    """A readable name for a C++ kernel signature: no return type, template arguments or parameter
    list, namespaces dropped; the innermost functor kept where it says what the kernel does.

    ``void at::native::elementwise_kernel<128, 4, ...CUDAFunctor_add<c10::BFloat16>...>(int, ...)``
    becomes ``elementwise_kernel [CUDAFunctor_add]``. Operator names (``aten::mul``) stay as they are.
    """
    if "<" not in name and "(" not in name and len(name) <= SHORT_NAME_CHARS:
        return name
    text = name[5:] if name.startswith("void ") else name
    base = _strip_brackets(_strip_brackets(text, "<", ">"), "(", ")").strip()
    base = base.split("::")[-1].split(" ")[-1] or text[:SHORT_NAME_CHARS]
    functors = [f for f in re.findall(r"(\w*Functor\w*|\w+_functor\w*)", text) if f != base]
    if functors:
        base = f"{base} [{functors[-1]}]"
    if len(base) > SHORT_NAME_CHARS:
        base = base[: SHORT_NAME_CHARS - 1] + "…"
    return base


def ops_json(rows: Sequence[Any], measured_steps: int, step_seconds: float | None = None) -> dict[str, Any]:
    """Every operator and kernel with its full name, per measured step (ms) and share of the step."""

    def entry(r: Any) -> dict[str, Any]:
        per_step = 1000.0 * measured_steps
        device_ms = r.self_device_us / per_step
        return {
            "name": r.name,
            "short_name": short_name(r.name),
            "kind": r.kind,
            "calls_per_step": r.calls / measured_steps,
            "self_host_ms_per_step": r.self_host_us / per_step,
            "host_total_ms_per_step": r.host_total_us / per_step,
            "self_device_ms_per_step": device_ms,
            "device_share_of_step": (device_ms / 1000 / step_seconds) if step_seconds else None,
        }

    return {
        "measured_steps": measured_steps,
        "step_seconds": step_seconds,
        "operators": [entry(r) for r in rows if r.kind == "operator"],
        "kernels": [entry(r) for r in rows if r.kind == "kernel"],
    }


def ops_table_markdown(
    rows: Sequence[Any],
    measured_steps: int,
    device_kind: str,
    top: int = 15,
    step_seconds: float | None = None,
) -> str:
    """Markdown tables of the top operators and kernels per measured step.

    On CUDA: GPU time by operator (the kernels each operator launched itself), GPU time by kernel,
    then host time by operator. Operators and kernels are separate tables because each kernel
    microsecond belongs to both: side by side they would count it twice. Shares are of the measured
    step time when ``step_seconds`` is known (a table then sums to at most 100%), else of the
    table's total. Kernel names are shortened; ``ops_json`` keeps them in full.
    """
    on_cuda = device_kind == "cuda"
    operators = [r for r in rows if r.kind == "operator"]
    kernels = [r for r in rows if r.kind == "kernel"]
    step_us = step_seconds * 1e6 * measured_steps if step_seconds else None
    share_head = "% of step" if step_us else "share %"

    def table(
        title: str, subject: str, items: Sequence[Any], key: Callable[[Any], float], full: bool
    ) -> list[str]:
        total = step_us or sum(key(r) for r in items) or 1.0
        ranked = sorted((r for r in items if key(r) > 0), key=key, reverse=True)[:top]
        if full:
            head = f"| {subject} | calls/step | self ms/step | {share_head} | host total ms/step |"
            rule = "|---|---:|---:|---:|---:|"
            if on_cuda:
                head, rule = head + " self host ms/step | self device ms/step |", rule + "---:|---:|"
        else:
            head, rule = f"| {subject} | calls/step | ms/step | {share_head} |", "|---|---:|---:|---:|"
        out = [f"### {title}", "", head, rule]
        for r in ranked:
            cells = [
                f"`{short_name(r.name)}`",
                f"{r.calls / measured_steps:.1f}",
                f"{key(r) / 1000 / measured_steps:.3f}",
                f"{100 * key(r) / total:.1f}",
            ]
            if full:
                cells.append(f"{r.host_total_us / 1000 / measured_steps:.3f}")
                if on_cuda:
                    cells += [
                        f"{r.self_host_us / 1000 / measured_steps:.3f}",
                        f"{r.self_device_us / 1000 / measured_steps:.3f}",
                    ]
            out.append("| " + " | ".join(cells) + " |")
        if not ranked:
            out.append("| (none recorded) |" + " |" * (len(rule.split("|")) - 3))
        return [*out, ""]

    basis = f"of the measured step ({step_seconds * 1000:.1f} ms)" if step_seconds else "of the table's total"
    lines = [
        f"Top operators by self time, per measured step (mean over {measured_steps} steps); shares {basis}.",
        "",
    ]
    if on_cuda:
        lines += table(
            "Device: GPU time by operator", "operator", operators, lambda r: r.self_device_us, True
        )
        lines += table("Device: GPU time by kernel", "kernel", kernels, lambda r: r.self_device_us, False)
    lines += table(
        "Host: CPU time in the operator itself", "operator", operators, lambda r: r.self_host_us, True
    )
    return "\n".join(lines)
