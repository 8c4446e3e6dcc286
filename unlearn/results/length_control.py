"""How much of each method's harmful-rate drop survives the length control.

Per method, from the table's rows (means over seeds; intervals as in the table):

    drop      = HR(original) − HR(method)
    by length = HR(original) − HR_length_matched(method)   the original's own answers, cut to the
                                                          method's word counts, re-judged
    surviving = harm_drop_beyond_length(method)           = HR_length_matched − HR, per prompt,
                                                          with its seeds × prompts interval
    share     = surviving / drop

A surviving drop whose interval excludes 0 is forgetting that the judge sees beyond shorter
answers; the rest of the drop, the same judge would also give the original model had it only
answered as briefly. Written as ``length_control.md`` and ``.csv`` beside the table.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from unlearn.results.tables import ORIGINAL, Table

KEYS = ("harmful_rate", "harmful_rate_length_matched", "harm_drop_beyond_length")
FIELDS = ["method", "seeds", "harmful_rate_original", "harmful_rate", "harmful_rate_length_matched", "drop",
          "explained_by_length", "surviving", "surviving_lo", "surviving_hi", "surviving_resolved", "share_surviving"]


def length_control_rows(table: Table) -> list[dict[str, float | str | int]]:
    """One dict per method row with the quantities of the module docstring (NaN when absent)."""
    if not any(r.method == ORIGINAL for r in table.rows):
        return []
    base = table.row(ORIGINAL).mean.get("harmful_rate", math.nan)
    out = []
    for row in table.rows:
        if row.method == ORIGINAL:
            continue
        hr, matched, surviving = (row.mean.get(k, math.nan) for k in KEYS)
        lo, hi = row.lo.get(KEYS[2], math.nan), row.hi.get(KEYS[2], math.nan)
        drop = base - hr
        out.append({"method": row.method, "seeds": row.n, "harmful_rate_original": base, "harmful_rate": hr,
                    "harmful_rate_length_matched": matched, "drop": drop, "explained_by_length": base - matched,
                    "surviving": surviving, "surviving_lo": lo, "surviving_hi": hi,
                    "surviving_resolved": int(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)),
                    "share_surviving": surviving / drop if math.isfinite(drop) and abs(drop) > 1e-12 else math.nan})
    return out


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def to_markdown(table: Table) -> str:
    rows = length_control_rows(table)
    out = io.StringIO()
    out.write(f"### {table.experiment}: the harmful-rate drop, controlled for answer length\n\n")
    if not rows or all(not math.isfinite(r["surviving"]) for r in rows):
        out.write("No run has the length-controlled metric (eval.metrics without `length_control`).\n")
        return out.getvalue()
    out.write("| Method | seeds | HR | drop from original | explained by length | surviving the control [95%] "
              "| share surviving |\n|---|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        mark = "*" if r["surviving_resolved"] else ""
        out.write(f"| {r['method']} | {r['seeds']} | {_f(r['harmful_rate'])} | {_f(r['drop'])} | "
                  f"{_f(r['explained_by_length'])} | {_f(r['surviving'])} [{_f(r['surviving_lo'])}, "
                  f"{_f(r['surviving_hi'])}]{mark} | {_f(r['share_surviving'], 2)} |\n")
    out.write(f"\nHR(original) = {_f(rows[0]['harmful_rate_original'])}. Explained by length: HR(original) − the "
              "original's answers cut to the method's word counts, prompt by prompt, and re-judged. Surviving: the "
              "mean per-prompt difference between that length-matched verdict and the method's own, with the "
              "seeds × prompts interval of the table; `*`: the interval excludes 0. Share: surviving / drop "
              "(drop = explained + surviving).\n")
    return out.getvalue()


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in length_control_rows(table):
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return out.getvalue()


def write_length_control(table: Table, out_dir: Path) -> dict[str, Path]:
    """``length_control.md`` and ``.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"length_md": out_dir / "length_control.md", "length_csv": out_dir / "length_control.csv"}
    files["length_md"].write_text(to_markdown(table), encoding="utf-8")
    files["length_csv"].write_text(to_csv(table), encoding="utf-8")
    return files


__all__ = ["length_control_rows", "to_csv", "to_markdown", "write_length_control"]
