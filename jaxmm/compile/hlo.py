"""The collectives of a compiled (optimised, partitioned) HLO module, with byte counts.

:func:`collectives` reads ``compiled.as_text()`` and returns one
:class:`Collective` per collective the step executes:

* computations are walked from ``ENTRY`` through what each instruction calls
  (fusions, calls, conditionals, while loops); a while loop's body counts
  its trip count: XLA's ``known_trip_count``, else the ``i < N`` bound of its
  condition (a counter from 0, as ``lax.scan`` and ``fori_loop`` make it), else once;
* TPU's asynchronous collectives appear several times in the text: in the
  ``async-collective-start`` fusion that issues them, then again inside every
  fusion that overlaps them (``async_collective_fusion.*``) and in the
  ``async-collective-done`` fusion. Only the start counts; likewise ``*-done`` ops;
* a reduce-scatter that TPU lowers to an ``all-reduce-scatter`` fusion counts as
  a reduce-scatter of the all-reduce's (full) operand.

Bytes: ``array_bytes`` is the size of the full (unscattered) array the collective
works on. ``ici_bytes`` is what one chip sends over the interconnect in a ring
algorithm over ``n`` participants: all-gather, reduce-scatter and all-to-all
``(n-1)/n * array_bytes``, all-reduce twice that, collective-permute the array.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["COLLECTIVE_KINDS", "Collective", "collectives", "loops", "summarize"]

COLLECTIVE_KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all",
                    "collective-permute")

_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|branch_computations)=\{?([^},]+"
                     r"(?:,\s*%[\w.\-]+)*)\}?")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CONSTANT = re.compile(r"=\s*[su](?:32|64)\[\]\S*\s+constant\((\d+)\)")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective of the compiled step.

    kind: one of :data:`COLLECTIVE_KINDS`. name: the HLO instruction. group_size:
    participants per group (0 when unknown). array_bytes / ici_bytes: see the
    module docstring. count: how often it runs per step (loop trip counts).
    """

    kind: str
    name: str
    group_size: int
    array_bytes: int
    ici_bytes: float
    count: int = 1


def _arrays_bytes(text: str) -> list[int]:
    out = []
    for dtype, dims in _ARRAY.findall(text):
        n = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        out.append(int(math.ceil(n * _DTYPE_BYTES[dtype])))
    return out


def _group_size(attrs: str) -> int:
    m = re.search(r"replica_groups=\{\{([\d,\s]*)\}", attrs)
    if m:
        return len([x for x in m.group(1).split(",") if x.strip()])
    m = re.search(r"replica_groups=\[([\d,]+)\]<=", attrs)
    if m:
        return int(m.group(1).split(",")[-1])
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if m:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", m.group(2)))
    return 0


def _ici_bytes(kind: str, n: int, array_bytes: int) -> float:
    if kind == "collective-permute":
        return float(array_bytes)
    if n <= 1:
        return 0.0
    share = (n - 1) / n * array_bytes
    return 2 * share if kind == "all-reduce" else share


def _split_computations(text: str) -> tuple[dict[str, list[str]], str | None]:
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if line and not line[0].isspace():
            m = _COMPUTATION.match(line)
            if m:
                current = m.group(1)
                comps[current] = []
                if line.startswith("ENTRY"):
                    entry = current
                continue
            if line.startswith("}"):
                current = None
                continue
        if current is not None:
            comps[current].append(line)
    return comps, entry


def _callees(rest: str) -> list[tuple[str, str]]:
    out = []
    for key, names in _CALLED.findall(rest):
        for name in re.findall(r"%?([\w.\-]+)", names):
            out.append((key, name))
    return out


def _trip_count(rest: str, comps: dict[str, list[str]]) -> int:
    """Iterations of a ``while`` (its attributes ``rest``); 1 when unknown."""
    known = _TRIP.search(rest)
    if known:
        return int(known.group(1))
    cond = re.search(r"condition=%?([\w.\-]+)", rest)
    lines = comps.get(cond.group(1), []) if cond else []
    bounds = [int(m.group(1)) for line in lines for m in [_CONSTANT.search(line)] if m]
    root = next((line for line in lines if line.lstrip().startswith("ROOT")), "")
    if len(bounds) == 1 and "compare(" in root and "direction=LT" in root:
        return bounds[0]
    return 1


def loops(hlo_text: str) -> list[tuple[str, int]]:
    """``(instruction, trip count)`` of every ``while`` loop in the module."""
    comps, _ = _split_computations(hlo_text)
    out = []
    for lines in comps.values():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if m and m.group(3) == "while":
                out.append((m.group(1), _trip_count(m.group(4), comps)))
    return out


def collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled module's text (``compiled.as_text()``)."""
    comps, entry = _split_computations(hlo_text)
    if entry is None:
        return []
    found: list[Collective] = []

    def walk(name: str, times: int, depth: int = 0) -> None:
        if depth > 64 or name not in comps:
            return
        for line in comps[name]:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            inst, shape, op, rest = m.groups()
            base = op.removesuffix("-start")
            if base in COLLECTIVE_KINDS and not op.endswith("-done"):
                kind = "reduce-scatter" if (base == "all-reduce"
                                            and name.startswith("all-reduce-scatter")) else base
                arrays = _arrays_bytes(shape)
                if op.endswith("-start"):  # a tuple of operands, results and sync flags
                    size = max(arrays, default=0)
                else:
                    size = sum(arrays)
                n = _group_size(rest)
                if kind == "reduce-scatter" and base == "reduce-scatter":
                    size *= max(n, 1)  # the result is one shard; the array is n of them
                found.append(Collective(kind, inst, n, size, _ici_bytes(kind, n, size), times))
                continue
            if inst.startswith("async-collective-done"):
                continue  # the in-flight copy of a collective counted at its start
            trip = _trip_count(rest, comps) if op == "while" else 1
            for key, callee in _callees(rest):
                if callee.startswith("async_collective_fusion"):
                    continue
                mult = trip if key == "body" else 1
                walk(callee, times * mult, depth + 1)

    walk(entry, 1)
    return found


def summarize(found: list[Collective]) -> dict[str, dict[str, float]]:
    """Per kind: ``count`` (executions per step), ``array_bytes`` and ``ici_bytes`` (sums)."""
    out = {k: {"count": 0, "array_bytes": 0, "ici_bytes": 0.0} for k in COLLECTIVE_KINDS}
    for c in found:
        s = out[c.kind]
        s["count"] += c.count
        s["array_bytes"] += c.count * c.array_bytes
        s["ici_bytes"] += c.count * c.ici_bytes
    return out
