"""MGST training: mask-guided style transfer that purifies real eye images (reference/mgst.md).

config.py     MGSTTrainConfig (TOML / JSON + overrides)      features.py   the fixed random loss network Φ
losses.py     content / region style / adversarial / task    regressor.py  pupil regressor and segmenter
trainer.py    MGSTTrainer (checkpoints, resume, samples)      evaluate.py   the benchmark's metrics
cli.py        `lmt-train mgst ...` (add_parser / run)
"""
