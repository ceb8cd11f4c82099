"""A resume with another model, rate, optimizer, seed, precision, image size or data set is
refused, naming the flag and the run's own value: the facts the trainer records in run.json,
computed in-process the trainer's way (its flags, its Horovod backend's training set, the batch
layout), then `position.check_resume_facts` as the trainer calls it. One launch of the trainer
checks the whole path, run.json left as it was (test_faults.py)."""

import pytest
from absl import flags

from tf_largebatch import train
from tf_largebatch.data.layout import batch_layout
from tf_largebatch.experiment import builders, position, runner
from tf_largebatch.experiment import flags as trainer_flags

pytestmark = pytest.mark.unit

# test_faults.py's TINY run, as its flags.
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
        "--per_worker_batch=8", "--steps_per_epoch=3", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--simulate_workers=2",
        "--epochs=3"]


def facts(*args):
    """run.json's facts of a run with these flags, as `runner.run_experiment` computes them."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", *args])
        config = trainer_flags.from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    backend = train.HorovodBackend()
    backend.start(config)
    size = builders.image_size(config.model)
    training_set = backend.open_training_set(size)
    layout = batch_layout(training_set.num_examples, config.schedule.per_worker_batch,
                          backend.processes, config.system.simulate_workers,
                          config.schedule.steps_per_epoch, training_set.name)
    return runner.facts_of_run(config, training_set, layout, size)


@pytest.mark.parametrize("flag, named", [
    ("--synthetic_examples=128", "train_examples = 64, this one 128"),
    ("--base_lr=0.2", "base_lr = 0.1, this one 0.2. Resume with the run's own --base_lr"),
    ("--model=cifar_resnet14", "model = 'cifar_resnet8', this one 'cifar_resnet14'"),
    ("--optimizer=lars", "optimizer = 'sgd', this one 'lars'"),
    ("--seed=4", "seed = 3, this one 4. Resume with the run's own --seed"),
    ("--mixed_precision=mixed_bfloat16", "mixed_precision = 'none', this one 'mixed_bfloat16'"),
    # Same size (64) and class count (10), no class names: only the fingerprint differs.
    ("--dataset=shapes", "Resume with the run's own --dataset/--data_dir (the training files"),
    # The CIFAR ResNet's default 32; its weights would load at 40 too (pooled before the head).
    ("--image_size=40", "image_size = 32, this one 40"),
])
def test_resume_refuses_another_data_set_rate_model_optimizer_seed_precision_or_image_size(
        flag, named):
    recorded = facts(*TINY)
    position.check_resume_facts(recorded, facts(*TINY))  # the same flags resume
    with pytest.raises(runner.TrainError) as refused:
        position.check_resume_facts(recorded, facts(*TINY, flag))
    assert named in str(refused.value)
    assert "nothing was changed" in str(refused.value)
