"""The /stats chart: requests per style per day, as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import date, timedelta

from bots import messages
from db.stats import DailyCount


def requests_chart(counts: list[DailyCount], *, days: int, today: date) -> bytes:
    """Stacked bars, one per UTC day (empty days included), one colour per style.

    matplotlib is imported here, by the first /stats: it adds ~60 MiB to a process that may never draw a chart.
    """
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: render to memory, never to a window
    import matplotlib.pyplot as plt

    span = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    per_style: dict[str, dict[date, int]] = defaultdict(dict)
    for c in counts:
        per_style[c.style][c.day] = c.requests
    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        bottom = [0] * len(span)
        for style in sorted(per_style):
            heights = [per_style[style].get(d, 0) for d in span]
            axes.bar([d.isoformat()[5:] for d in span], heights, bottom=bottom, label=style)
            bottom = [b + h for b, h in zip(bottom, heights)]
        axes.set_title(messages.STATS_CHART_TITLE.format(days=days))
        axes.set_ylabel(messages.STATS_CHART_AXIS)
        axes.legend(loc="upper left", fontsize="small")
        axes.tick_params(axis="x", labelrotation=45, labelsize="small")
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(figure)
