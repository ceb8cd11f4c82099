"""The chief's checks before training, as pure functions: whose folders a fresh run may use
(`run_folder.claim`) and whether a resume continues the same run
(`runner.check_resume_facts`)."""

import pytest

from tf_largebatch.experiment import runner

pytestmark = pytest.mark.unit

# A run.json's facts as a CIFAR ResNet run of the trainer records them.
FACTS = dict(model="cifar_resnet8", image_size=32, optimizer="sgd", mixed_precision="none",
             seed=3, base_lr=0.1, base_batch=256, train_examples=64, num_classes=10)


def test_resume_refuses_another_image_size_naming_the_flag_and_the_runs_value():
    with pytest.raises(runner.TrainError) as refused:
        runner.check_resume_facts(FACTS, dict(FACTS, image_size=40))
    assert "image_size = 32, this one 40" in str(refused.value)
    assert "Resume with the run's own --image_size" in str(refused.value)
    runner.check_resume_facts(FACTS, dict(FACTS))  # the same size resumes


def test_a_run_json_from_before_image_size_was_recorded_still_resumes():
    old = {key: value for key, value in FACTS.items() if key != "image_size"}
    runner.check_resume_facts(old, dict(FACTS, image_size=40))  # nothing to compare: no error
