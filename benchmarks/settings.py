"""Every knob of a benchmark run, with the full and the --quick profile."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SECTIONS = ("forward", "scan", "memory", "gpu")


@dataclass
class Settings:
    quick: bool = False
    threads: int | None = None          # None: torch's default
    device: str = "auto"
    timeout_s: float | None = 3600.0    # per child process
    compile: bool = False               # also torch.compile'd forwards; scan --compile

    # forward
    configs: list[str] = field(default_factory=lambda: ["m2sformer-b0", "m2sformer-b1",
                                                         "m2sformer-b2"])
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    warmup: int = 2
    repeats: int = 5
    min_time_s: float = 1.0             # each timed sample lasts at least this long
    matmul_size: int | None = None      # None: 2048 on CPU, 8192 on a GPU
    matmul_repeats: int = 7
    matmul_min_time_s: float = 0.3

    # scan
    config: str = "m2sformer-b2"
    input_size: int = 256
    images: int = 200
    image_height: int = 768
    image_width: int = 1024
    workers: int = 2
    batch_size: int = 8

    # memory
    memory_config: str | None = None    # None: same as `config`
    memory_shapes: list[tuple[int, int]] = field(
        default_factory=lambda: [(1024, 1024), (4096, 4096), (6000, 8000)])  # (height, width)
    memory_modes: list[str] = field(default_factory=lambda: ["resize", "tile"])
    memory_workers: int | None = None   # None: same as `workers`

    # gpu
    gpu_config: str = "m2sformer-b2"
    gpu_sizes: list[int] = field(default_factory=lambda: [256, 512])
    gpu_batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    gpu_dtypes: list[str] = field(default_factory=lambda: ["float32", "float16", "bfloat16"])

    def resolved(self) -> "Settings":
        values = dataclasses.replace(self)
        if values.memory_config is None:
            values.memory_config = values.config
        if values.memory_workers is None:
            values.memory_workers = values.workers
        return values

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# A smoke test: every code path once, seconds on a busy two-core machine.
# One thread: on a machine whose cores are all busy (CI, a training job), two OpenMP threads
# fighting for them ran the forward 60x slower than one.
QUICK = dict(
    quick=True, threads=1, timeout_s=120.0,
    configs=["m2sformer-b0"], sizes=[64], batch_sizes=[1, 2], warmup=1, repeats=2,
    min_time_s=0.0, matmul_size=256, matmul_repeats=2, matmul_min_time_s=0.0,
    config="m2sformer-b0", input_size=64, images=4, image_height=192, image_width=256,
    workers=0, batch_size=2,
    memory_shapes=[(120, 160)], memory_workers=0,
    gpu_config="m2sformer-b0", gpu_sizes=[64], gpu_batch_sizes=[2],
)
