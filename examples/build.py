"""Package the example models as SageMaker-style model.tar.gz files under examples/build/.

    python examples/build.py

Trains the scikit-learn model first if examples/build/sklearn/model/model.joblib is
missing. Archives are deterministic (sorted members, fixed times, owners and modes), so
rebuilding unchanged models gives byte-identical tarballs.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
BUILD = EXAMPLES / "build"


def _add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for child in sorted(path.iterdir()):
            if child.name == "__pycache__":
                continue
            _add(tar, child, f"{name}/{child.name}")
        return
    data = path.read_bytes()
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def package(model_files: list[Path], code_dir: Path, output: Path) -> Path:
    """model files at the archive root, ``code/`` inside, as SageMaker expects."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(model_files):
            _add(tar, path, path.name)
        _add(tar, code_dir, "code")
    output.parent.mkdir(parents=True, exist_ok=True)
    compressed = gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)
    output.write_bytes(compressed)
    return output


def build(build_dir: Path = BUILD) -> list[Path]:
    model_dir = build_dir / "sklearn" / "model"
    if not (model_dir / "model.joblib").exists():
        sys.path.insert(0, str(EXAMPLES / "sklearn"))
        from train import train

        train(model_dir)
    return [
        package([], EXAMPLES / "echo" / "code", build_dir / "echo" / "model.tar.gz"),
        package(
            [model_dir / "model.joblib"],
            EXAMPLES / "sklearn" / "code",
            build_dir / "sklearn" / "model.tar.gz",
        ),
    ]


if __name__ == "__main__":
    for archive in build(Path(sys.argv[1]) if len(sys.argv) > 1 else BUILD):
        print(f"built {archive}")
