"""A real input pipeline: JPEGs decoded and augmented in DataLoader workers, fed to the step.

``--data synthetic`` (the default) trains on a random batch that already sits on the device, so the
input pipeline costs nothing and can never be the bottleneck. ``--data loader`` feeds every step
from a ``torch.utils.data.DataLoader`` the way an ImageNet training script does:

- the images are JPEG bytes: an in-memory set encoded once per process with
  ``torchvision.io.encode_jpeg`` (smooth random pictures at a typical ImageNet size), or an
  ImageFolder tree (``--data-dir``);
- each sample is decoded and augmented in ``--workers N`` processes (0: in the training process)
  with ``torchvision.transforms.v2``: RandomResizedCrop, horizontal flip, float conversion, normalise;
- batches come out of pinned memory (CUDA) and are copied with ``non_blocking=True``.

``DataFeed.next()`` returns the next device batch and records how long the loop waited for it
(host clock: the wait is a host-side stall whatever the device). The sampler draws with
replacement from an effectively endless stream, so no epoch boundary (worker restart) lands inside
a timed window.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from bench.results.errors import BenchError, first_line
from bench.results.schema import device_kind

SYNTHETIC_IMAGES = 64  # distinct JPEGs in the in-memory set (cycled through, each cropped anew)
SOURCE_HW = (375, 500)  # pixels, height x width: a typical ImageNet photo
JPEG_QUALITY = 90
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENDLESS = 2**31 - 1  # samples the sampler will draw: never reached by a measurement

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a dependency here) and
# warns on every call; in a worker that is one warning per sample.
warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)

_jpeg_cache: dict[tuple[int, tuple[int, int], int], list[Any]] = {}


def synthetic_jpegs(
    count: int = SYNTHETIC_IMAGES, source_hw: tuple[int, int] = SOURCE_HW, seed: int = 0
) -> list[Any]:
    """``count`` JPEG-encoded RGB images (1-D uint8 tensors), encoded once per process.

    Smooth pictures with some texture compress like photos (white noise would make files several
    times larger and decoding slower than real data). One canvas twice the size is drawn once; each
    image is a different window of it, so building the set costs little beyond the encoding."""
    key = (count, source_hw, seed)
    if key not in _jpeg_cache:
        import torch
        from torchvision.io import encode_jpeg

        gen = torch.Generator().manual_seed(seed)
        h, w = source_hw
        coarse = torch.rand((1, 3, max(h // 8, 2), max(w // 8, 2)), generator=gen)
        canvas = torch.nn.functional.interpolate(
            coarse, size=(2 * h, 2 * w), mode="bilinear", align_corners=False
        )
        canvas = canvas[0] + 0.08 * torch.rand((3, 2 * h, 2 * w), generator=gen)  # texture
        canvas = (canvas.clamp(0, 1) * 255).to(torch.uint8)
        offsets = torch.randint(0, min(h, w) + 1, (count, 2), generator=gen).tolist()
        _jpeg_cache[key] = [
            encode_jpeg(canvas[:, dy : dy + h, dx : dx + w].contiguous(), quality=JPEG_QUALITY)
            for dy, dx in offsets
        ]
    return _jpeg_cache[key]


def train_transform(image_size: int) -> Any:
    """The usual ImageNet training augmentation, on uint8 CHW tensors."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class JpegDataset:
    """Map-style dataset over in-memory JPEG bytes: decode + augment per sample (in a worker)."""

    def __init__(self, jpegs: list[Any], num_classes: int, transform: Any) -> None:
        self.jpegs = jpegs
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.io import ImageReadMode, decode_jpeg

        img = decode_jpeg(self.jpegs[index], mode=ImageReadMode.RGB)
        return self.transform(img), index % self.num_classes


def image_folder(data_dir: str, transform: Any) -> Any:
    """An ImageFolder tree (one folder per class) decoded with torchvision.io, as JpegDataset does."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, decode_image, read_file

    if not os.path.isdir(data_dir):
        raise BenchError(f"--data-dir {data_dir}: no such directory (an ImageFolder: one folder per class)")

    def load(path: str) -> Any:
        try:
            return decode_image(read_file(path), mode=ImageReadMode.RGB)
        except RuntimeError as exc:  # torchvision's word for a file it cannot decode
            raise BenchError(f"--data-dir: cannot decode {path} ({first_line(exc)})") from None

    try:
        return ImageFolder(data_dir, transform=transform, loader=load)
    except (FileNotFoundError, RuntimeError) as exc:
        raise BenchError(f"--data-dir {data_dir}: not an ImageFolder tree ({exc})") from None


def make_loader(dataset: Any, batch_size: int, *, workers: int, pin_memory: bool, seed: int = 0) -> Any:
    """A DataLoader drawing ``batch_size`` samples per step, endlessly, with ``workers`` processes."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    sampler = RandomSampler(
        dataset, replacement=True, num_samples=ENDLESS, generator=torch.Generator().manual_seed(seed)
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )


def _from_worker(exc: Exception) -> Exception:
    """A worker's exception as its own one line: DataLoader re-raises it here as "Caught X in
    DataLoader worker process N." followed by the worker's traceback, whose last line is the cause."""
    text = str(exc).strip()
    if "DataLoader worker process" not in text:
        return exc
    cause = text.splitlines()[-1]
    if isinstance(exc, BenchError):
        return BenchError(cause.partition(": ")[2] or cause)
    return RuntimeError(f"in a DataLoader worker: {cause}")


class DataFeed:
    """Hands the step its next device batch and records the seconds each fetch waited."""

    def __init__(
        self,
        loader: Any,
        device: str,
        *,
        channels_last: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.loader = loader
        self.device = device
        self.channels_last = channels_last
        self.clock = clock
        self.wait_seconds: list[float] = []  # one per next(), in order
        self._it: Any = None

    def next(self) -> tuple[Any, Any]:
        t0 = self.clock()
        if self._it is None:
            self._it = iter(self.loader)
        try:
            x, y = next(self._it)
        except Exception as exc:
            raise _from_worker(exc) from None
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            import torch

            x = x.contiguous(memory_format=torch.channels_last)
        self.wait_seconds.append(self.clock() - t0)
        return x, y

    def close(self) -> None:
        """Stop the workers now (rather than at garbage collection)."""
        self._it = None
        self.loader = None


def open_feed(
    *,
    batch_size: int,
    image_size: int,
    num_classes: int,
    workers: int,
    device: str,
    data_dir: str | None = None,
    channels_last: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    jpegs: list[Any] | None = None,
) -> DataFeed:
    """The feed ``--data loader`` trains from: an ImageFolder when ``data_dir`` is given, else the
    in-memory synthetic JPEG set (or the ``jpegs`` passed)."""
    transform = train_transform(image_size)
    if data_dir is not None:
        dataset = image_folder(data_dir, transform)
    else:
        dataset = JpegDataset(jpegs if jpegs is not None else synthetic_jpegs(), num_classes, transform)
    loader = make_loader(dataset, batch_size, workers=workers, pin_memory=device_kind(device) == "cuda")
    return DataFeed(loader, device, channels_last=channels_last, clock=clock)


def parse_workers(text: str) -> list[int]:
    """'4' -> [4]; '0,2,4' -> [0, 2, 4]; BenchError on anything else."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--workers {text!r}: use a number or a list such as 0,2,4") from None
    if not values or any(v < 0 for v in values):
        raise BenchError(f"--workers {text!r}: worker counts must be >= 0")
    return values
