"""Convert an image folder tree to TFRecord shards.

    python -m tf_largebatch.data.convert --input_dir=/data/imagenet \\
        --output_dir=/data/imagenet-tfrecord --shards_train=1024 --shards_val=128

Reads ``<input_dir>/train/<class>/*`` and ``<input_dir>/val/<class>/*`` (or ``test/``) exactly as
the "folder" source does (sorted classes and files, magic bytes checked) and writes
``train-NNNNN-of-MMMMM``, ``validation-NNNNN-of-MMMMM`` and ``labels.txt`` (class names, one per
line, in label order). Records keep the listing order, cut into contiguous shards, so record ``i``
is folder example ``i`` and both sources give identical pipelines. Images are stored as the
original file bytes (no re-encoding) with 0-based labels; see :mod:`tf_largebatch.data.tfrecord`.

With ``verify`` (``--verify``, the default) every image is first decoded by the training
pipeline's decoder, and an image it rejects (a truncated JPEG, say) stops the conversion with
its path; its shard is not written.

Re-runs: ``manifest.json`` records, per shard, its images in order as ``[path relative to
input_dir, label, sha256 of the file]``. A shard is skipped only when its manifest entry equals
what it would hold now and the file has that many records; any other shard is rewritten.
Shards are written in parallel, each to a temporary name (``<shard>.tmp-<pid>``), fsynced and
renamed; the manifest is written the same way, without the entries of the shards about to be
rewritten before them, so an interrupted run never leaves an entry for a shard it changed.

Interrupted runs: as each shard is complete (renamed) its entry is appended to
``manifest.journal`` (one JSON line, fsynced) and folded into ``manifest.json`` at the end, so a
run killed at any point (SIGKILL, power loss) leaves a record of every shard it finished and
the next run reuses them; a shard half-written at the kill is only a temporary, which is
deleted, and is rewritten. A line torn by the kill is ignored (that shard is rewritten).
Appending a line costs O(shard), where rewriting the whole manifest after every shard would
cost O(shards x images). The converter holds an exclusive ``flock`` on the output folder for
the whole run (a second converter into the same folder stops with an error instead of racing
it), so every temporary found there at the start belongs to a dead writer and all are deleted;
where the file system has no locks, only those whose pid is not alive on this host are.

Shards of the same split with another shard count (left by an earlier conversion) are removed,
with a warning naming them. A failure to read an image or write the output (a read-only
folder, a full disk) stops with one line naming the file and the fix; the complete shards are
kept and a re-run reuses them.

Fault injection (the crash tests): ``TF_LARGEBATCH_KILL_AT=shard-written@N`` kills the
converter once N shards are complete and recorded, ``shard-record@N`` after the N-th record
written by any shard (so with a shard half-written); see
:func:`tf_largebatch.faults.fault_point`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import sys
import threading

import tensorflow as tf
from absl import logging

from tf_largebatch.data import preprocess, tfrecord
from tf_largebatch.data.errors import DataError
from tf_largebatch.data.folders import folder_splits, list_image_folder
from tf_largebatch.faults import fault_point

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with tensorflow-datasets; fall back to no progress bar
    tqdm = None

MANIFEST = "manifest.json"
JOURNAL = "manifest.journal"
SPLITS = (("train", "train", "--shards_train"), ("eval", "validation", "--shards_val"))
# What this converter writes under a temporary name (``labels.txt.tmp``: before pids were added).
TEMPORARY = re.compile(
    r"^(?:(?:train|validation)-\d+-of-\d+|manifest\.json|labels\.txt)\.tmp(?:-(\d+))?$"
)


class ConvertError(RuntimeError):
    """The converter cannot read an image or write its output folder; the message names the
    file and the fix."""


def shard_name(prefix: str, index: int, total: int) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}"


def _temporary(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def _io_message(path: str, e: BaseException, reading: bool = False) -> str:
    """One line: what failed on ``path``, why, and what to do."""
    if isinstance(e, OSError):
        number, reason = e.errno, e.strerror or str(e)
    else:  # tf.errors.OpError: "<path>; <strerror>"
        number, reason = None, getattr(e, "message", str(e)).rpartition("; ")[2]
    reason = " ".join(reason.split())
    if reading:
        return (f"cannot read {path}: {reason}; make it readable or remove it from the input "
                "folder, then re-run (the complete shards are kept and reused)")
    folder = os.path.dirname(os.path.normpath(path))
    if number in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or isinstance(
            e, tf.errors.ResourceExhaustedError):
        fix = f"free space on the disk of {folder} or pass another --output_dir"
    elif number in (errno.EACCES, errno.EPERM, errno.EROFS) or isinstance(
            e, tf.errors.PermissionDeniedError):
        fix = f"make {folder} writable or pass another --output_dir"
    else:
        fix = f"check {folder} or pass another --output_dir"
    return (f"cannot write {path}: {reason}; {fix}, then re-run (the complete shards are kept "
            "and reused)")


@contextlib.contextmanager
def _writing(path: str):
    """Turns an I/O failure while writing ``path`` into a ConvertError naming it and the fix."""
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        raise ConvertError(_io_message(path, e)) from e


def _fsync_folder(folder: str) -> None:
    """Makes the renames and deletions in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the renames are still atomic
        pass
    finally:
        os.close(fd)


def _replace_durably(tmp: str, path: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(os.path.dirname(path) or ".")


def _write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary name, fsynced and renamed; raises
    ConvertError (the temporary deleted) when it cannot."""
    try:
        with open(_temporary(path), "w") as f:
            f.write(text)
        _replace_durably(_temporary(path), path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(_temporary(path))
        raise ConvertError(_io_message(path, e)) from e


def write_manifest(output_dir: str, shards: dict[str, dict]) -> None:
    """Writes ``{"shards": {name: entry}}`` atomically (temporary name, fsync, rename)."""
    _write_atomically(os.path.join(output_dir, MANIFEST), json.dumps({"shards": shards},
                                                                     sort_keys=True))


def _valid_record(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("shard"), str)
            and isinstance(record.get("files"), list) and isinstance(record.get("verified"), bool))


def read_manifest(output_dir: str) -> dict[str, dict]:
    """The manifest's shard entries, updated by the journal's (shards completed by a run that
    did not finish); empty when there is neither (readable)."""
    try:
        with open(os.path.join(output_dir, MANIFEST)) as f:
            shards = json.load(f)["shards"]
    except (OSError, ValueError, KeyError):
        shards = {}
    try:
        with open(os.path.join(output_dir, JOURNAL)) as f:
            lines = f.read().split("\n")
    except (OSError, ValueError):
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a kill: that shard is rewritten
            continue
        if _valid_record(record):
            shards[record.pop("shard")] = record
    return shards


def _remove_journal(output_dir: str) -> None:
    path = os.path.join(output_dir, JOURNAL)
    with _writing(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            _fsync_folder(output_dir)


class _Journal:
    """Appends one JSON line per completed shard to ``manifest.journal``, fsynced."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, JOURNAL)
        self.lock = threading.Lock()
        self.failed = False
        with _writing(self.path):
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, name: str, entry: dict) -> None:
        line = (json.dumps({"shard": name, **entry}, sort_keys=True) + "\n").encode()
        with self.lock:
            if self.failed:  # after a failed (maybe torn) append, record nothing more
                return
            try:
                with _writing(self.path):
                    while line:
                        line = line[os.write(self.fd, line):]
                    os.fsync(self.fd)
            except ConvertError:
                self.failed = True
                raise
            fault_point("shard-written")

    def close(self) -> None:
        os.close(self.fd)


def _lock_folder(output_dir: str) -> tuple[int, bool]:
    """Opens ``output_dir`` and takes an exclusive lock on it; returns (fd, locked).

    Raises ConvertError when another process holds it: two converters into one folder would
    delete each other's temporaries and interleave their manifests.
    """
    with _writing(output_dir):
        fd = os.open(output_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConvertError(
            f"{output_dir}: another converter is writing to this folder; wait for it to finish "
            "or pass another --output_dir"
        ) from None
    except OSError as e:  # a file system without locks (some network mounts)
        logging.warning("%s: cannot lock the folder (%s); run one converter into it at a time",
                        output_dir, e.strerror)
        return fd, False
    return fd, True


def _alive(pid: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it exists, as another user's
        return True
    return True


def remove_temporaries(output_dir: str, all_of_them: bool) -> list[str]:
    """Deletes the temporaries of dead writers (all of them when we hold the folder's lock, else
    those whose pid is not alive); returns their names."""
    stale = sorted(
        name for name in os.listdir(output_dir)
        if (m := TEMPORARY.match(name)) and (all_of_them or not _alive(m.group(1)))
    )
    for name in stale:
        with _writing(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    return stale


def _file_entry(file: str, label: int, input_dir: str, contents: bytes) -> list:
    return [os.path.relpath(file, input_dir), label, hashlib.sha256(contents).hexdigest()]


def _read(file: str) -> bytes:
    try:
        with open(file, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConvertError(_io_message(file, e, reading=True)) from e


def is_complete(path: str, items: list[tuple[str, int]], input_dir: str, entry: dict | None,
                verify: bool) -> bool:
    """Whether the shard at ``path``, described by its manifest ``entry``, holds ``items``."""
    if entry is None or len(entry["files"]) != len(items) or (verify and not entry["verified"]):
        return False
    try:
        if len(tfrecord.index_records(path)[0]) != len(items):
            return False
    except (OSError, DataError):
        return False
    return entry["files"] == [_file_entry(f, label, input_dir, _read(f)) for f, label in items]


def write_shard(path: str, items: list[tuple[str, int]], input_dir: str, split_dir: str,
                class_names, verify: bool) -> tuple[dict | None, list[str]]:
    """Writes ``items`` (file path, label) to the TFRecord ``path``.

    Returns ``(manifest entry, [])``, or ``(None, ["<file>: <why it cannot be decoded>", ...])``
    without writing the shard when ``verify`` finds images the training pipeline cannot decode.
    Raises ConvertError naming ``path`` (its temporary deleted) when it cannot be written.
    """
    files, undecodable = [], []
    tmp = _temporary(path)
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for file, label in items:
                encoded = _read(file)
                if verify and (problem := preprocess.decode_problem(encoded)):
                    undecodable.append(f"{file}: {problem}")
                files.append(_file_entry(file, label, input_dir, encoded))
                relative = os.path.relpath(file, split_dir)
                writer.write(tfrecord.make_example(encoded, label, class_names[label], relative))
                fault_point("shard-record")
        if undecodable:
            os.remove(tmp)
            return None, undecodable
        _replace_durably(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError | tf.errors.OpError):
            raise ConvertError(_io_message(path, e)) from e
        raise
    return {"files": files, "verified": verify}, []


class _Skipped(Exception):
    """A job not run because another one failed."""


def _in_parallel(fn, jobs, workers, desc):
    """``[fn(*job) for job in jobs]`` on a thread pool, with a progress bar. The first failure
    stops the jobs not yet begun and is raised once those running are done (their shards kept)."""
    failed = threading.Event()

    def run(job):
        if failed.is_set():
            raise _Skipped
        try:
            return fn(*job)
        except BaseException:
            failed.set()
            raise

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        try:
            results = (future.result() for future in futures)
            if tqdm and jobs:
                results = tqdm(results, total=len(jobs), unit="shard", desc=desc)
            return list(results)
        except BaseException:
            failed.set()
            concurrent.futures.wait(futures)
            for future in futures:  # raise the failure itself, not a job it stopped
                error = None if future.cancelled() else future.exception()
                if error is not None and not isinstance(error, _Skipped):
                    raise error from error.__cause__
            raise


def remove_stale_shards(output_dir: str, prefix: str, keep) -> list[str]:
    """Deletes ``<prefix>-NNNNN-of-MMMMM`` files not in ``keep``; returns their names."""
    pattern = re.compile(rf"^{re.escape(prefix)}-\d+-of-\d+$")
    stale = sorted(f for f in os.listdir(output_dir) if pattern.match(f) and f not in keep)
    for name in stale:
        with _writing(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    return stale


def convert(input_dir: str, output_dir: str, shards_train: int, shards_val: int,
            workers: int | None = None, verify: bool = True) -> dict[str, int]:
    """Converts both splits; returns ``{"train": N_train, "validation": N_val, "written": k}``.

    Raises DataError naming every image the training pipeline cannot decode (with ``verify``),
    ConvertError naming the file when an image cannot be read or the output written, or when
    another converter holds ``output_dir``.
    """
    if min(shards_train, shards_val) < 1:
        raise ValueError("--shards_train and --shards_val must be >= 1")
    dirs = folder_splits(input_dir)
    with _writing(output_dir):
        os.makedirs(output_dir, exist_ok=True)
    lock, locked = _lock_folder(output_dir)
    try:
        return _convert(input_dir, output_dir, dirs, shards_train, shards_val, workers, verify,
                        locked)
    finally:
        os.close(lock)  # releases the lock


def _convert(input_dir, output_dir, dirs, shards_train, shards_val, workers, verify, locked):
    # Holding the lock, no other converter writes here: every temporary is a dead writer's.
    if removed := remove_temporaries(output_dir, all_of_them=locked):
        logging.info("%s: removed %d temporary files of an interrupted run: %s", output_dir,
                     len(removed), ", ".join(removed))
    shards, counts = {}, {}  # shard name -> (items, split dir)
    for (split, prefix, flag), total in zip(SPLITS, (shards_train, shards_val), strict=True):
        paths, labels, class_names = list_image_folder(input_dir, split)
        items = list(zip(paths, labels.tolist(), strict=True))
        counts[prefix] = n = len(items)
        if total > n:  # valid but wasteful: the source reads empty shards as zero records
            logging.warning("%s: %d shards for %d images leaves %d of them empty; pass %s=%d or "
                            "fewer", prefix, total, n, total - n, flag, n)
        for i in range(total):
            part = items[i * n // total : (i + 1) * n // total]
            shards[shard_name(prefix, i, total)] = (part, dirs[split])
    labels_txt = os.path.join(output_dir, "labels.txt")
    _write_atomically(labels_txt, "".join(f"{name}\n" for name in class_names))

    def path(name):
        return os.path.join(output_dir, name)

    manifest = read_manifest(output_dir)  # with the journal of an interrupted run
    complete = _in_parallel(
        is_complete,
        [(path(name), items, input_dir, manifest.get(name), verify)
         for name, (items, _) in shards.items()],
        workers, "Checking",
    )
    entries = {name: manifest[name] for name, done in zip(shards, complete, strict=True) if done}
    todo = [name for name in shards if name not in entries]
    journal = None
    if todo:  # drop their entries first, so that an interrupted run cannot leave a stale one
        write_manifest(output_dir, entries)
        _remove_journal(output_dir)  # folded in, or dropped with the shards to rewrite
        journal = _Journal(output_dir)

    def write_and_record(name, *args):
        entry, problems = write_shard(path(name), *args)
        if entry:
            journal.record(name, entry)
        return entry, problems

    try:
        results = _in_parallel(
            write_and_record,
            [(name, items, input_dir, split_dir, class_names, verify)
             for name, (items, split_dir) in shards.items() if name in todo],
            workers, "TFRecords",
        )
    finally:
        if journal:
            journal.close()
    undecodable = []
    for name, (entry, problems) in zip(todo, results, strict=True):
        if entry:
            entries[name] = entry
        undecodable += problems
    if not undecodable:
        for _, prefix, _ in SPLITS:
            if stale := remove_stale_shards(output_dir, prefix, shards):
                logging.warning("%s: removed %d shards of an earlier conversion with another shard "
                                "count: %s", output_dir, len(stale), ", ".join(stale))
    write_manifest(output_dir, entries)
    _remove_journal(output_dir)
    if undecodable:
        listed = "\n  ".join(undecodable[:20]) + ("\n  ..." if len(undecodable) > 20 else "")
        raise DataError(
            f"{len(undecodable)} image(s) that TensorFlow cannot decode (training would stop at "
            f"them):\n  {listed}\nRemove or replace them in {input_dir} and re-run; the "
            f"{len(entries)} complete shards are kept."
        )
    logging.info(
        "%s: %d train and %d validation images in %d shards (%d written, %d already complete)",
        output_dir, counts["train"], counts["validation"], len(shards), len(todo),
        len(shards) - len(todo),
    )
    return {**counts, "written": len(todo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_largebatch.data.convert",
        description="Convert <input_dir>/{train,val}/<class>/* images to TFRecord shards.",
    )
    parser.add_argument("--input_dir", required=True, help="folder tree with train/ and val/")
    parser.add_argument("--output_dir", required=True, help="where the shards are written")
    parser.add_argument("--shards_train", type=int, default=1024)
    parser.add_argument("--shards_val", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: CPUs)")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="decode every image and refuse those training cannot (default)")
    parser.add_argument("--noverify", dest="verify", action="store_false",
                        help="skip the decoding check")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        convert(args.input_dir, args.output_dir, args.shards_train, args.shards_val, args.workers,
                args.verify)
    except (DataError, ConvertError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
