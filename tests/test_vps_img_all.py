"""``videoda vps-img-all``: Cityscapes-VPS train/img_all/ built from Cityscapes' leftImg8bit_sequence."""

import cv2
import numpy as np
import pytest

from videoda.cli import main
from videoda.data import cityscapes_vps
from videoda.data.vps_img_all import build_img_all
from videoda.errors import DataError

H, W = 8, 12


def frame(n):
    return np.full((H, W, 3), n % 251, np.uint8) + np.arange(W, dtype=np.uint8)[None, :, None]


def write_cityscapes(root, city, seq, numbers, split="val"):
    folder = root / "leftImg8bit_sequence" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        cv2.imwrite(str(folder / f"{city}_{seq}_{n:06d}_leftImg8bit.png"), frame(n))


def write_vps_clip(root, clip, city, seq, annotated, cityscapes_frame=None, split="train"):
    """A Cityscapes-VPS train clip as published: only its annotated frames in img/ and labelmap/; the one taken
    from Cityscapes is named leftImg8bit (label gtFine_color), the others newImg8bit (final_mask)."""
    for k, n in enumerate(annotated):
        kind = "leftImg8bit" if n == cityscapes_frame else "newImg8bit"
        stem = f"{clip:04d}_{clip * 6 + k:04d}_{city}_{seq}_{n:06d}_{kind}"
        for folder in ("img", "labelmap"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / split / "img" / f"{stem}.png"), frame(n))
        cv2.imwrite(str(root / split / "labelmap" / cityscapes_vps.label_name(stem)), np.zeros((H, W), np.uint8))


@pytest.fixture
def roots(tmp_path):
    cs, vps = tmp_path / "cityscapes", tmp_path / "cityscapes_vps"
    # Clip 1: frankfurt snippet 275..304 (Cityscapes annotated its 20th frame, 294); neighbours exist around it.
    write_cityscapes(cs, "frankfurt", "000000", range(265, 320))
    write_vps_clip(vps, 1, "frankfurt", "000000", range(279, 305, 5), cityscapes_frame=294)
    # Clip 2: newImg8bit frames only, annotated every 5th frame, the 5th to the 30th (frames 4..29).
    write_cityscapes(cs, "lindau", "000001", range(0, 30))
    write_vps_clip(vps, 2, "lindau", "000001", range(4, 30, 5))
    return cs, vps


@pytest.mark.parametrize("cityscapes_layout", ["root", "leftImg8bit_sequence"])
def test_builds_every_frame_of_each_clip(roots, cityscapes_layout):
    cs, vps = roots
    source = cs if cityscapes_layout == "root" else cs / "leftImg8bit_sequence"
    assert build_img_all(vps, source) == (2, 60)
    names = sorted(p.name for p in (vps / "train" / "img_all").iterdir())
    assert names == sorted([f"frankfurt_000000_{n:06d}_leftImg8bit.png" for n in range(275, 305)] +
                           [f"lindau_000001_{n:06d}_leftImg8bit.png" for n in range(30)])
    for name in names[:3] + names[-3:]:
        city = name.split("_")[0]
        assert (vps / "train" / "img_all" / name).read_bytes() == \
            (cs / "leftImg8bit_sequence" / "val" / city / name).read_bytes()
    # the reader now sees 30-frame clips with their 6 annotated frames
    specs = cityscapes_vps.list_clips(vps, "train")
    assert [(s.name, len(s), sum(p is not None for p in s.labels)) for s in specs] == [("0001", 30, 6),
                                                                                    ("0002", 30, 6)]
    assert specs[0].frame_names[0] == "frankfurt_000000_000275_leftImg8bit"
    assert not [p for p in (vps / "train").iterdir() if p.name.startswith(".img_all")]


def test_a_missing_cityscapes_frame_names_it_and_writes_nothing(roots):
    cs, vps = roots
    (cs / "leftImg8bit_sequence" / "val" / "frankfurt" / "frankfurt_000000_000300_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match=r"frankfurt_000000_000300_leftImg8bit.png: Cityscapes frame not found "
                                        r"\(frame 26 of 30 of Cityscapes-VPS clip 0001\)"):
        build_img_all(vps, cs)
    assert sorted(p.name for p in (vps / "train").iterdir()) == ["img", "labelmap"]


def test_bad_inputs(roots, tmp_path):
    cs, vps = roots
    with pytest.raises(DataError, match="nowhere: neither a Cityscapes root"):
        build_img_all(vps, tmp_path / "nowhere")
    with pytest.raises(DataError, match="img: Cityscapes-VPS split folder not found"):
        build_img_all(vps, cs, split="test")
    write_vps_clip(vps, 3, "munster", "000002", [24, 29])
    with pytest.raises(DataError, match=r"munster: city folder not found"):
        build_img_all(vps, cs)
    write_cityscapes(cs, "munster", "000002", range(0, 60))
    write_vps_clip(vps, 3, "munster", "000002", [50], cityscapes_frame=50)   # 50 - 19 = 31: 24 and 29 fall outside
    with pytest.raises(DataError, match=r"clip 0003's annotated frames \[24, 29, 50\] do not fit"):
        build_img_all(vps, cs)


def test_cli_builds_once_and_reports_errors_on_one_line(roots, capsys):
    cs, vps = roots
    assert main(["vps-img-all", "--vps", str(vps), "--cityscapes", str(cs), "--link"]) == 0
    assert "2 clips, 60 frames" in capsys.readouterr().out
    assert main(["vps-img-all", "--vps", str(vps), "--cityscapes", str(cs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "img_all: already exists" in err and err.count("\n") == 1
    assert main(["vps-img-all", "--vps", str(vps), "--cityscapes", str(cs), "--overwrite"]) == 0
    assert len(list((vps / "train" / "img_all").iterdir())) == 60
