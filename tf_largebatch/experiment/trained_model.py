"""The trained model a finished run leaves in its log folder, for `keras.models.load_model`,
for serving and for `python -m tf_largebatch.evaluate`:

- `<log_dir>/model.keras`: Keras's own format (architecture, weights, and the compiled
  optimizer with its state: momentum buffers, step count, schedule), loadable by
  `keras.models.load_model` once Keras and `tf_largebatch` are imported (the package's
  layers, optimizers and schedules are registered Keras objects);
- `<log_dir>/saved_model/`: an inference export by `model.export` (TensorFlow backend only;
  other backends skip it with a note in the log; `--nosaved_model` skips it).

Both are written under a temporary name in the same folder and renamed into place, so a
kill or a full disk leaves the previous file or the new one, never half of one; a kill
between the two renames of the export leaves `saved_model.old` (and a whole
`saved_model.tmp`) without `saved_model`. Either way `--resume` of the finished run repairs
it: `complete_final_save` writes, from the last checkpoint, what is missing or older than
that checkpoint's commit. `TF_LARGEBATCH_KILL_AT=model-written` kills the process between
the write of model.keras and its rename (the crash tests' hook, see `tf_largebatch.faults`).
"""

import os
import shutil

import keras
from absl import logging

from tf_largebatch.faults import fault_point

MODEL_FILE = "model.keras"
EXPORT_DIR = "saved_model"
# What an interrupted final save leaves besides (or instead of) the outputs.
LEFTOVERS = (".tmp-" + MODEL_FILE, EXPORT_DIR + ".tmp", EXPORT_DIR + ".old")


def _fsync(path):
    """fsync of a file or a folder (a folder: so that the renames in it are durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_model_file(model, path: str) -> None:
    """`model.save(path)` through a temporary file in the same folder, fsynced and renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))  # Keras wants a .keras name
    try:
        model.save(tmp, overwrite=True)  # the bridged optimizer keeps its own class
        _fsync(tmp)
        fault_point("model-written")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync(folder)


def export_for_inference(model, path: str) -> bool:
    """`model.export(path)` (a TensorFlow SavedModel with a `serve` endpoint) through a
    temporary folder renamed into place; False, with a note in the log, on backends other
    than TensorFlow or when the export fails (the .keras file is the run's model either way).
    """
    if keras.backend.backend() != "tensorflow":
        logging.info("No inference export (%s): model.export needs the TensorFlow backend; "
                     "%s is the trained model.", path, MODEL_FILE)
        return False
    tmp, old = path + ".tmp", path + ".old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # TensorFlow logs each file of the export
    try:
        model.export(tmp, format="tf_saved_model", verbose=False)
    except Exception as err:  # the run's model is saved already: say why, don't fail the run
        shutil.rmtree(tmp, ignore_errors=True)
        logging.warning("No inference export (%s): model.export failed (%s); %s is the trained "
                        "model.", path, err, MODEL_FILE)
        return False
    finally:
        logging.set_verbosity(verbosity)
    # A folder cannot be renamed over another: the old one is set aside first. A kill between
    # the two renames leaves no `path`, which the finished run's --resume writes again.
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(old, ignore_errors=True)
    return True


def outputs(export: bool = True) -> tuple[str, ...]:
    """The final outputs of a run: model.keras, and saved_model/ unless `export` is off
    (--nosaved_model)."""
    return (MODEL_FILE, EXPORT_DIR) if export else (MODEL_FILE,)


def save_trained_model(model, log_dir: str, parts=(MODEL_FILE, EXPORT_DIR)) -> list[str]:
    """Writes `<log_dir>/model.keras` and, where the backend allows, `<log_dir>/saved_model/`
    (chief worker only, after the last epoch), or only those named in `parts` (model.keras
    alone with --nosaved_model); returns the names written."""
    written = []
    if MODEL_FILE in parts:
        save_model_file(model, os.path.join(log_dir, MODEL_FILE))
        written.append(MODEL_FILE)
    if EXPORT_DIR in parts and export_for_inference(model, os.path.join(log_dir, EXPORT_DIR)):
        written.append(EXPORT_DIR)
    return written


def complete_final_save(model, log_dir: str, commit: str, export: bool = True) -> list[str]:
    """For a run resumed after it trained all its epochs, `model` restored from its last
    checkpoint: writes those of model.keras and saved_model/ that `log_dir` lacks or holds
    from before that checkpoint (older than `commit`, its run.json: an earlier end's, before
    --epochs was raised), and removes what an interrupted final save left. Returns the names
    written (none: the outputs were complete). `export=False` (--nosaved_model): model.keras
    only."""
    since = os.stat(commit).st_mtime_ns
    stale = [name for name in outputs(export)
             if not os.path.exists(os.path.join(log_dir, name))
             or os.stat(os.path.join(log_dir, name)).st_mtime_ns < since]
    written = save_trained_model(model, log_dir, stale) if stale else []
    for name in LEFTOVERS:
        path = os.path.join(log_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
    return written
