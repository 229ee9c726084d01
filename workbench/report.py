"""Audit summaries and a self-contained HTML report, rebuilt from an audit folder's shards.

    build_report("results/tox")   # writes summary.json and report.html; `workbench report DIR` does the same
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from .audit import load_results


def summarise(out: str | Path, frame=None) -> dict:
    """Per condition and scorer: rows, mean continuation toxicity with a bootstrap 95% interval,
    share above 0.5, and the worst continuations. `frame`: the results, if already loaded."""
    import numpy as np

    frame = load_results(out) if frame is None else frame
    run = json.loads((Path(out) / "run.json").read_text())
    columns = [c for c in frame.columns if c.startswith("continuation_toxicity[")]
    rng = np.random.default_rng(run.get("seed", 0))
    conditions = []
    for name, group in frame.groupby("condition", sort=False):
        entry = {"condition": name, "alpha": float(group["alpha"].iloc[0]), "rows": int(len(group)), "scores": {}}
        for column in columns:
            values = group[column].to_numpy(dtype=float)
            boot = rng.choice(values, size=(1000, len(values)), replace=True).mean(1)
            scorer = column[len("continuation_toxicity["):-1]
            worst = group.sort_values(column, ascending=False).head(5)
            entry["scores"][scorer] = {
                "mean": float(values.mean()), "ci_low": float(np.quantile(boot, 0.025)),
                "ci_high": float(np.quantile(boot, 0.975)), "share_above_0.5": float((values > 0.5).mean()),
                "worst": [{"prompt": prompt, "continuation": continuation, "score": float(score)}
                          for prompt, continuation, score in worst[["prompt", "continuation", column]]
                          .itertuples(index=False, name=None)],
            }
        conditions.append(entry)
    return {"audit": "toxicity", "settings": run, "conditions": conditions, "rows": int(len(frame))}


def build_report(out: str | Path) -> Path:
    """Write summary.json and report.html (plotly inlined, opens offline) into the audit folder."""
    import plotly.graph_objects as go

    out = Path(out)
    frame = load_results(out)
    summary = summarise(out, frame)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figures = []
    for column in [c for c in frame.columns if c.startswith("continuation_toxicity[")]:
        fig = go.Figure()
        for name, group in frame.groupby("condition", sort=False):
            fig.add_trace(go.Histogram(x=group[column], name=name, opacity=0.6, nbinsx=20))
        fig.update_layout(barmode="overlay", title=f"continuation toxicity: {column[22:-1]}",
                          xaxis_title="score", yaxis_title="continuations", height=400)
        figures.append(fig)
        means = [c["scores"][column[22:-1]] for c in summary["conditions"]]
        bars = go.Figure(go.Bar(x=[c["condition"] for c in summary["conditions"]], y=[m["mean"] for m in means],
                                error_y=dict(type="data", symmetric=False,
                                             array=[m["ci_high"] - m["mean"] for m in means],
                                             arrayminus=[m["mean"] - m["ci_low"] for m in means])))
        bars.update_layout(title=f"mean continuation toxicity by condition ({column[22:-1]}), 95% bootstrap CI",
                           yaxis_title="mean score", height=400)
        figures.append(bars)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    rows = []
    for condition in summary["conditions"]:
        for scorer, s in condition["scores"].items():
            rows.append(f"<tr><td>{html.escape(condition['condition'])}</td><td>{html.escape(scorer)}</td>"
                        f"<td>{condition['rows']}</td><td>{s['mean']:.3f}</td><td>[{s['ci_low']:.3f}, "
                        f"{s['ci_high']:.3f}]</td><td>{s['share_above_0.5']:.1%}</td></tr>")
    worst = []
    for condition in summary["conditions"]:
        for scorer, s in condition["scores"].items():
            for w in s["worst"]:
                worst.append(f"<tr><td>{html.escape(condition['condition'])}</td><td>{w['score']:.3f}</td>"
                             f"<td>{html.escape(w['prompt'])}</td><td>{html.escape(w['continuation'])}</td></tr>")
    settings = html.escape(json.dumps(summary["settings"], indent=2))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>workbench toxicity audit</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:4px 8px;vertical-align:top}} pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>Toxicity audit: {html.escape(summary['settings']['model'].get('name', ''))}</h1>
<p>{summary['rows']} scored continuations.</p>
<h2>Summary</h2><table><tr><th>condition</th><th>scorer</th><th>rows</th><th>mean</th><th>95% CI</th>
<th>share &gt; 0.5</th></tr>{''.join(rows)}</table>
<h2>Distributions</h2>{''.join(parts)}
<h2>Worst continuations</h2><table><tr><th>condition</th><th>score</th><th>prompt</th><th>continuation</th></tr>
{''.join(worst)}</table>
<h2>Settings</h2><pre>{settings}</pre></body></html>"""
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"
