"""Small inline SVG charts for the HTML report: no JavaScript, no fonts or files fetched.

Each function returns one ``<svg>`` element as a string; every text in it is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

NEW = "#2f7ed8"  # the new data
REFERENCE = "#b0b7c3"  # the reference
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _clip(text: str, width: int = 22) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def paired_bars(
    labels: Sequence[str],
    new: Sequence[float],
    reference: Sequence[float],
    *,
    title: str,
    new_name: str = "new",
    reference_name: str = "reference",
    percent: bool = True,
) -> str:
    """Horizontal bars, two per label (new over reference)."""
    row, left, width = 22, 150, 300
    height = 34 + row * len(labels)
    top = max([*new, *reference, 1e-9])
    parts = [_header(width + left + 60, height, title), _legend(left, new_name, reference_name)]
    for i, label in enumerate(labels):
        y = 30 + i * row
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" {_FONT}>'
            f"<title>{escape(label)}</title>{escape(_clip(label))}</text>"
        )
        for j, (value, color) in enumerate(((new[i], NEW), (reference[i], REFERENCE))):
            w = max(0.5, width * value / top)
            shown = f"{value:.1%}" if percent else _fmt(value)
            parts.append(
                f'<rect x="{left}" y="{y + j * 9}" width="{w:.1f}" height="8" fill="{color}">'
                f"<title>{escape(label)}: {shown}</title></rect>"
            )
            if j == 0:
                parts.append(
                    f'<text x="{left + w + 4:.1f}" y="{y + 8}" {_FONT} fill="#444">{shown}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    edges: Sequence[float],
    new: Sequence[float],
    reference: Sequence[float],
    *,
    title: str,
    new_name: str = "new",
    reference_name: str = "reference",
) -> str:
    """Two overlaid histograms (shares per bin): reference as bars, new as an outline."""
    width, height, left, bottom = 420, 170, 40, 30
    plot_h = height - bottom - 30
    bins = len(new)
    top = max([*new, *reference, 1e-9])
    bw = width / max(bins, 1)
    parts = [_header(width + left + 20, height, title), _legend(left, new_name, reference_name)]
    base = height - bottom
    for i, value in enumerate(reference):
        h = plot_h * value / top
        parts.append(
            f'<rect x="{left + i * bw:.1f}" y="{base - h:.1f}" width="{bw - 1:.1f}" '
            f'height="{h:.1f}" fill="{REFERENCE}"><title>{escape(reference_name)} '
            f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}): {value:.1%}</title></rect>"
        )
    points = []
    for i, value in enumerate(new):
        y = base - plot_h * value / top
        points += [f"{left + i * bw:.1f},{y:.1f}", f"{left + (i + 1) * bw:.1f},{y:.1f}"]
    parts.append(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{NEW}" stroke-width="2">'
        f"<title>{escape(new_name)}</title></polyline>"
    )
    parts.append(
        f'<line x1="{left}" y1="{base}" x2="{left + width}" y2="{base}" stroke="#666"/>'
        f'<text x="{left}" y="{base + 14}" {_FONT}>{escape(_fmt(edges[0]))}</text>'
        f'<text x="{left + width}" y="{base + 14}" text-anchor="end" {_FONT}>'
        f"{escape(_fmt(edges[-1]))}</text>"
        f'<text x="{left - 4}" y="{base - plot_h + 4:.1f}" text-anchor="end" {_FONT}>'
        f"{top:.0%}</text></svg>"
    )
    return "".join(parts)


def bars(
    labels: Sequence[str], values: Sequence[float], *, title: str, unit: str = "", color: str = NEW
) -> str:
    """One horizontal bar per label (e.g. seconds per stage)."""
    row, left, width = 20, 130, 300
    height = 24 + row * len(labels)
    top = max([*values, 1e-9])
    parts = [_header(width + left + 80, height, title)]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 22 + i * row
        w = max(0.5, width * value / top)
        parts.append(
            f'<text x="{left - 6}" y="{y + 11}" text-anchor="end" {_FONT}>{escape(_clip(label))}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="14" fill="{color}">'
            f"<title>{escape(label)}: {_fmt(value)}{unit}</title></rect>"
            f'<text x="{left + w + 4:.1f}" y="{y + 11}" {_FONT} fill="#444">{_fmt(value)}{unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _header(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="4" y="12" {_FONT} font-weight="600">{escape(title)}</text>'
    )


def _legend(left: int, new_name: str, reference_name: str) -> str:
    return (
        f'<rect x="{left + 150}" y="3" width="10" height="10" fill="{NEW}"/>'
        f'<text x="{left + 164}" y="12" {_FONT}>{escape(new_name)}</text>'
        f'<rect x="{left + 230}" y="3" width="10" height="10" fill="{REFERENCE}"/>'
        f'<text x="{left + 244}" y="12" {_FONT}>{escape(reference_name)}</text>'
    )
