"""The issue's experiment: random vs pretrained-only vs fine-tuned hit@k on a held-out split.

Runs ``landmark-train`` once (fine-tuned), evaluates the pretrained-only backbone (all stages
frozen, no projection) on the same split, adds the exact random-guessing baseline, and writes
``<out>/<name>.json`` and a Figure-8 style ``<out>/<name>.png``. Prints the hit@k tables.

    .venv/bin/python bench/bench_training.py --name mobilenet_v2-160 -- \\
        --backbone mobilenet_v2 --input-size 160 --epochs 15 --output runs/exp1

Arguments before ``--`` are the bench's own (``--name``, ``--out``, or their
``LANDMARK_BENCH_TRAINING_*`` variables); arguments after ``--`` go to ``landmark-train`` (so its
variables apply too).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from configuration import CommandSettings, load_settings, setting
from trainer.cli import train as cli_train
from trainer.evaluation.retrieval import random_hit_at_k
from trainer.model.embedding import EmbeddingModelConfig, build_embedding_model
from trainer.splits.manifest import MANIFEST_FILE, read_manifest
from trainer.training.activation_cache import ActivationCacheSettings
from trainer.training.run import TrainingSettings
from trainer.training.split_evaluation import EVALUATION_PAIRS, evaluate_split

KS = list(range(1, 51))
TABLE_KS = (1, 5, 10, 20, 50)


class BenchTrainingSettings(CommandSettings):
    """The bench's own settings; ``landmark-train``'s come after ``--``."""

    name: str = setting(
        env="LANDMARK_BENCH_TRAINING_NAME", help="name of the result files <out>/<name>.json, .png"
    )
    out: Path = setting(
        Path("docs/results"), env="LANDMARK_BENCH_TRAINING_OUT", help="folder of the results"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own_argv, train_argv = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    own = load_settings(
        BenchTrainingSettings,
        own_argv,
        prog="bench/bench_training.py",
        description=(__doc__ or "").split("\n\n")[0],
    )
    train_settings = cli_train.settings_from(train_argv)
    trainable_from = cli_train.trainable_from_of(train_settings)

    started = time.monotonic()
    report = cli_train.run(train_settings)
    train_seconds = time.monotonic() - started
    split = read_manifest(train_settings.output / MANIFEST_FILE)
    cache_dir = train_settings.cache_dir
    cache = ActivationCacheSettings(cache_dir=cache_dir / "activations", augmented_views=0)

    def curves(trainable_from: str | None, embedding_dim: int | None, parts=None) -> dict:
        config = EmbeddingModelConfig(
            train_settings.backbone, train_settings.input_size, embedding_dim, trainable_from
        )
        settings = TrainingSettings(model=config, output_dir=train_settings.output, cache=cache)
        if parts is None:
            parts = build_embedding_model(
                config, train_settings.weights, cache_dir=cache_dir / "weights"
            )
        return evaluate_split(parts, split.parts, settings, ks=KS)

    from trainer.model.embedding import EmbeddingParts
    from trainer.model.export import load_export

    pretrained = curves(None, None)
    model, manifest = load_export(train_settings.output / "model")
    frozen, trainable = model.layers[0], model.layers[1]
    fine_tuned = curves(
        trainable_from,
        train_settings.embedding_dim,
        EmbeddingParts(frozen=frozen, trainable=trainable),
    )
    results: dict = {
        "settings": train_settings.model_dump(mode="json") | {"trainable_from": trainable_from},
        "training": report["training"],
        "model_version": manifest.model_version,
        "wall_seconds_training_and_eval": round(train_seconds, 1),
        "settings_eval": {},
    }
    for name, (ref_part, query_part) in EVALUATION_PAIRS.items():
        if name not in pretrained:
            continue
        refs = [p.landmark_id for p in split.parts[ref_part]]
        queries = [p.landmark_id for p in split.parts[query_part]]
        results[name] = {
            "references": pretrained[name]["references"],
            "queries": pretrained[name]["queries"],
            "landmarks": pretrained[name]["landmarks"],
            "random": {int(k): v for k, v in random_hit_at_k(refs, queries, KS).items()},
            "pretrained": pretrained[name]["hit_at_k"],
            "fine_tuned": fine_tuned[name]["hit_at_k"],
        }
    out = own.out
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{own.name}.json").write_text(json.dumps(results, indent=1, default=str))
    _plot(results, out / f"{own.name}.png", own.name)
    for name in EVALUATION_PAIRS:
        if name not in results:
            continue
        r = results[name]
        print(
            f"\n{name}: {r['landmarks']} landmarks, {r['references']} references, {r['queries']} queries"
        )
        print("model        " + " ".join(f"hit@{k:<3d}" for k in TABLE_KS))
        for model_name in ("random", "pretrained", "fine_tuned"):
            print(f"{model_name:12s} " + " ".join(f"{r[model_name][k]:.3f}  " for k in TABLE_KS))
    return 0


def _plot(results: dict, path: Path, title: str) -> None:
    names = [n for n in EVALUATION_PAIRS if n in results]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        r = results[name]
        for model_name, style in (("random", ":"), ("pretrained", "--"), ("fine_tuned", "-")):
            ax.plot(KS, [r[model_name][k] for k in KS], style, label=model_name.replace("_", "-"))
        ax.set_title(f"{name} landmarks: {r['queries']} queries, {r['references']} references")
        ax.set_xlabel("k")
        ax.set_ylabel("hit@k")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
