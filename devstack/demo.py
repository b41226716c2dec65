"""The demo (``make demo``, ``python -m devstack.demo``): the whole product on embedded defaults, end to end, on one machine.

Set-up, the local Kafka, a split of a folder of landmark photos, a fine-tuned model (a few minutes
on 2 CPU cores), the reference gallery in a Milvus Lite server, two workers in one consumer group,
the held-out photos published to Kafka, the tag events followed back, and a table of what came
out (photo, landmark, confidence, correct?) with the accuracy, the throughput and where the
metrics are. Everything it started is stopped at the end, also on failure or Ctrl-C.

The demo drives the product's own console commands as subprocesses (``landmark-train``,
``landmark-load-gallery``, ``landmark-worker``, ``landmark-publish``, ``landmark-follow``) and
the scripts in ``deploy/local/``: it imports nothing from ``trainer``, and shows exactly what a
user would run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack import sample_data
from devstack.commands import BIN, split_command, train_command
from devstack.demo_report import print_report, scrape_outcomes, summarise
from devstack.demo_settings import DemoSettings, settings_from
from devstack.processes import create_topics, ensure_local_service, stop_all, wait_until_ready
from devstack.session import Session


class Demo:
    """One run: the steps in order; its session undoes what they started."""

    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.work = settings.work_dir
        self.session = Session(settings.work_dir)
        self.milvus_uri = f"http://127.0.0.1:{settings.milvus_port}"
        self.topics = {
            "images": f"demo-{self.run_id}.images",
            "tags": f"demo-{self.run_id}.landmark-tags",
            "dlq": f"demo-{self.run_id}.images.dlq",
        }

    def ensure_data(self) -> Path:
        t = self.session.step("Landmark photos")
        if sample_data.looks_like_landmark_folders(self.s.data):
            print(f"  using {self.s.data}")
            return self.s.data
        print(f"  {self.s.data} has no landmark folders; fetching the sample {self.s.sample_url}")
        try:
            root = sample_data.fetch_sample(
                self.s.sample_url,
                self.work / "sample",
                labels_url=self.s.sample_labels_url or None,
            )
        except sample_data.SampleUnavailable as error:
            raise SystemExit(f"\nerror: {error}\n\n{sample_data.HOW_TO_PROVIDE_PHOTOS}") from None
        print(f"  sample ready in {root} ({time.monotonic() - t:.0f}s)")
        return root

    def settled_counters(self, outputs: int, wait_s: float = 5.0) -> dict[int, dict[str, float]]:
        """The workers' outcome counters once they account for every output seen.

        A worker counts a batch when it commits it, a moment after its outputs are published
        (the pipelined loop commits batch n while it works on batch n+1, or after its next poll
        when idle), so the counters may trail the tag events by the last batch for a moment.
        """
        deadline = time.monotonic() + wait_s
        while True:
            metrics = {port: scrape_outcomes(port) for port in self.s.metrics_ports}
            counted = sum(sum(m.values()) for m in metrics.values())
            if counted >= outputs or time.monotonic() > deadline:
                return metrics
            time.sleep(0.2)

    def start_kafka(self) -> None:
        self.session.step("Kafka")
        host, _, port = self.s.bootstrap_servers.rpartition(":")
        if host not in ("127.0.0.1", "localhost"):
            print(f"  using the broker at {self.s.bootstrap_servers}")
            return
        print(f"  $ deploy/local/kafka.sh start  (unless a broker answers on port {port})")
        stop = ensure_local_service("kafka", {"KAFKA_PORT": port})
        if stop is None:
            print(f"  a broker already answers on {self.s.bootstrap_servers}; using it")
        else:
            self.session.undo_at_end("stop Kafka", stop)

    def split_and_train(self, data: Path) -> Path:
        t = self.session.step(
            "Split and fine-tune (MobileNetV2, ImageNet weights, landmark-train's default loss)"
        )
        self.session.run([sys.executable, "-m", "trainer.cli.weights", "fetch"])
        split = self.work / "split"
        self.session.run(
            split_command(
                data, split, query=self.s.query, references=self.s.references, cap=self.s.cap
            ),
            log="split.log",
        )
        self.session.run(
            train_command(
                split,
                data,
                self.work / "train",
                input_size=self.s.input_size,
                epochs=self.s.epochs,
                augment_views=self.s.augment_views,
                trainable_from=self.s.trainable_from,
            )
        )
        print(f"  trained and exported in {time.monotonic() - t:.0f}s")
        return self.work / "train" / "model"

    def load_gallery(self, model_dir: Path) -> None:
        t = self.session.step("Reference gallery into Milvus Lite (gRPC server)")
        env = {"MILVUS_PORT": str(self.s.milvus_port), "MILVUS_DATA_DIR": str(self.work / "milvus")}
        print("  $ deploy/local/milvus.sh start")
        stop = ensure_local_service("milvus", env)
        if stop is not None:
            self.session.undo_at_end("stop Milvus", stop)
        self.session.run(
            [
                BIN / "landmark-load-gallery",
                "--model-dir",
                model_dir,
                "--data",
                self.work / "split" / "reference",
                "--milvus-uri",
                self.milvus_uri,
                "--gallery-version",
                f"demo{self.run_id}",
            ]
        )
        print(f"  gallery loaded in {time.monotonic() - t:.0f}s")

    def create_topics(self, partitions: int = 4) -> None:
        """The run's own topics, with several partitions so that the two workers share them."""
        names = list(self.topics.values())
        create_topics(self.s.kafka_client_options(), names, partitions, client_id="landmark-demo")
        print(f"  topics {', '.join(self.topics.values())} ({partitions} partitions each)")

    def start_workers(self, model_dir: Path) -> list[subprocess.Popen[bytes]]:
        self.session.step("Two workers in one consumer group")
        self.create_topics()
        workers: list[subprocess.Popen[bytes]] = []
        for n, port in enumerate(self.s.metrics_ports, 1):
            log = f"worker-{n}.log"
            cmd = [
                str(BIN / "landmark-worker"),
                "--model-dir",
                str(model_dir),
                "--milvus-uri",
                self.milvus_uri,
                "--bootstrap-servers",
                self.s.bootstrap_servers,
                "--images-topic",
                self.topics["images"],
                "--tags-topic",
                self.topics["tags"],
                "--dead-letter-topic",
                self.topics["dlq"],
                "--group-id",
                f"demo-{self.run_id}",
                "--worker-id",
                f"demo-worker-{n}",
                "--http-port",
                str(port),
                "--auto-offset-reset",
                "earliest",
                "--log-format",
                "json",
            ]
            print(
                f"  $ landmark-worker ... --worker-id demo-worker-{n} --http-port {port}"
                f"  (log: {self.session.logs / log})"
            )
            workers.append(self.session.start(cmd, log))
        self.session.undo_at_end("stop workers", lambda: stop_all(workers))
        for port, proc in zip(self.s.metrics_ports, workers, strict=True):
            try:
                wait_until_ready(port, proc, timeout_s=300)
            except RuntimeError as error:
                raise RuntimeError(f"{error}; see {self.work / 'logs'}") from None
            print(f"  ready: http://127.0.0.1:{port}/metrics")
        return workers

    def publish_and_follow(self) -> tuple[list[dict[str, Any]], dict[str, str], float]:
        self.session.step("Publish the held-out photos, follow the landmark-tag events")
        id_map = self.work / "published.jsonl"
        started = time.monotonic()
        self.session.run(
            [
                BIN / "landmark-publish",
                self.work / "split" / "query",
                "--bootstrap-servers",
                self.s.bootstrap_servers,
                "--topic",
                self.topics["images"],
                "--id-map",
                id_map,
                "--limit",
                str(self.s.max_photos),
                "--source",
                "landmark-demo",
            ]
        )
        published = {}
        for line in id_map.read_text().splitlines():
            item = json.loads(line)
            published[item["image_id"]] = item["path"]
        events_file = self.work / "tag-events.jsonl"
        self.session.run_into(
            [
                BIN / "landmark-follow",
                "--bootstrap-servers",
                self.s.bootstrap_servers,
                "--topic",
                self.topics["tags"],
                "--dead-letter-topic",
                self.topics["dlq"],
                "--dead-letters",
                "--from-beginning",
                "--json",
                "--max-events",
                str(len(published)),
                "--timeout",
                str(self.s.timeout_s),
            ],
            events_file,
        )
        elapsed = time.monotonic() - started
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line]
        return events, published, elapsed

    def main(self) -> int:
        self.session.open()
        started = time.monotonic()
        try:
            data = self.ensure_data()
            self.start_kafka()
            model_dir = self.split_and_train(data)
            self.load_gallery(model_dir)
            self.start_workers(model_dir)
            events, published, elapsed = self.publish_and_follow()
            metrics = self.settled_counters(len(events))
            report = summarise(events, published, elapsed, metrics)
            (self.work / "results.json").write_text(json.dumps(report, indent=2))
            print_report(report, self.s.metrics_ports, self.work)
            print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
            return 0 if report["missing"] == 0 else 1
        finally:
            print("\nstopping what the demo started", flush=True)
            self.session.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(argv)
    demo = Demo(settings)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return demo.main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a clear one-line failure; the clean-up already ran
        print(f"\ndemo failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
