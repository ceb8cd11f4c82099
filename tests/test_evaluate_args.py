"""What `python -m tf_largebatch.evaluate` decides before it evaluates: the data set and folder
it reads, the preprocessing a network's name implies, when it shows the run's last validation;
and the folder listing that lets it read a folder holding only its validation split."""

import os

import numpy as np
import pytest
from PIL import Image

from tf_largebatch import evaluate
from tf_largebatch.data import DataNotFoundError
from tf_largebatch.data.folders import list_image_folder

pytestmark = pytest.mark.unit


def choose(run, dataset=None, data_dir=None, download=False):
    return evaluate.choose_data("RUN/model.keras", run, dataset, data_dir and str(data_dir),
                                download)


@pytest.mark.parametrize("kind", ["folder", "tfrecord", "tfds:cifar10"])
def test_data_dir_alone_reads_the_runs_kind_of_data_from_there(kind, tmp_path):
    (tmp_path / "run_data").mkdir()
    (tmp_path / "other").mkdir()
    run = {"dataset": kind, "data_dir": str(tmp_path / "run_data"), "model": "resnet50"}
    assert choose(run, data_dir=tmp_path / "other") == (kind, str(tmp_path / "other"))
    assert choose(run) == (kind, str(tmp_path / "run_data"))  # no flag: the run's own
    assert choose(run, "tfrecord", tmp_path / "other") == ("tfrecord", str(tmp_path / "other"))


def refusal(*args, **kwargs):
    with pytest.raises(evaluate.EvaluateError) as raised:
        choose(*args, **kwargs)
    return str(raised.value)


def test_data_dir_is_refused_where_it_cannot_be_read(tmp_path):
    shapes_run = {"dataset": "shapes", "data_dir": None, "model": "cifar_resnet8"}
    message = refusal(shapes_run, data_dir=tmp_path)
    assert message.startswith(f"--data_dir={tmp_path}: the run's --dataset=shapes is generated")
    assert "Leave --data_dir out" in message and "--dataset" in message
    message = refusal({}, "synthetic", tmp_path)
    assert message.startswith(f"--data_dir={tmp_path}: --dataset=synthetic is generated")
    # A generated run's flags.json may name a data_dir the trainer ignored: no refusal then.
    assert choose(dict(shapes_run, data_dir=str(tmp_path))) == ("shapes", None)

    folder_run = {"dataset": "folder", "data_dir": str(tmp_path), "model": "resnet50"}
    message = refusal(folder_run, data_dir=tmp_path / "nope")
    assert message.startswith(f"--data_dir={tmp_path / 'nope'}: no such folder.")
    assert "--data_dir=<the folder that holds the folder data" in message
    message = refusal(dict(folder_run, data_dir=str(tmp_path / "moved")))
    assert message.startswith(f"the run's data_dir={tmp_path / 'moved'}: no such folder.")
    assert refusal({}, "tfrecord").startswith("--dataset=tfrecord needs --data_dir")
    assert "not in a run folder" in refusal({}, data_dir=tmp_path)
    # TFDS with --download creates its data_dir.
    assert choose({}, "tfds:mnist", tmp_path / "new", download=True) == (
        "tfds:mnist", str(tmp_path / "new"))


def test_the_preprocessing_follows_the_name_of_every_network_of_the_package():
    from tf_largebatch import models

    # The Keras names the builders give (models.py), and the trainer's --model names.
    built = models.resnet(18, num_classes=10, input_shape=(32, 32, 3)).name
    assert built == "resnet18_v1_5"
    for name in (built, "resnet50_v1_5", "resnet50_v1", "resnet152", "resnet34_v1"):
        assert evaluate.preprocessing_of(name) == "imagenet", name
    for name in ("cifar_resnet8", "cifar_resnet20", "cifar_resnet26", "cifar_resnet110"):
        assert evaluate.preprocessing_of(name) == "cifar", name
    for name in ("resnet19_v1_5", "resnet50_v2", "mobilenet", "my_cifar_resnet20"):
        assert evaluate.preprocessing_of(name) is None, name


def test_the_runs_last_validation_is_shown_only_for_its_own_data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    run = {"dataset": "folder", "data_dir": str(tmp_path / "data"), "model": "resnet50"}
    own = evaluate.is_runs_own_data
    assert own(run, "folder", str(tmp_path / "data"), "imagenet")
    assert own(run, "folder", f"{tmp_path}/data/", "imagenet")  # the same folder
    assert own(run, "folder", str(tmp_path / "link"), "imagenet")
    assert not own(run, "folder", str(tmp_path / "other"), "imagenet")
    assert not own(run, "tfrecord", str(tmp_path / "data"), "imagenet")
    assert not own(run, "folder", str(tmp_path / "data"), "cifar")
    shapes_run = {"dataset": "shapes", "data_dir": "ignored", "model": "cifar_resnet8"}
    assert own(shapes_run, "shapes", None, "cifar")
    assert not own(shapes_run, "synthetic", None, "cifar")
    assert not own({}, "shapes", None, "cifar")  # no run folder


def write_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


@pytest.mark.parametrize("eval_split", ["val", "test"])
def test_a_folder_with_only_its_eval_split_lists_it(tmp_path, eval_split):
    for name, count in (("moth", 2), ("ant", 1), ("zebra", 3)):
        for i in range(count):
            write_png(tmp_path / eval_split / name / f"{i}.png", i)
    paths, labels, names = list_image_folder(str(tmp_path), "eval")
    assert names == ("ant", "moth", "zebra")  # sorted: labels 0, 1, 2
    assert labels.tolist() == [0, 1, 1, 2, 2, 2]
    assert [os.path.relpath(p, tmp_path) for p in paths] == [
        f"{eval_split}/ant/0.png", f"{eval_split}/moth/0.png", f"{eval_split}/moth/1.png",
        f"{eval_split}/zebra/0.png", f"{eval_split}/zebra/1.png", f"{eval_split}/zebra/2.png"]
    # Training still needs train/ (the trainer's message, unchanged).
    with pytest.raises(DataNotFoundError, match=r"training split \(.*\) not found"):
        list_image_folder(str(tmp_path), "train")


def test_an_undecodable_image_of_an_eval_only_folder_is_named(tmp_path):
    from tf_largebatch.data.preprocess import find_undecodable

    write_png(tmp_path / "val/ant/0.png", 0)
    write_png(tmp_path / "val/moth/0.png", 0)
    whole = (tmp_path / "val/moth/0.png").read_bytes()
    (tmp_path / "val/moth/0.png").write_bytes(whole[:len(whole) // 2])  # a PNG cut short
    found = find_undecodable("folder", str(tmp_path))
    assert found.startswith(f"{tmp_path}/val/moth/0.png: ")
