"""The source-held-out validation protocol (issue 8): folds, scoring, running, reporting.

- :mod:`trainer.protocol.folds` — pure: which photo plays which role when a source is held out.
- :mod:`trainer.protocol.scoring` — pure numpy: hit@k, the decision rules, calibration, GAP.
- :mod:`trainer.protocol.run` — fine-tuning a fold and embedding with both networks.
- :mod:`trainer.protocol.report` — pooled and per-fold figures as JSON and markdown.
"""
