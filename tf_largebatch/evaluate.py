"""Evaluates a trained model on a validation split, with the trainer's exact sharded evaluation:

    python -m tf_largebatch.evaluate --model=runs/demo/model.keras
    horovodrun -np 2 python -m tf_largebatch.evaluate --model=RUN/model.keras \\
        --dataset=folder --data_dir=/data/cifar10 --json=RUN/evaluation.json

Top-1 and top-5 error, the cross-entropy, and the top-1 error of each class, every validation
image counted exactly once on any number of processes. It is the trainer's own code path:
`data.eval_dataset` (each worker's slice of each global batch, the padding up to a whole
global batch weighted 0), `model.evaluate` with `builders.build_metrics()` as weighted
metrics, and `run_log.GlobalMetrics` for the average over workers (weighted by each worker's
count of real images), so the numbers equal the run's last validation in its metrics.jsonl.

Defaults come from the run's flags.json when the model sits in its run folder (a finished
run's `<log_dir>/model.keras`): the data set, the per-process batch, the preprocessing, and
the class names it must match; --data_dir alone reads the run's kind of data (folder, tfrecord,
tfds) from another folder. Elsewhere, pass --dataset (and --data_dir); the preprocessing
follows the model's name (cifar_resnet*: CIFAR's; resnet*, resnet*_v1_5, resnet*_v1:
ImageNet's) or --preprocessing. The run's last validation is shown beside the results only
when they are of its own validation set (data set, folder and preprocessing).
"""

import json
import os
import re
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS

SHOWN_CLASSES = 20  # more classes than this: the summary shows the worst ones only
GENERATED = ("synthetic", "shapes")  # data sets made from the example's index: no data_dir


class EvaluateError(ValueError):
    """A problem the user must fix, printed as one `error:` line."""


def run_folder_facts(model_path: str) -> dict:
    """flags.json of the run whose folder holds `model_path` ({} elsewhere), and the last
    validation record of its metrics.jsonl under "last_validation" (when there is one)."""
    from tf_largebatch.experiment import run_log

    folder = os.path.dirname(os.path.abspath(model_path))
    try:
        with open(os.path.join(folder, "flags.json")) as f:
            facts = json.load(f)
    except (OSError, ValueError):
        return {}
    path = os.path.join(folder, "metrics.jsonl")
    try:
        records = [r for r in run_log.read_jsonl(path) if r.get("val_top1_error") is not None]
    except (OSError, ValueError):
        records = []
    if records:
        facts["last_validation"] = records[-1]
    return facts


def choose_data(model_path: str, run: dict, dataset: str | None, data_dir: str | None,
                download: bool = False) -> tuple[str, str | None]:
    """(dataset, data_dir) to evaluate: the flags given, the run's (`run`: its flags.json) for
    the others; --data_dir alone holds data of the run's kind. Raises EvaluateError for what
    cannot be honoured."""
    if dataset is None and "dataset" not in run:
        raise EvaluateError(f"--model={model_path} is not in a run folder (no flags.json beside "
                            "it): pass --dataset (and --data_dir).")
    kind = dataset or run["dataset"]
    if not (kind in GENERATED or kind in ("folder", "tfrecord") or kind.startswith("tfds:")):
        raise EvaluateError(f"--dataset={kind}: use synthetic, shapes, folder, tfrecord or "
                            "tfds:<name>.")
    if kind in GENERATED:
        if data_dir:
            whose = "" if dataset else "the run's "
            raise EvaluateError(f"--data_dir={data_dir}: {whose}--dataset={kind} is generated and "
                                "reads no data_dir. Leave --data_dir out, or pass the --dataset "
                                "it holds (folder, tfrecord or tfds:<name>).")
        return kind, None
    flag = "--data_dir"
    if dataset is None and data_dir is None:
        flag, data_dir = "the run's data_dir", run.get("data_dir")
    if kind in ("folder", "tfrecord") and not data_dir:
        raise EvaluateError(f"--dataset={kind} needs --data_dir (the folder that holds it).")
    if data_dir and not os.path.isdir(data_dir) and not (kind.startswith("tfds:") and download):
        raise EvaluateError(f"{flag}={data_dir}: no such folder. Pass --data_dir=<the folder that "
                            f"holds the {kind} data to evaluate>"
                            f"{' or --download' if kind.startswith('tfds:') else ''}.")
    return kind, data_dir


def preprocessing_of(network: str) -> str | None:
    """The trainer's preprocessing for `network`, a --model name or the Keras name of a network
    that tf_largebatch.models builds (cifar_resnet20, resnet50_v1_5, resnet18_v1): "cifar" or
    "imagenet"; None for other networks."""
    from tf_largebatch.experiment.builders import MODELS

    if re.fullmatch(r"cifar_resnet\d+", network):
        return "cifar"
    resnet = re.fullmatch(r"(resnet\d+)(_v1|_v1_5)?", network)
    return "imagenet" if resnet and resnet[1] in MODELS else None


def is_runs_own_data(run: dict, dataset: str, data_dir: str | None, preprocessing: str) -> bool:
    """Whether the evaluation reads what the run validated on: its data set, from its folder
    (generated sets have none), preprocessed as the trainer did."""
    def where(path):
        return os.path.realpath(path) if path else None

    return (dataset == run.get("dataset")
            and preprocessing == preprocessing_of(run.get("model", ""))
            and (dataset in GENERATED or where(data_dir) == where(run.get("data_dir"))))


def class_counts_metric(num_classes: int):
    """A weighted Keras metric that counts, for each class c, its images n_c = Σ w·[y = c]
    and its top-1 errors e_c = Σ w·[y = c]·[argmax ≠ y] (w: the evaluation's sample weight,
    0 for padding); `result()` is Σ e_c / Σ n_c, the top-1 error. Why our own: Keras has no
    per-class error metric that takes sample weights."""
    import keras
    from keras import ops

    class ClassCounts(keras.metrics.Metric):
        def __init__(self, name="class_counts", **kwargs):
            super().__init__(name=name, **kwargs)
            self.images = self.add_variable((num_classes,), "zeros", name="images")
            self.errors = self.add_variable((num_classes,), "zeros", name="errors")

        def update_state(self, y_true, y_pred, sample_weight=None):
            labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
            weight = ops.ones_like(labels, self.dtype) if sample_weight is None else (
                ops.cast(ops.reshape(sample_weight, (-1,)), self.dtype))
            wrong = ops.cast(ops.not_equal(ops.cast(ops.argmax(y_pred, -1), "int32"), labels),
                             self.dtype)
            per_class = ops.one_hot(labels, num_classes, dtype=self.dtype) * weight[:, None]
            self.images.assign_add(ops.sum(per_class, 0))
            self.errors.assign_add(ops.sum(per_class * wrong[:, None], 0))

        def result(self):
            return ops.sum(self.errors) / ops.maximum(ops.sum(self.images), 1.0)

        def reset_state(self):
            self.images.assign(ops.zeros_like(self.images))
            self.errors.assign(ops.zeros_like(self.errors))

    return ClassCounts()


def load_model(path: str):
    """The Keras model in `path` (without its optimizer: evaluation does not train)."""
    import keras

    from tf_largebatch import layers, losses, optimizers, schedules  # noqa: F401  (registers)

    fix = ("Pass a whole .keras file written by model.save, such as the model.keras in the "
           "folder of a finished tf_largebatch.train run (copy it again if it was cut short).")
    if not os.path.isfile(path):
        raise EvaluateError(f"--model={path}: no such file. {fix}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):  # Keras says "File not found"
        raise EvaluateError(f"--model={path} is not a readable Keras model file: not a whole "
                            f"zip archive, so truncated or of another format. {fix}")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvaluateError(f"--model={path} is not a readable Keras model file "
                            f"({reason[:200]}). {fix}") from None
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    out = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    if not (shape and len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3
            and out and len(out) == 2):
        raise EvaluateError(f"--model={path} takes {model.input_shape} and returns "
                            f"{model.output_shape}, not square RGB images → class logits. "
                            "Pass an image classifier such as the trainer's model.keras.")
    return model


def evaluate(model_path: str, dataset: str | None = None, data_dir: str | None = None,
             per_worker_batch: int | None = None, preprocessing: str | None = None,
             download: bool = False) -> dict:
    """Evaluates the model in `model_path` on the validation split of `dataset` on every
    Horovod worker (one process without horovodrun); returns the same dict on each.

    Returns:
      {"val_loss", "val_top1_error", "val_top5_error"} as in the run's metrics.jsonl, and
      "images" (counted by the evaluation), "processes", "per_class": one
      {"label", "name", "images", "top1_error"} per class, "model", "dataset", "data_dir",
      "preprocessing", and "last_validation": the run's, when this is its validation set.
    """
    import keras

    from tf_largebatch import data, distributed
    from tf_largebatch.data.undecodable import naming_undecodable_images
    from tf_largebatch.experiment import builders, run_log

    if not distributed.hvd.is_initialized():
        distributed.init()
    size, rank = distributed.hvd.size(), distributed.hvd.rank()
    model = load_model(model_path)
    image_size, num_classes = model.input_shape[1], model.output_shape[-1]
    run = run_folder_facts(model_path)
    dataset, data_dir = choose_data(model_path, run, dataset, data_dir, download)
    if per_worker_batch is None:
        per_worker_batch = (run["per_worker_batch"] * run.get("simulate_workers", 1)
                            if "per_worker_batch" in run else 128)
    if preprocessing is None:
        name = run.get("model", model.name)
        preprocessing = preprocessing_of(name)
        if preprocessing is None:
            raise EvaluateError(f"--model={model_path}: its network {name!r} is none of the "
                                "package's, so its preprocessing is unknown: pass "
                                "--preprocessing=cifar or --preprocessing=imagenet.")

    generated = dataset in GENERATED
    source = data.get_source(dataset, data_dir, "eval", image_size=image_size,
                             num_classes=num_classes if generated else None, download=download)
    if source.num_classes is not None and source.num_classes != num_classes:
        raise EvaluateError(f"the model predicts {num_classes} classes but {source.name} has "
                            f"{source.num_classes}: evaluate it on a data set of the classes "
                            "it was trained on (--dataset, --data_dir).")
    trained_names = run.get("class_names")
    if trained_names and source.class_names and list(source.class_names) != trained_names:
        differ = next(i for i, (a, b) in enumerate(zip(source.class_names, trained_names,
                                                       strict=False)) if a != b)
        raise EvaluateError(
            f"{source.name} names class {differ} {source.class_names[differ]!r} but the run "
            f"trained it as {trained_names[differ]!r}: evaluate on data with the run's classes "
            "in the run's order (its flags.json lists them).")

    dataset_eval, info = data.eval_dataset(
        source, image_size=image_size, per_worker_batch=per_worker_batch,
        num_workers=size, worker_index=rank, preprocessing=preprocessing)
    counts = class_counts_metric(num_classes)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[*builders.build_metrics(), counts], jit_compile=False)
    with naming_undecodable_images(dataset, data_dir):
        logs = model.evaluate(dataset_eval, steps=info.steps, verbose=0, return_dict=True)
    # The validation half of the trainer's epoch logs, averaged and renamed as it does.
    logs = {"val_" + key: value for key, value in logs.items() if key != counts.name}
    images_here = data.eval_examples_on_worker(info.num_examples, info.steps, per_worker_batch,
                                               size, rank)
    run_log.GlobalMetrics(0, images_here, distributed.weighted_mean).on_epoch_end(0, logs)
    images, errors = distributed.sum_over_workers(
        [keras.ops.convert_to_numpy(v) for v in (counts.images, counts.errors)], "class_counts")
    names = source.class_names or [None] * num_classes
    return dict(
        model=os.path.abspath(model_path), dataset=dataset, data_dir=data_dir,
        preprocessing=preprocessing, processes=size, images=int(round(images.sum())),
        val_loss=logs["val_loss"], val_top1_error=logs["val_top1_error"],
        val_top5_error=logs["val_top5_error"],
        per_class=[dict(label=c, name=names[c], images=int(round(images[c])),
                        top1_error=float(errors[c] / images[c]) if images[c] else None)
                   for c in range(num_classes)],
        # The run's own numbers, to compare, when this is the run's validation set.
        last_validation=run.get("last_validation") if is_runs_own_data(
            run, dataset, data_dir, preprocessing) else None)


def summary(results: dict) -> str:
    """A few lines for people: the three numbers, each class's error, and the run's own last
    validation when the model sits in its run folder."""
    lines = [f"{results['model']} on {results['dataset']}"
             f"{' ' + results['data_dir'] if results['data_dir'] else ''}, validation split: "
             f"{results['images']} images, each counted once "
             f"({results['processes']} process{'' if results['processes'] == 1 else 'es'}).",
             f"  top-1 error  {100 * results['val_top1_error']:.2f}%",
             f"  top-5 error  {100 * results['val_top5_error']:.2f}%",
             f"  loss         {results['val_loss']:.4f} (cross-entropy)"]
    classes = results["per_class"]
    if len(classes) <= SHOWN_CLASSES:
        shown, title = classes, "  top-1 error per class:"
    else:
        shown = sorted(classes, key=lambda c: -(c["top1_error"] or 0))[:10]
        title = f"  top-1 error per class, the 10 worst of {len(classes)} (--json has all):"
    lines.append(title)
    for c in shown:
        error = "–" if c["top1_error"] is None else f"{100 * c['top1_error']:5.1f}%"
        name = f" {c['name']}" if c["name"] else ""
        lines.append(f"    {c['label']:>4}{name:<16} {error}  of {c['images']}")
    last = results.get("last_validation")
    if last:
        lines.append(f"The run's last validation (epoch {last['epoch']}): top-1 error "
                     f"{100 * last['val_top1_error']:.2f}%, top-5 error "
                     f"{100 * last['val_top5_error']:.2f}%, loss {last['val_loss']:.4f}.")
    return "\n".join(lines)


def define_flags():
    """The command line's flags, defined by `run` rather than on import, so that the module
    imports beside the trainer's flags (which define another --model)."""
    flags.DEFINE_string("model", None, "The trained model: a .keras file, e.g. a finished run's "
                        "<log_dir>/model.keras.")
    flags.DEFINE_string("dataset", None, "synthetic | shapes | folder | tfrecord | tfds:<name> "
                        "(default: the run's, from flags.json beside --model); its validation "
                        "split is evaluated.")
    flags.DEFINE_string("data_dir", None, "Folder tree, TFRecord directory, or TFDS data_dir "
                        "(default: the run's, when --dataset is not given either; given alone, it "
                        "holds data of the run's --dataset: folder, tfrecord or tfds).")
    flags.DEFINE_bool("download", False, "Let TFDS download the dataset.")
    flags.DEFINE_integer("per_worker_batch", None, "Images per process and step (default: the "
                         "run's n × simulated workers, else 128); the results do not depend on it.")
    flags.DEFINE_enum("preprocessing", None, ["cifar", "imagenet"], "Evaluation preprocessing "
                      "(default: the run's, else from the model's name).")
    flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise app.UsageError("--model is required: the .keras file to evaluate, e.g. "
                             "--model=runs/demo/model.keras")
    from absl import logging

    from tf_largebatch import distributed
    from tf_largebatch.data.errors import DataError

    logging.set_verbosity(logging.WARNING)  # the results are printed; warnings still show
    try:
        chief = distributed.init().is_chief
    except distributed.HostNameError as err:
        if distributed.first_on_host():
            print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        results = evaluate(FLAGS.model, FLAGS.dataset, FLAGS.data_dir, FLAGS.per_worker_batch,
                           FLAGS.preprocessing, FLAGS.download)
    except (EvaluateError, DataError) as err:
        if chief:
            print(f"error: {err}", file=sys.stderr)
        return 1
    if chief:
        print(summary(results))
        if FLAGS.json:
            with open(FLAGS.json, "w") as f:
                json.dump({k: v for k, v in results.items() if k != "last_validation"}, f,
                          indent=1)
            print(f"Results in {FLAGS.json}.")
    return 0


def run():
    """`app.run(main)`, except that asking for help exits 0 (as `cli.run_cli`, which this
    CLI cannot import: the trainer's flags define another --model)."""
    define_flags()
    try:
        app.run(main)
    except SystemExit as exit_:
        if exit_.code == 1 and any(arg in ("-h", "-?", "--help", "--helpshort", "--helpfull")
                                   for arg in sys.argv[1:]):
            sys.exit(0)
        raise


if __name__ == "__main__":
    run()
