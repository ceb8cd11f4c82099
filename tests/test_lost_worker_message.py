"""The one line a surviving worker prints when another worker of its job died: which errors
it answers (Horovod 0.28.1's, as the survivors get it: tests/test_lost_worker.py shows it
under horovodrun) and what it says."""

import json
from types import SimpleNamespace

import pytest
import tensorflow as tf

from tf_largebatch.experiment.config import ExperimentConfig, OutputConfig
from tf_largebatch.experiment.runner import lost_worker_problem

pytestmark = pytest.mark.unit

# What the survivor's gradient allreduce raised when its peer was killed (after the
# "Graph execution error" preamble that names the node).
SHUT_DOWN = ("Horovod has been shut down. This was caused by an exception on one of the "
             "ranks or an attempt to allreduce, allgather or broadcast a tensor after one of "
             "the ranks finished execution. If the shutdown was caused by an exception, you "
             "should see the exception in the log before the first shutdown message.\n"
             "\t [[{{node grad1}}]] [Op:__inference_multi_step_on_iterator_2669]")


def config(tmp_path):
    return ExperimentConfig(output=OutputConfig(log_dir=str(tmp_path)))


def test_with_more_workers_it_names_none_and_names_a_mid_epoch_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/run.json").write_text(json.dumps(
        {"checkpoint": "ckpt-2-5", "epoch": 2, "step": 29, "partial_epoch": {"steps": 5}}))
    line = lost_worker_problem(tf.errors.UnknownError(None, None, SHUT_DOWN),
                               config(tmp_path), SimpleNamespace(processes=4, rank=2))
    assert line.startswith("another worker of this job stopped"), line
    assert '"Process N exit with status code"' in line
    assert f"{tmp_path}/checkpoints/ckpt-2-5 (epoch 2, 5 steps into the next)" in line
    assert "--resume=auto" in line


def test_without_a_committed_checkpoint_it_says_so(tmp_path):
    line = lost_worker_problem(tf.errors.UnknownError(None, None, SHUT_DOWN),
                               config(tmp_path), SimpleNamespace(processes=2, rank=1))
    assert "another worker of this job (rank 0) stopped" in line
    assert f"No committed checkpoint is in {tmp_path}/checkpoints" in line
    assert "--resume=auto" in line


@pytest.mark.parametrize("err", [tf.errors.UnknownError(None, None, "a kernel failed"),
                                 tf.errors.InternalError(None, None, SHUT_DOWN),
                                 RuntimeError(SHUT_DOWN)])
def test_other_errors_are_not_answered(tmp_path, err):
    assert lost_worker_problem(err, config(tmp_path),
                               SimpleNamespace(processes=2, rank=0)) is None


def test_a_silent_worker_is_named_with_the_timeout_that_ended_the_job(tmp_path):
    # What a survivor's gradient allreduce raised 10 s after its peers' host was cut off
    # (HOROVOD_GLOO_TIMEOUT_SECONDS=10, tests/test_multi_host.py).
    err = tf.errors.UnknownError(None, None, (
        "Graph execution error:\n\n[/tmp/horovod/third_party/compatible17_gloo/gloo/transport/"
        "tcp/unbound_buffer.cc:81] Timed out waiting 10000ms for recv operation to complete\n"
        "\t [[{{node grad6}}]] [Op:__inference_multi_step_on_iterator_2657]"))
    line = lost_worker_problem(err, config(tmp_path), SimpleNamespace(processes=4, rank=1))
    assert line.startswith("another worker of this job stopped answering for 10 s (Gloo's "
                           "timeout, HOROVOD_GLOO_TIMEOUT_SECONDS)"), line
    assert "--resume=auto" in line
