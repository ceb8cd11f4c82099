"""A finished run leaves model.keras, which plain Keras loads, and `tf_largebatch.evaluate`
reproduces the run's last validation from it, on one process and under real
`horovodrun -np 2`."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, horovodrun

pytestmark = pytest.mark.integration

# A CIFAR ResNet-8 on the demo's generated images (the class is the hue of a disc): 480
# training images, k = 2 processes of n = 24, kn = 48, so 10 steps an epoch and 30 in the
# run. The 256 validation images are 6 global batches of 48 with 32 slots of padding.
RUN = ["-m", "tf_largebatch.train", "--model=cifar_resnet8", "--dataset=shapes",
       "--synthetic_examples=480", "--per_worker_batch=24", "--epochs=3",
       "--warmup_epochs=1", "--milestones=2", "--base_lr=0.4", "--seed=1"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
# shapes labels image i with class i mod 10: of 256 validation images, classes 0-5 have 26
# and classes 6-9 have 25.
CLASS_IMAGES = [26] * 6 + [25] * 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One training run under `horovodrun -np 2`, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("run")
    horovodrun([*RUN, f"--log_dir={run_dir}"])
    return run_dir


def last_validation(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    return records[-1]


def python(*args, check=True):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT, env=ENV, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-4000:])
    return result


LOAD = """
import json, sys
import keras
import tf_largebatch
model = keras.models.load_model(sys.argv[1])
images = keras.random.uniform((4, 32, 32, 3), seed=0)
keras_logits = keras.ops.convert_to_numpy(model(images, training=False))
import tensorflow as tf
exported = tf.saved_model.load(sys.argv[2])
served = exported.serve(images).numpy()
optimizer = model.optimizer
print(json.dumps(dict(
    optimizer=type(optimizer).__name__, iterations=int(optimizer.iterations),
    peak_lr=optimizer._learning_rate.peak_lr,
    momentum_buffers=sum(float(keras.ops.sum(keras.ops.abs(v))) for v in optimizer.variables
                         if "momentum" in v.path),
    max_difference=float(abs(keras_logits - served).max()),
    ours=sorted(m for m in sys.modules if m.startswith("tf_largebatch")))))
"""


def test_the_run_leaves_a_model_that_plain_keras_loads_with_its_optimizer(run_dir):
    assert (run_dir / "model.keras").is_file()
    assert (run_dir / "saved_model/saved_model.pb").is_file()
    assert not [p.name for p in run_dir.iterdir() if "tmp" in p.name or "old" in p.name]
    loaded = json.loads(python("-c", LOAD, run_dir / "model.keras",
                               run_dir / "saved_model").stdout.splitlines()[-1])
    # The Horovod bridge's class (DistributedMomentumSGD) is saved as the optimizer it wraps,
    # with its state: 3 epochs of 10 steps, and η̂ = 0.4·48/256 = 0.075 by the linear rule.
    assert loaded["optimizer"] == "MomentumSGD"
    assert loaded["iterations"] == 30
    assert loaded["peak_lr"] == pytest.approx(0.075)
    assert loaded["momentum_buffers"] > 0
    # The inference export computes what the .keras model computes.
    assert loaded["max_difference"] < 1e-4
    # Only the recipe's registered modules were needed, not the trainer or its core.
    assert not [m for m in loaded["ours"] if m.startswith("tf_largebatch.experiment")]


def assert_reproduces(results, run_dir):
    logged = last_validation(run_dir)
    assert results["val_top1_error"] == pytest.approx(logged["val_top1_error"], abs=1e-6)
    assert results["val_top5_error"] == pytest.approx(logged["val_top5_error"], abs=1e-6)
    assert results["val_loss"] == pytest.approx(logged["val_loss"], rel=1e-5)
    # Each validation image counted once, whatever the padding: the generator's labels.
    assert results["images"] == 256
    assert [c["images"] for c in results["per_class"]] == CLASS_IMAGES
    errors = sum(c["images"] * c["top1_error"] for c in results["per_class"])
    assert errors / 256 == pytest.approx(logged["val_top1_error"], abs=1e-6)


def test_evaluate_on_one_process_reproduces_the_runs_last_validation(run_dir, tmp_path):
    # Defaults from the run folder; one process of 24 images a step: 11 steps, 8 padded.
    result = python("-m", "tf_largebatch.evaluate", f"--model={run_dir}/model.keras",
                    f"--json={tmp_path}/results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert_reproduces(results, run_dir)
    assert results["processes"] == 1
    logged = last_validation(run_dir)
    assert f"top-1 error  {100 * logged['val_top1_error']:.2f}%" in result.stdout
    assert "(1 process)" in result.stdout and "The run's last validation (epoch 3)" in (
        result.stdout)
    # The per-class errors, worked out again here with NumPy on the model's logits.
    import keras

    # Registers the package's Keras objects (this process imported the package before Keras,
    # so `import tf_largebatch` alone would not: see its docstring).
    from tf_largebatch import data, layers, losses, optimizers, schedules  # noqa: F401

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    ds, _ = data.eval_dataset("shapes", image_size=32, per_worker_batch=64,
                              preprocessing="cifar")
    wrong, seen = np.zeros(10), np.zeros(10)
    for images, labels, weights in ds.as_numpy_iterator():
        predicted = np.argmax(np.asarray(model(images, training=False)), axis=1)
        np.add.at(seen, labels, weights)
        np.add.at(wrong, labels, weights * (predicted != labels))
    np.testing.assert_allclose([c["top1_error"] for c in results["per_class"]], wrong / seen,
                               atol=1e-9)
    assert 0 < wrong.sum() < 256  # neither all right nor all wrong: the check has teeth


def test_evaluate_under_horovodrun_reproduces_the_runs_last_validation(run_dir, tmp_path):
    # 2 processes of 40 images a step: 4 global steps of 80, 64 slots of padding.
    result = horovodrun(["-m", "tf_largebatch.evaluate", f"--model={run_dir}/model.keras",
                         "--dataset=shapes", "--per_worker_batch=40",
                         f"--json={tmp_path}/results.json"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert_reproduces(results, run_dir)
    assert results["processes"] == 2
    assert result.stdout.count("top-1 error  ") == 1  # rank 0 prints, once
    assert "(2 processes)" in result.stdout


def one_error_line(result):
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_bad_input_gets_one_error_line_naming_the_problem_and_the_fix(run_dir, tmp_path):
    import tensorflow as tf

    evaluate = ("-m", "tf_largebatch.evaluate")
    line = one_error_line(python(*evaluate, f"--model={tmp_path}/none.keras", check=False))
    assert f"--model={tmp_path}/none.keras: no such file" in line and "model.keras" in line
    (tmp_path / "notes.keras").write_text("not a model")
    line = one_error_line(python(*evaluate, f"--model={tmp_path}/notes.keras", check=False))
    assert "is not a readable Keras model file" in line and "model.save" in line
    # An image folder of 3 classes for a model of 10.
    for split in ("train", "val"):
        for name in ("cat", "dog", "emu"):
            (tmp_path / "folder" / split / name).mkdir(parents=True)
            (tmp_path / "folder" / split / name / "a.png").write_bytes(
                tf.io.encode_png(tf.zeros((32, 32, 3), tf.uint8)).numpy())
    line = one_error_line(python(*evaluate, f"--model={run_dir}/model.keras",
                                 "--dataset=folder", f"--data_dir={tmp_path}/folder",
                                 check=False))
    assert "the model predicts 10 classes but" in line and "has 3" in line
    assert "--dataset" in line


@pytest.fixture(scope="module")
def folder_run(run_dir, tmp_path_factory):
    """The run as if it had trained on an image folder: its model.keras, metrics.jsonl and
    flags.json (--dataset=folder, --data_dir=<root>/full) in <root>/run. <root>/full/val holds
    the shapes validation images as PNGs (lossless: the same pixels), class c in folder c, and
    full/train is a link to it; <root>/val_only holds the same val/ and nothing else."""
    import tensorflow as tf

    from tf_largebatch import data

    root = tmp_path_factory.mktemp("folder_run")
    source = data.get_source("shapes", None, "eval", image_size=32, num_classes=10)
    for i in range(source.num_examples):
        image, label = source.read(tf.constant(i, tf.int64))
        path = root / "full/val" / str(int(label)) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(image).numpy())
    (root / "full/train").symlink_to(root / "full/val")
    (root / "val_only").mkdir()
    (root / "val_only/val").symlink_to(root / "full/val")
    (root / "run").mkdir()
    for name in ("model.keras", "metrics.jsonl"):
        shutil.copy(run_dir / name, root / "run" / name)
    flags = json.loads((run_dir / "flags.json").read_text())
    flags.update(dataset="folder", data_dir=str(root / "full"))
    (root / "run/flags.json").write_text(json.dumps(flags))
    return root


def test_data_dir_alone_is_read_as_the_runs_kind_of_data(folder_run, run_dir, tmp_path):
    # The run's kind of data (folder) from --data_dir, which has no train/: the shapes
    # validation images again, so the run's numbers again.
    result = python("-m", "tf_largebatch.evaluate", f"--model={folder_run}/run/model.keras",
                    f"--data_dir={folder_run}/val_only", f"--json={tmp_path}/results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert (results["dataset"], results["data_dir"]) == ("folder", f"{folder_run}/val_only")
    assert_reproduces(results, run_dir)
    assert "The run's last validation" not in result.stdout  # not the run's folder


def test_data_dir_alone_is_refused_where_the_runs_data_cannot_be_read(folder_run, run_dir,
                                                                       tmp_path):
    evaluate = ("-m", "tf_largebatch.evaluate")
    line = one_error_line(python(*evaluate, f"--model={folder_run}/run/model.keras",
                                 f"--data_dir={tmp_path}/nope", check=False))
    assert line == (f"error: --data_dir={tmp_path}/nope: no such folder. Pass --data_dir=<the "
                    "folder that holds the folder data to evaluate>.")
    line = one_error_line(python(*evaluate, f"--model={run_dir}/model.keras",
                                 f"--data_dir={folder_run}/full", check=False))
    assert line.startswith(f"error: --data_dir={folder_run}/full: the run's --dataset=shapes "
                           "is generated and reads no data_dir. Leave --data_dir out")


def test_a_model_of_the_packages_resnet_builder_is_evaluated_as_imagenets(tmp_path):
    from tf_largebatch import models

    models.resnet(18, num_classes=10, input_shape=(32, 32, 3)).save(tmp_path / "resnet18.keras")
    python("-m", "tf_largebatch.evaluate", f"--model={tmp_path}/resnet18.keras",
           "--dataset=shapes", f"--json={tmp_path}/results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["preprocessing"] == "imagenet"  # its name is resnet18_v1_5
    assert results["images"] == 256
    assert [c["images"] for c in results["per_class"]] == CLASS_IMAGES


def test_a_truncated_or_foreign_keras_file_is_named_as_such(run_dir, tmp_path):
    whole = (run_dir / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(whole[:len(whole) // 2])  # a copy cut short
    (tmp_path / "x.keras").write_bytes(np.random.default_rng(0).bytes(10_000))
    for name in ("model.keras", "x.keras"):
        line = one_error_line(python("-m", "tf_largebatch.evaluate",
                                     f"--model={tmp_path}/{name}", check=False))
        assert line.startswith(f"error: --model={tmp_path}/{name} is not a readable Keras "
                               "model file: not a whole zip archive, so truncated or of another "
                               "format. Pass a whole .keras file written by model.save"), line
        assert "not found" not in line


def test_a_run_killed_while_saving_its_model_leaves_no_model_keras(tmp_path):
    common = ["--synthetic_examples=96", "--per_worker_batch=16", "--epochs=2",
              "--milestones=1"]
    # SIGKILL after the model is written under its temporary name, before the rename.
    killed = subprocess.run([sys.executable, *RUN, *common, f"--log_dir={tmp_path}/killed"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(ENV, TF_LARGEBATCH_KILL_AT="model-written"))
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert logged_epochs(tmp_path / "killed") == [1, 2]
    assert (tmp_path / "killed/.tmp-model.keras").exists()  # whole, but not the run's model
    assert not (tmp_path / "killed/model.keras").exists()
    shutil.copy(tmp_path / "killed/.tmp-model.keras", tmp_path / "written-when-killed.keras")
    # Its --resume trains nothing and writes the model of the last checkpoint.
    resumed = subprocess.run([sys.executable, *RUN, *common, f"--log_dir={tmp_path}/killed",
                              "--resume"], capture_output=True, text=True, cwd=ROOT,
                             timeout=600, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "nothing to train, wrote model.keras and saved_model" in resumed.stdout
    assert logged_epochs(tmp_path / "killed") == [1, 2]  # nothing trained again
    import keras

    from tf_largebatch import layers, losses, optimizers, schedules  # noqa: F401  (registers)

    want = keras.models.load_model(tmp_path / "written-when-killed.keras", compile=False)
    got = keras.models.load_model(tmp_path / "killed/model.keras", compile=False)
    for a, b in zip(want.weights, got.weights, strict=True):  # the same trained model
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    # SIGTERM in the first epoch: the trainer exits 75 (preempted), with no model.
    stopped = subprocess.run([sys.executable, *RUN, *common, f"--log_dir={tmp_path}/stopped"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600,
                             env=dict(ENV, TF_LARGEBATCH_KILL_AT="step-done@2:TERM"))
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert not (tmp_path / "stopped/model.keras").exists()


def logged_epochs(run_dir):
    return [json.loads(line)["epoch"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
