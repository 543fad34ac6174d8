"""TensorRT engine (FP16, fixed shapes) built from an exported bundle, written beside it.

Built with the ``tensorrt`` Python API when it imports, else with ``trtexec`` when it is on PATH;
neither present means no engine (the caller says so and skips). An engine only runs on the
TensorRT version and GPU it was built for, so a JSON sidecar records both, with the sha256 of the
ONNX bundle it came from. The bedside does not need the engine file: onnxruntime's TensorRT
provider builds its own into the engine cache directory. This file is for native TensorRT runtimes
and for timing the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from export.bundle_writer import atomic_write
from export.onnx_export import INPUT_NAME


class TensorRTUnavailable(Exception):
    """Neither the tensorrt Python package nor trtexec is installed here."""


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built from and for (written as ``<engine>.json``)."""

    engine: str
    onnx_sha256: str
    tensorrt_version: str
    builder: str  # "python-api" or "trtexec"
    gpu: str
    compute_capability: str
    precision: str
    input_shape: list[int]
    build_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def tensorrt_backend() -> str:
    """``"python-api"`` or ``"trtexec"``; raises TensorRTUnavailable saying what is missing."""
    try:
        import tensorrt  # noqa: F401

        return "python-api"
    except ImportError:
        pass
    if shutil.which("trtexec"):
        return "trtexec"
    raise TensorRTUnavailable("TensorRT is not installed here (no `tensorrt` Python package, no `trtexec` on "
                              "PATH); TensorRT engine skipped. Build it on the target GPU machine with "
                              "`trainer export ... --tensorrt`, or let onnxruntime's TensorRT provider build "
                              "it into its engine cache at install time")


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of device 0 via nvidia-smi; ("unknown", "unknown") if absent."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        name, cap = (v.strip() for v in out.splitlines()[0].split(",", 1))
        return name, cap
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return "unknown", "unknown"


def _build_python(onnx_path: Path, engine_path: Path, shape: list[int], fp16: bool, workspace_mib: int) -> str:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8; implicit in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shape, shape, shape)  # fixed shapes: min = opt = max
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    engine_path.write_bytes(bytes(engine))
    return trt.__version__


def _build_trtexec(onnx_path: Path, engine_path: Path, shape: list[int], fp16: bool, workspace_mib: int) -> str:
    dims = "x".join(str(d) for d in shape)
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", f"--shapes={INPUT_NAME}:{dims}",
           f"--memPoolSize=workspace:{workspace_mib}"] + (["--fp16"] if fp16 else [])  # pool size in MiB
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"trtexec failed ({run.returncode}): {run.stdout[-2000:]}{run.stderr[-2000:]}")
    version = next((line.split("TensorRT version:")[-1].strip() for line in run.stdout.splitlines()
                    if "TensorRT version:" in line), "unknown")
    return version


def build_engine(onnx_path: str | Path, engine_path: str | Path, batch: int = 1, leads: int = 12,
                 samples: int = 1000, fp16: bool = True, workspace_mib: int = 1024) -> EngineInfo:
    """Build a fixed-shape engine and its JSON sidecar (both written atomically); returns the info."""
    backend = tensorrt_backend()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    shape = [batch, leads, samples]
    fd, tmp = tempfile.mkstemp(prefix=f".{engine_path.name}.", suffix=".tmp", dir=engine_path.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        t0 = time.perf_counter()
        build = _build_python if backend == "python-api" else _build_trtexec
        version = build(onnx_path, Path(tmp), shape, fp16, workspace_mib)
        build_s = time.perf_counter() - t0
        gpu, cap = gpu_identity()
        info = EngineInfo(engine=engine_path.name, onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                          tensorrt_version=version, builder=backend, gpu=gpu, compute_capability=cap,
                          precision="fp16" if fp16 else "fp32", input_shape=shape, build_s=round(build_s, 2))
        os.replace(tmp, engine_path)
        atomic_write(engine_path.with_name(engine_path.name + ".json"),
                     (json.dumps(info.to_dict(), indent=2) + "\n").encode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info
