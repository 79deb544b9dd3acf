"""`exporter check-data`: every planted problem named by file on one line, the class table, exit codes."""

import json

import numpy as np
import pytest

from calibration.audit import audit
from calibration.sources import load_splits
from exporter.errors import DataError
from tests.conftest import write_png

H, W = 32, 40


def _mask(i: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4:20, 4 + i:24 + i] = 1
    mask[22:, :] = 2
    mask[0, 0] = 255  # ignore: never a problem
    return mask


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _good(root, stem: str, i: int = 0) -> None:
    write_png(root / "images" / f"{stem}.png", _image(i))
    write_png(root / "masks" / f"{stem}.png", _mask(i))


@pytest.fixture
def planted(tmp_path):
    """A folder with three good pairs and one of each problem; returns (root, {file: what}, planted)."""
    root = tmp_path / "data"
    for i in range(3):
        _good(root, f"good{i}", i)
    _good(root, "corrupt", 3)
    (root / "images" / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(300))
    write_png(root / "images" / "lonely.png", _image(4))  # no mask
    write_png(root / "masks" / "orphan.png", _mask(5))  # no image
    write_png(root / "images" / "small.png", _image(6))
    write_png(root / "masks" / "small.png", np.zeros((20, 20), np.uint8))  # size mismatch
    write_png(root / "images" / "rgb.png", _image(7))
    colours = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0]], np.uint8)
    write_png(root / "masks" / "rgb.png", colours[_mask(7) % 3])  # an RGB rendering of the classes
    _good(root, "label7", 8)
    write_png(root / "masks" / "label7.png", np.where(_mask(8) == 2, 7, _mask(8)).astype(np.uint8))
    _good(root, "dup", 9)
    write_png(root / "images" / "dup.jpg", _image(9))  # shares the stem of dup.png
    planted = {
        root / "images" / "corrupt.png": "unreadable image",
        root / "images" / "lonely.png": "image has no mask",
        root / "masks" / "orphan.png": "mask has no image",
        root / "masks" / "small.png": "mask is 20x20 but its image small.png is 40x32",
        root / "masks" / "rgb.png": "RGB mask",
        root / "masks" / "label7.png": "label value(s) 7 outside 0..2",
        root / "images" / "dup.png": "two files share the stem 'dup' (dup.jpg)",
    }
    return root, planted


def test_check_data_names_every_planted_problem_once(planted, run_cli, tmp_path):
    root, problems = planted
    report = tmp_path / "audit.json"
    result = run_cli("check-data", str(root), "--classes", "3", "--json", str(report))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for path, what in problems.items():
        hits = [line for line in lines if line.startswith(f"{path}: ")]
        assert len(hits) == 1 and what in hits[0], (path, hits, result.stdout)
    problem_lines = [line for line in lines if line.startswith(str(root))]
    assert len(problem_lines) == len(problems), result.stdout  # nothing else reported, no good file named
    assert not any("good" in line for line in problem_lines)
    assert "Traceback" not in result.stderr
    assert f"{len(problems)} problem(s) in {len(problems)} file(s)" in result.stdout
    saved = json.loads(report.read_text())
    assert not saved["usable"] and len(saved["problems"]) == len(problems)
    assert {p["kind"] for p in saved["problems"]} == {
        "unreadable", "no-mask", "no-image", "size", "rgb-mask", "labels", "duplicate"}


def test_clean_folder_is_usable_and_gets_the_class_table(tmp_path, run_cli):
    root = tmp_path / "clean"
    for i in range(4):
        _good(root, f"img{i}", i)
    (root / "labels.txt").write_text("sky\nball\nroad\ncar\n")
    result = run_cli("check-data", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "4 pair(s), 4 classes (from labels.txt)" in out and "usable: no problems found" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])}
    assert rows["sky"][-1] == "4" and rows["road"][2] == f"{4 * (H - 22) * W:,d}"
    assert rows["car"][2] == "0" and "classes never seen: 3 car" in out
    assert "(ignore)" in out


def test_usage_errors_exit_2_with_one_line(tmp_path, run_cli):
    result = run_cli("check-data", str(tmp_path / "nope"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: data folder not found"]
    _good(tmp_path / "d", "a")
    result = run_cli("check-data", str(tmp_path / "d"), "--classes", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--classes must be between 2 and 255" in result.stderr
    with pytest.raises(DataError, match="unknown data layout"):  # a folder, but no data layout (exit 2 too)
        audit(str(tmp_path), progress=False)


def test_audit_in_process_threads_match_processes(planted):
    root, problems = planted
    by_threads = audit(str(root), 3, workers=2, pool="thread", progress=False)
    by_processes = audit(str(root), 3, workers=2, pool="process", progress=False)
    assert by_threads.problems == by_processes.problems
    assert {p.path for p in by_threads.problems} == {str(p) for p in problems}
    assert [r.pixels for r in by_threads.classes] == [r.pixels for r in by_processes.classes]
    assert by_threads.pairs == 8  # good0-2, corrupt, small, rgb, label7, dup


def test_inferred_classes_nan_and_bilevel_masks(tmp_path):
    from PIL import Image

    root = tmp_path / "d"
    _good(root, "a", 0)
    arr = np.full((H, W), 0.5, np.float32)
    arr[1, 1] = np.inf
    Image.fromarray(arr, mode="F").save(root / "images" / "b.tiff")
    Image.fromarray(_mask(1) == 1).save(root / "masks" / "b.png")  # mode "1": read as 0/1, not 0/255
    result = audit(str(root), pool="thread", progress=False)
    assert [p.message for p in result.problems] == [f"{root / 'images' / 'b.tiff'}: contains 1 NaN or infinite value(s)"]
    assert len(result.labels) == 3 and "largest label" in result.classes_from
    assert Image.open(root / "masks" / "b.png").mode == "1"


def test_pet_and_voc_layouts_follow_the_loaders(tmp_path):
    pet = tmp_path / "pet"
    for i in range(2):
        write_png(pet / "images" / f"cat_{i}.jpg", _image(i))
        write_png(pet / "annotations" / "trimaps" / f"cat_{i}.png", (_mask(i) % 3 + 1).astype(np.uint8))
    result = audit(str(pet), 5, pool="thread", progress=False)
    assert result.usable and [r.name for r in result.classes] == ["pet", "background", "border"]
    assert result.notes and "--classes 5 ignored" in result.notes[0]
    voc = tmp_path / "voc"
    for stem in ("2007_000001", "2007_000002"):
        write_png(voc / "JPEGImages" / f"{stem}.jpg", _image(0))
        write_png(voc / "SegmentationClass" / f"{stem}.png", np.where(_mask(0) == 2, 15, _mask(0)).astype(np.uint8))
    write_png(voc / "JPEGImages" / "2007_000099.jpg", _image(1))  # no mask: not used, no problem
    result = audit(str(voc), pool="thread", progress=False)
    assert result.usable and result.pairs == 2 and result.classes[15].images == 2


def test_loaders_share_the_rgb_mask_decision(tmp_path):
    root = tmp_path / "d"
    for i in range(3):
        _good(root, f"img{i}", i)
    grey = np.repeat(_mask(0)[..., None], 3, axis=2)
    write_png(root / "masks" / "img0.png", grey)  # grey saved as RGB: lossless, accepted
    assert audit(str(root), pool="thread", progress=False).usable
    grey[0, 1] = [10, 0, 0]
    write_png(root / "masks" / "img0.png", grey)
    with pytest.raises(DataError, match=r"img0.png: RGB mask"):
        load_splits(str(root), (16, 16), 3)
