"""The package as users get it: a wheel and an sdist from ``python -m build``, the wheel installed
into a fresh virtual environment, its command-line tool run and a tiny model trained."""

import subprocess
import sys
import zipfile

import pytest

import pyrovae
from pathlib import Path

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend already installed here (no download in CI)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return out


def test_wheel_and_sdist_carry_the_package_and_its_data(dist):
    wheels = list(dist.glob("pyrovae-*.whl"))
    sdists = list(dist.glob("pyrovae-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    assert f"pyrovae-{pyrovae.__version__}-" in wheels[0].name  # the version lives in one place
    names = zipfile.ZipFile(wheels[0]).namelist()
    for module in ("pyrovae/__init__.py", "pyrovae/py.typed", "pyrovae/infer/weights.py", "pyrovae/train/trainer.py"):
        assert module in names, module
    assert any(name.endswith("entry_points.txt") for name in names)


def test_the_wheel_installs_into_a_fresh_environment_and_trains(dist, tmp_path, binary_npy):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, tool = venv / "bin" / "python", venv / "bin" / "pyrovae"
    # The dependencies (torch, pyro) come from the site-packages of the interpreter running the
    # tests, which in a virtual environment are not the base interpreter's (what
    # --system-site-packages would give): their folders go behind the new environment's own, as
    # plain path lines, so no .pth of theirs (an editable pyrovae) runs and the wheel comes first.
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    outer = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (Path(inner) / "outer-site-packages.pth").write_text("".join(p + "\n" for p in outer))
    wheel = next(dist.glob("pyrovae-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True)
    where = subprocess.run([str(python), "-c", "import pyrovae; print(pyrovae.__file__)"], check=True,
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(venv) in where, f"pyrovae imported from {where}, not the wheel"
    version = subprocess.run([str(tool), "--version"], check=True, capture_output=True, text=True).stdout
    assert version.strip() == f"pyrovae {pyrovae.__version__}"
    assert "train" in subprocess.run([str(tool), "--help"], check=True, capture_output=True, text=True).stdout
    out = tmp_path / "run"
    subprocess.run([str(tool), "train", "--dataset", str(binary_npy), "--epochs", "1", "--hidden", "8", "--out", str(out),
                    "--no-progress", "--device", "cpu"], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert (out / "checkpoint.pt").is_file() and (out / "manifold.png").is_file()
