"""The protocol command: its settings, and one end-to-end run on tiny generated photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configuration import load_settings
from trainer.cli.protocol import ProtocolCommandSettings, main, protocol_settings

WEIGHTS_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "weights"


def parse(argv: list[str]) -> ProtocolCommandSettings:
    return load_settings(ProtocolCommandSettings, argv, prog="protocol", description="")


def test_sources_come_comma_separated_from_the_flag_or_the_variable(monkeypatch):
    assert parse(["--sources", "india, berlin"]).sources == ("india", "berlin")
    monkeypatch.setenv("LANDMARK_PROTOCOL_SOURCES", "vietnam")
    assert parse([]).sources == ("vietnam",)
    monkeypatch.delenv("LANDMARK_PROTOCOL_SOURCES")
    assert parse([]).sources == ()


def test_training_flags_default_to_landmark_train_defaults():
    settings = parse([])
    assert (settings.backbone, settings.input_size, settings.mining) == (
        "mobilenet_v2",
        288,
        "random",
    )
    training = protocol_settings(settings).training
    assert (training.objective.loss, training.objective.distillation) == ("subcenter_arcface", 2.0)
    assert training.calibration_confidence == 0.9
    assert (settings.epochs, settings.lr, settings.margin, settings.p, settings.k) == (
        12,
        1e-4,
        0.1,
        8,
        4,
    )
    assert protocol_settings(settings).training.model.trainable_from == "block_15"
    assert protocol_settings(settings).training.model.embedding_dim is None
    assert (
        protocol_settings(parse(["--trainable-from", "none"])).training.model.trainable_from is None
    )


def write_photos(root, sources: dict[str, list[str]], per_landmark: int = 8) -> None:
    """Small JPEGs whose colour depends on the landmark, and the sources CSV next to them."""
    rng = np.random.default_rng(0)
    rows = ["landmark,source,photos"]
    landmarks = [(lm, source) for source, names in sources.items() for lm in names]
    for number, (landmark, source) in enumerate(landmarks):
        folder = root / "landmarks" / landmark
        folder.mkdir(parents=True)
        base = np.array([70 * number % 256, 40 + 30 * number, 255 - 40 * number], np.float32)
        for index in range(per_landmark):
            pixels = np.clip(base + rng.normal(0, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
        rows.append(f"{landmark},{source},{per_landmark}")
    (root / "sources.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_a_two_source_run_writes_pooled_and_per_fold_figures(tmp_path, capsys):
    """MobileNetV2 at 32 px, 1 epoch; ImageNet weights from the repository's cache (a random
    network's embeddings collapse to zero at this size)."""
    if not (WEIGHTS_CACHE / "mobilenet_v2-b03531047ffacf1e.npz").exists():
        pytest.skip(
            f"converted MobileNetV2 weights not in {WEIGHTS_CACHE} (run landmark-train once)"
        )
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights").symlink_to(WEIGHTS_CACHE)
    write_photos(tmp_path, {"north": ["n1", "n2", "n3"], "south": ["s1", "s2", "s3"]})
    out = tmp_path / "report" / "protocol"
    arguments = [
        *("--data", str(tmp_path / "landmarks"), "--out", str(out)),
        *("--cache-dir", str(tmp_path / "cache")),
        *("--input-size", "32", "--trainable-from", "block_16", "--epochs", "1"),
        *("--p", "2", "--k", "2", "--augment-views", "1"),
        *("--references", "1", "--queries", "2", "--unseen-queries", "2"),
        *("--whitening", "--whitening-shrinkage", "1.0", "--expansions"),
    ]
    assert main(arguments) == 0
    first_log = capsys.readouterr().err
    assert "read from" not in first_log
    report = json.loads(out.with_suffix(".json").read_text())
    assert [fold["held_out"] for fold in report["folds"]] == ["north", "south"]
    fold = report["folds"][0]
    assert fold["counts"]["gallery"] == 6 and fold["counts"]["unseen_queries"] == 6
    assert fold["counts"]["train"] == 3 * 4 and fold["counts"]["val"] == 3
    for network in ("pretrained", "pretrained_whitened", "fine_tuned", "fine_tuned_whitened"):
        for group in ("trained", "unseen"):
            figures = report["pooled"][network][group]
            assert figures["queries"] == 12
            assert 0.0 <= figures["hit_at_k"]["1"] <= figures["hit_at_k"]["5"] <= 1.0
            assert len(figures["margin"]["thresholds"]) >= 1
    for suffix in ("dba", "qe", "dba_qe"):
        assert report["pooled"][f"fine_tuned_whitened_{suffix}"]["unseen"]["queries"] == 12
    markdown = out.with_suffix(".md").read_text()
    assert "| fine-tuned · landmarks of an unseen source |" in markdown
    assert "| fine-tuned-whitened-dba-qe · landmarks of an unseen source |" in markdown

    # The same settings again: each fold's fine-tuned embeddings come from the store, and the
    # figures are the same; another training setting trains again.
    assert main(arguments) == 0
    assert capsys.readouterr().err.count("fine-tuned embeddings read from") == 2
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["pooled"] == report["pooled"]
    assert main([*arguments, "--margin", "0.2"]) == 0
    assert "read from" not in capsys.readouterr().err
