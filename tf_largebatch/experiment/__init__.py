"""The experiment core shared by both trainers; backend-neutral.

- `config`: a run's settings as one frozen `ExperimentConfig` (a dataclass per flag group).
- `flags`: every trainer flag and its validator; `from_flags()` → the config (the only reader
  of the flags); `trainer_flag_values()`.
- `cli`, `flagfiles`: the trainers' command line: `--help` by topic, flag files whose
  includes are found next to the including file, framework INFO lines off.
- `builders`: config → model (from the `MODELS` registry), schedule, optimizer, loss, metrics.
- `runner`: one run from a config, `run_experiment(config, backend)`: batch layout, model,
  position, callbacks, `fit`; a trainer is a `runner.Backend` with what differs.
- `position`: the run's position as one `RunPosition` (where it starts, the logs' step) and
  the one resume policy that finds it (`resume_point`); `errors`: `TrainError`.
- `preemption`: SIGTERM/SIGINT stop after the step in flight with a checkpoint of that step;
  mid-epoch checkpoints and their exact resume.
- `checkpointing`: per-epoch checkpoints with their run.json (TensorFlow's, or Keras
  .weights.h5 files for backends without TensorFlow).
- `run_log`: metrics.jsonl/steps.jsonl, metrics averaged over workers, the end-of-run summary.
- `trained_model`: the finished run's model.keras (and SavedModel export), written atomically.
- `runs`, `curve_check`, `callbacks`: reading run folders, the paper's early check, and the
  same check as a Keras callback (`EarlyCurveCheck`).

The batch layout itself (k, kn, steps per epoch, what an epoch leaves out) is
`tf_largebatch.data.layout`, which the input pipelines use too.
"""
