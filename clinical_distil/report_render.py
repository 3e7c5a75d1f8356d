"""The run report's blocks rendered as markdown (report.md, figures linked) and as one HTML page (figures
inside it)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from clinical_distil.tables import markdown_table

Block = tuple[str, Any]  # ("h2" | "h3" | "p" | "table" | "image", content)


def render_markdown(title: str, blocks: list[Block], base: Path) -> str:
    parts = [f"# {title}"]
    for kind, content in blocks:
        if kind == "h2":
            parts.append(f"## {content}")
        elif kind == "h3":
            parts.append(f"### {content}")
        elif kind == "p":
            parts.append(content)
        elif kind == "table":
            parts.append(markdown_table(content))
        elif kind == "image":
            relative = Path(content).relative_to(base)
            parts.append(f"![{relative.stem.replace('_', ' ')}]({relative.as_posix()})")
    return "\n\n".join(parts) + "\n"


def render_html(title: str, blocks: list[Block], base: Path) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left}img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for kind, content in blocks:
        if kind in ("h2", "h3"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            parts.append(content.to_html(index=False, border=0, escape=True))
        elif kind == "image":
            # the figure inside the page (a data URI), so report.html can be sent as one file
            encoded = base64.b64encode(Path(content).read_bytes()).decode("ascii")
            parts.append(f"<img src='data:image/png;base64,{encoded}' alt='{html.escape(Path(content).stem)}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
