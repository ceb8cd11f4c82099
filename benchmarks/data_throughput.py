"""Input pipeline speed against the training step's consumption, in one run.

    .venv/bin/python benchmarks/data_throughput.py [--cifar_tar=../shared/data/cifar10-jpeg.tar.gz]
        [--out=benchmarks/results/data_throughput.json]

Measures, through the package's own `tf_largebatch.data.train_dataset`:
- decode + CIFAR augmentation of the real CIFAR-10 JPEGs, and decode + ImageNet
  augmentation (random-resized crop to 224, flip) of 500×375 JPEGs (ImageNet's typical
  size), each on one core (tf.data private thread pool of 1) and on all cores (AUTOTUNE);
- the training step of the trainer's models on the same machine: CIFAR ResNet-20 at batch
  128 (32×32) and ResNet-50 at batch 32 (224×224), images/s.
The pipeline keeps up when its images/s on the cores left for it exceeds the step's.
"""

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_largebatch import data, models, optimizers  # noqa: E402


def extract_cifar(tar_path, root, per_class=500):
    """Extracts `per_class` training JPEGs of each class (and 1 test image per class)."""
    taken = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            split, cls = parts[1], parts[2]
            limit = per_class if split == "train" else 1
            if taken.get((split, cls), 0) < limit:
                taken[(split, cls)] = taken.get((split, cls), 0) + 1
                tar.extract(member, root, filter="data")
    return os.path.join(root, "cifar10")


def make_imagenet_like(root, count=256, classes=4):
    """JPEGs of 500×375 with smooth random content (quality 90), ImageNet's typical size."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            cls = f"c{i % classes}"
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            small = rng.integers(0, 256, (24, 32, 3)).astype("uint8")
            image = tf.image.resize(small, (375, 500)).numpy().astype("uint8")
            noise = rng.integers(-20, 20, image.shape)
            image = np.clip(image.astype(int) + noise, 0, 255).astype("uint8")
            tf.io.write_file(os.path.join(root, split, cls, f"{i:05d}.jpg"),
                             tf.io.encode_jpeg(image, quality=90))
    return root


def pipeline_rate(data_dir, image_size, preprocessing, threads, batch=32, seconds=8.0):
    ds, _ = data.train_dataset("folder", data_dir, image_size=image_size, per_worker_batch=batch,
                               epochs=1000, preprocessing=preprocessing)
    options = tf.data.Options()
    if threads:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    it = iter(ds.with_options(options))
    for _ in range(3):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(it)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def train_rate(model, batch, image_size, steps):
    model.compile(optimizers.MomentumSGD(0.1), keras.losses.SparseCategoricalCrossentropy(True),
                  jit_compile=False)
    x = np.random.default_rng(0).normal(size=(batch, image_size, image_size, 3)).astype("float32")
    y = np.zeros(batch, "int32")
    model.train_on_batch(x, y)  # trace
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar_tar", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--out", default="benchmarks/results/data_throughput.json")
    parser.add_argument("--resnet50_steps", type=int, default=3)
    args = parser.parse_args()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
                          f"cores, TensorFlow {tf.__version__}"}
    with tempfile.TemporaryDirectory() as tmp:
        cifar = extract_cifar(args.cifar_tar, tmp)
        imagenet = make_imagenet_like(os.path.join(tmp, "imagenet"))
        for name, path, size, prep in (("cifar_jpeg_32", cifar, 32, "cifar"),
                                       ("imagenet_jpeg_224", imagenet, 224, "imagenet")):
            results[f"{name}_per_core"] = pipeline_rate(path, size, prep, threads=1)
            results[f"{name}_all_cores"] = pipeline_rate(path, size, prep, threads=None)
    results["train_cifar_resnet20_b128"] = train_rate(models.cifar_resnet(20), 128, 32, 10)
    results["train_resnet50_b32"] = train_rate(models.resnet(50), 32, 224, args.resnet50_steps)
    results["cifar_headroom_per_core"] = (
        results["cifar_jpeg_32_per_core"] / results["train_cifar_resnet20_b128"])
    results["imagenet_headroom_per_core"] = (
        results["imagenet_jpeg_224_per_core"] / results["train_resnet50_b32"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for key, value in results.items():
        print(f"{key:32s} {value if isinstance(value, str) else f'{value:10.1f}'}")


if __name__ == "__main__":
    main()
