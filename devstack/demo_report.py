"""What a demo run came out with: the tag events joined with the published photos, and the table.

One row a published photo (photo, true landmark, published landmark, confidence, correct?),
the accuracy, the throughput and latency, and the workers' own outcome counters.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack.processes import metric_values, scrape


def scrape_outcomes(port: int) -> dict[str, float]:
    """The worker's outcome counters, read from its /metrics endpoint."""
    totals: dict[str, float] = {}
    for labels, value in metric_values(scrape(port), "landmark_worker_images_total").items():
        match = re.search(r'outcome="([^"]*)"', labels)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return totals


def summarise(
    events: Sequence[dict[str, Any]],
    published: dict[str, str],
    elapsed_s: float,
    metrics: dict[int, dict[str, float]],
) -> dict[str, Any]:
    """Join the tag events with what was published: one row a photo, accuracy, throughput."""
    rows = []
    seen: set[str] = set()
    latencies = []
    per_worker: dict[str, int] = {}
    for event in events:
        if event.get("kind") == "dead_letter":
            image_id = event.get("original_key") or "?"
            seen.add(image_id)
            rows.append(
                {
                    "photo": _photo_name(published.get(image_id, image_id)),
                    "truth": _truth(published.get(image_id, "")),
                    "landmark": f"dead letter: {event['reason']}",
                    "confidence": None,
                    "correct": False,
                }
            )
            continue
        image_id = event["image_id"]
        if image_id in seen or image_id not in published:
            continue
        seen.add(image_id)
        truth = _truth(published[image_id])
        landmark = event.get("landmark")
        predicted = landmark["landmark_id"] if landmark else None
        rows.append(
            {
                "photo": _photo_name(published[image_id]),
                "truth": truth,
                "landmark": predicted or "(no landmark)",
                "confidence": event["confidence"],
                "correct": predicted == truth,
            }
        )
        if event.get("latency_ms") is not None:
            latencies.append(float(event["latency_ms"]))
        per_worker[event["worker_id"]] = per_worker.get(event["worker_id"], 0) + 1
    answered = [r for r in rows if r["confidence"] is not None and r["landmark"] != "(no landmark)"]
    correct = sum(bool(r["correct"]) for r in rows)
    return {
        "published": len(published),
        "tagged": len(seen),
        "missing": len(published) - len(seen),
        "accuracy": correct / len(published) if published else 0.0,
        "answered": len(answered),
        "precision_when_answered": (
            sum(bool(r["correct"]) for r in answered) / len(answered) if answered else 0.0
        ),
        "seconds_publish_to_last_tag": round(elapsed_s, 2),
        "photos_per_second": round(len(seen) / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "latency_ms_p95": (
            round(statistics.quantiles(latencies, n=20)[-1], 1) if len(latencies) >= 20 else None
        ),
        "tagged_per_worker": per_worker,
        "worker_metrics": {str(k): v for k, v in metrics.items()},
        "rows": sorted(rows, key=lambda r: (r["truth"], r["photo"])),
    }


def _truth(path: str) -> str:
    """The landmark of a published photo: the split folders are <part>/<landmark>/<photo>."""
    return Path(path).parent.name


def _photo_name(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def print_report(report: dict[str, Any], ports: Sequence[int], work: Path) -> None:
    rows = report["rows"]
    width = max([len(r["photo"]) for r in rows] + [5])
    lwidth = max([len(r["landmark"]) for r in rows] + [8])
    print(f"\n{'photo':<{width}}  {'landmark':<{lwidth}}  confidence  correct?")
    for r in rows:
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else "-"
        print(
            f"{r['photo']:<{width}}  {r['landmark']:<{lwidth}}  {conf:>10}  "
            f"{'yes' if r['correct'] else 'no'}"
        )
    print(
        f"\nphotos published {report['published']}, tagged {report['tagged']}, "
        f"missing {report['missing']}"
    )
    print(
        f"accuracy (right landmark / published): {report['accuracy']:.3f}; answered "
        f"{report['answered']}, precision when answered "
        f"{report['precision_when_answered']:.3f}"
    )
    print(
        f"throughput: {report['photos_per_second']} photos/s from first publish to last tag "
        f"({report['seconds_publish_to_last_tag']}s); latency p50 "
        f"{report['latency_ms_p50']} ms, p95 {report['latency_ms_p95']} ms"
    )
    print(f"tag events per worker: {report['tagged_per_worker']}")
    for port in ports:
        print(
            f"metrics: http://127.0.0.1:{port}/metrics  "
            f"(counters at the end: {report['worker_metrics'].get(str(port), {})})"
        )
    print(
        "Prometheus (make prometheus-start) scrapes ports 9108-9117 at http://127.0.0.1:19090; "
        "Grafana dashboard: deploy/grafana/"
    )
    print(f"results: {work / 'results.json'}; logs: {work / 'logs'}")
