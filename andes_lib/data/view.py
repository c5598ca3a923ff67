"""Looking at the data in a notebook: an HTML gallery and an ipywidgets browser (ANDESVL.md §3)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from PIL import Image


def image_tag(image: Image.Image, scale: int = 2) -> str:
    """An inline <img> (PNG, base64) shown `scale` times larger with crisp pixels."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img src="data:image/png;base64,{data}" width="{image.width * scale}" '
            f'style="image-rendering:pixelated;margin:2px;border:1px solid #ccc">')


def sample_html(row: Mapping[str, Any], scale: int = 2, scene: bool = False) -> str:
    """One sample: its images, then task, question and answer (and optionally the scene JSON)."""
    images = "".join(image_tag(i, scale) for i in row["images"])
    text = (f"<div style='font:12px sans-serif;max-width:{max(200, 140 * scale)}px'>"
            f"<b>{html.escape(row['domain'])}/{html.escape(row['task'])}</b><br>"
            f"Q: {html.escape(row['question'])}<br>A: <b>{html.escape(row['answer'])}</b></div>")
    detail = ""
    if scene:
        pretty = json.dumps(json.loads(row["scene"]) if isinstance(row["scene"], str) else row["scene"],
                            ensure_ascii=False, indent=1)
        detail = f"<pre style='font-size:10px;max-height:240px;overflow:auto'>{html.escape(pretty)}</pre>"
    return f"<div style='display:inline-block;vertical-align:top;margin:6px'>{images}{text}{detail}</div>"


def gallery_html(rows: Iterable[Mapping[str, Any]], scale: int = 2) -> str:
    """Samples side by side, wrapping."""
    return "<div>" + "".join(sample_html(r, scale) for r in rows) + "</div>"


def browser(dataset: Any, scale: int = 3) -> Any:
    """An ipywidgets browser: pick a domain, page through its samples, see images, Q/A and the scene."""
    import ipywidgets as widgets

    by_domain: dict[str, list[int]] = {}
    for i, domain in enumerate(dataset["domain"]):
        by_domain.setdefault(domain, []).append(i)
    pick = widgets.Dropdown(options=list(by_domain), description="domain")
    index = widgets.IntSlider(min=0, max=len(by_domain[pick.value]) - 1, description="sample")
    view = widgets.HTML()

    def show(*_: Any) -> None:
        index.max = len(by_domain[pick.value]) - 1
        view.value = sample_html(dataset[by_domain[pick.value][min(index.value, index.max)]], scale, scene=True)

    pick.observe(show, names="value")
    index.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([pick, index]), view])
