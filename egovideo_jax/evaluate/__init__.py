"""Zero-shot evaluation: EK-100 MIR and CLS, EGTEA Gaze+, EgoMCQ.

`metrics` (numpy only) holds the metric functions for use in other pipelines; `registry`
holds the evaluators (`build_evaluators`, `Evaluator.run`); `python -m egovideo_jax.evaluate`
is the command line. Nothing is imported here, so `metrics` stays free of JAX.
"""
