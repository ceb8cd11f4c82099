"""The trainers' command line, in process: flag-file includes found next to the including
file, URLs refused for the run's folders, `--help` by topic, Horovod's reading of a
launcher's on/off variables."""

import pytest
from absl import flags

from tf_largebatch import train  # noqa: F401  (defines the trainer's flags)
from tf_largebatch.experiment import cli, flagfiles
from tf_largebatch.experiment.flags import trainer_flag_values

pytestmark = pytest.mark.unit


def write(path, *lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_include_is_found_next_to_the_including_file_from_any_directory(tmp_path,
                                                                           monkeypatch):
    write(tmp_path / "cfg/base.cfg", "# the base", "--epochs=16", "", "// also a comment",
          "  --seed=3  ")
    child = write(tmp_path / "cfg/child.cfg", "--flagfile=base.cfg", "--epochs=4")
    write(tmp_path / "elsewhere/base.cfg", "--epochs=999")  # same name in the cwd: not used
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert flagfiles.expand(["prog", f"--flagfile={child}", "--seed=5"]) == [
        "prog", "--epochs=16", "--seed=3", "--epochs=4", "--seed=5"]
    # The two-argument form, a relative top-level path (the cwd's, as in absl), and `--`.
    monkeypatch.chdir(tmp_path)
    assert flagfiles.expand(["prog", "--flagfile", "cfg/child.cfg", "--", "--flagfile=x"]) == [
        "prog", "--epochs=16", "--seed=3", "--epochs=4", "--", "--flagfile=x"]


def test_an_include_relative_to_the_working_directory_still_works(tmp_path, monkeypatch):
    # A config written for absl: its include names the path from the repository root.
    write(tmp_path / "configs/old_base.cfg", "--epochs=16")
    write(tmp_path / "configs/old.cfg", "--flagfile=configs/old_base.cfg", "--seed=1")
    monkeypatch.chdir(tmp_path)
    assert flagfiles.expand(["prog", "--flagfile=configs/old.cfg"]) == [
        "prog", "--epochs=16", "--seed=1"]


def test_a_missing_include_and_a_circle_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    child = write(tmp_path / "cfg/child.cfg", "--flagfile=gone.cfg")
    with pytest.raises(flags.CantOpenFlagFileError, match=r"includes --flagfile=gone.cfg, "
                       r"which is neither next to it \(.*cfg/gone.cfg\) nor in the working"):
        flagfiles.expand(["prog", f"--flagfile={child}"])
    write(tmp_path / "cfg/a.cfg", "--flagfile=b.cfg")
    write(tmp_path / "cfg/b.cfg", "--flagfile=a.cfg")
    with pytest.raises(flags.CantOpenFlagFileError, match="in a circle"):
        flagfiles.expand(["prog", f"--flagfile={tmp_path}/cfg/a.cfg"])


@pytest.mark.parametrize("flag", ["log_dir", "checkpoint_dir"])
@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://b/r", "hdfs://nn:8020/r",
                                 "file:///tmp/r"])
def test_urls_are_refused_for_the_runs_folders(flag, url):
    values = flags.FLAGS
    values.unparse_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError, match=r"not a URL.*os\.replace.*flock"):
            values(["train", f"--{flag}={url}"])
    finally:
        values.unparse_flags()


def test_local_paths_with_a_colon_are_accepted(tmp_path):
    values = flags.FLAGS
    values.unparse_flags()
    try:
        values(["train", f"--log_dir={tmp_path}/run:1", "--checkpoint_dir=rel/ckpt"])
        assert values.log_dir == f"{tmp_path}/run:1"
    finally:
        values.unparse_flags()


def test_hierarchical_allreduce_is_allreduce_hierarchical_and_refused_with_flat():
    from tf_largebatch.experiment.flags import from_flags

    values = flags.FLAGS
    values.unparse_flags()
    try:
        values(["train"])
        assert from_flags().system.allreduce_scheme == "auto"  # the default
        values.unparse_flags()
        values(["train", "--hierarchical_allreduce"])
        assert from_flags().system.allreduce_scheme == "hierarchical"
        values.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match="--hierarchical_allreduce asks "
                           "for --allreduce=hierarchical, not flat: drop one of them"):
            values(["train", "--hierarchical_allreduce", "--allreduce=flat"])
    finally:
        values.unparse_flags()


def test_help_lists_every_trainer_flag_once_under_a_topic():
    own = list(trainer_flag_values())
    text = cli.help_text("usage: X", own)
    assert text.startswith("usage: X\n")
    for heading, _ in cli.TOPICS:
        assert f"\n{heading}:\n" in text
    assert "\nOther:\n" not in text  # every flag has its topic
    for name in own:
        boolean = flags.FLAGS[name].boolean
        assert text.count(f"  --{'[no]' if boolean else ''}{name}:") == 1, name
    assert "directory to write logfiles into" not in text


@pytest.mark.parametrize("value, on", [("1", True), ("2", True), (" 1", True), ("0", False),
                                       ("-1", False), ("true", False), ("", False)])
def test_launcher_switches_are_read_as_horovod_reads_them(monkeypatch, value, on):
    # horovod/common/utils/env_parser.cc, SetBoolFromEnv: on when strtol(value, 10) > 0, so
    # "true" is off for Horovod.
    pytest.importorskip("horovod.tensorflow")
    from tf_largebatch import distributed

    monkeypatch.setenv("HOROVOD_HIERARCHICAL_ALLREDUCE", value)
    assert distributed.env_flag_set("HOROVOD_HIERARCHICAL_ALLREDUCE") is on
