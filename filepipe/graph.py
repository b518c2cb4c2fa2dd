"""Render a pipeline's tables and steps as a graph (text, Mermaid or Graphviz dot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .steps.base import ComputeStep


def render(steps: Sequence[ComputeStep], fmt: str = "text") -> str:
    """The DAG of `steps` in `fmt`: "text", "mermaid" or "dot"."""
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for s in steps:
            lines.append(f"  step_{_id(s.name)}{{{{{s.name}}}}}")
            lines += [f"  t_{_id(t.name)}[({t.name})] --> step_{_id(s.name)}" for t in s.inputs]
            lines += [f"  step_{_id(s.name)} --> t_{_id(t.name)}[({t.name})]" for t in s.outputs]
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph filepipe {", "  rankdir=LR;", "  node [shape=box];"]
        for s in steps:
            lines.append(f'  "step:{s.name}" [label="{s.name}", shape=ellipse];')
            lines += [f'  "{t.name}" -> "step:{s.name}";' for t in s.inputs]
            lines += [f'  "step:{s.name}" -> "{t.name}";' for t in s.outputs]
        lines.append("}")
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"unknown graph format {fmt!r}: use text, mermaid or dot")
    lines = []
    for s in steps:
        ins = ", ".join(t.name for t in s.inputs) or "(generator)"
        outs = ", ".join(t.name for t in s.outputs)
        lines.append(f"{ins} --[{s.name}]--> {outs}")
    return "\n".join(lines)


def _id(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
