"""The benchmark scripts remove what they write unless --keep (issue 18, item 6).

No benchmark runs here but one tiny local-mode run of benchmarks/calibration.py's store: the
others start servers, spawn processes or write gigabytes on purpose."""

from __future__ import annotations

import argparse
import ast
import importlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import _scratch
from benchmarks._scratch import scratch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# Every script that writes a file or a folder, by module; rng and scheme_stats write nothing.
WRITERS = [
    "benchmarks.calibration",
    "benchmarks.conformance",
    "benchmarks.e2e",
    "benchmarks.hostile.__main__",
    "benchmarks.inplace",
    "benchmarks.llama7b",
    "benchmarks.load",
    "benchmarks.request_path",
    "benchmarks.sharded",
]


@pytest.mark.parametrize("module", WRITERS)
def test_every_script_that_writes_takes_keep_off_by_default(module: str) -> None:
    build_parser: Callable[[], argparse.ArgumentParser] = importlib.import_module(module).build_parser
    assert build_parser().parse_args([]).keep is False
    assert build_parser().parse_args(["--keep"]).keep is True


def test_no_script_makes_a_temporary_folder_but_through_scratch() -> None:
    """tempfile.mkdtemp (never removed) or a folder made elsewhere would escape --keep: every
    benchmark module that names `tempfile` is _scratch.py itself."""
    naming = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if "tempfile" in names | modules:
            naming.append(path.relative_to(BENCHMARKS).as_posix())
    assert naming == ["_scratch.py"]


def test_scratch_removes_its_folder_on_return_failure_and_ctrl_c(tmp_path: Path) -> None:
    made = []
    with scratch("bench-", keep=False, parent=tmp_path) as folder:
        (folder / "store" / "jobs").mkdir(parents=True)
        (folder / "store" / "jobs" / "weights.safetensors").write_bytes(b"\0" * 4096)
        made.append(folder)
    for failure in (RuntimeError("the job failed"), KeyboardInterrupt()):
        with pytest.raises(type(failure)), scratch("bench-", keep=False, parent=tmp_path) as folder:
            (folder / "data").write_text("x")
            made.append(folder)
            raise failure
    assert len(set(made)) == 3 and all(folder.parent == tmp_path for folder in made)
    assert list(tmp_path.iterdir()) == []


def test_scratch_with_keep_leaves_the_folder_and_prints_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with scratch("bench-", keep=True, parent=tmp_path) as folder:
        (folder / "data").write_text("x")
    assert (folder / "data").read_text() == "x"
    assert capsys.readouterr().err == f"kept {folder} (--keep)\n"


def test_scratch_never_removes_a_folder_the_user_named(tmp_path: Path) -> None:
    given = tmp_path / "mine"
    given.mkdir()
    with pytest.raises(RuntimeError), scratch("bench-", keep=False, given=str(given)) as folder:
        assert folder == given
        (folder / "data").write_text("x")
        raise RuntimeError("the job failed")
    assert (given / "data").read_text() == "x"


def test_a_failed_removal_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("shutil.rmtree", refuse)
    _scratch.remove(tmp_path)
    assert (
        capsys.readouterr().err
        == f"could not remove {tmp_path}: [Errno 13] Permission denied: '{tmp_path}'; remove it by hand\n"
    )
    assert tmp_path.is_dir()


def test_a_tiny_calibration_run_leaves_nothing_in_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two local-mode jobs (one MLP, one CNN) into calibration's store: the store held both jobs'
    files when it was removed, and the temp folder is empty after."""
    from benchmarks.calibration import run_false_flag_jobs

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    removed: dict[Path, list[str]] = {}
    real_remove = _scratch.remove

    def spy(path: Path) -> None:
        removed[path] = sorted(p.name for p in path.glob("jobs/*/weights.safetensors"))
        real_remove(path)

    monkeypatch.setattr(_scratch, "remove", spy)
    groups = run_false_flag_jobs(random.Random(15), seeds_per_row=0, jobs=1)
    assert [groups[g].jobs for g in ("conformance matrix", "MLP", "CNN")] == [0, 1, 1]
    assert [path.parent for path in removed] == [tmp_path]
    assert list(removed.values()) == [["weights.safetensors"] * 2]
    assert list(tmp_path.iterdir()) == []
