"""Build Cityscapes-VPS ``<split>/img_all/`` (every frame of each 30-frame clip) from Cityscapes' video frames.

Cityscapes-VPS ships every frame (``img_all/``) only for val and test; its train split holds only the 6 annotated
frames of each clip (``img/``), while VST needs the neighbours. The frames are Cityscapes' own:

    <cityscapes>/leftImg8bit_sequence/<cs_split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png

(``leftImg8bit_sequence_trainvaltest.zip``: for each finely annotated Cityscapes image, the 30-frame snippet
around it, whose 20th frame is the annotated one). ``<cityscapes>`` may be the Cityscapes root or its
``leftImg8bit_sequence`` folder; the city's folder is looked up in every split there, as Cityscapes-VPS takes its
clips from Cityscapes' val sequences whatever its own split is called.

What this relies on, from the Cityscapes-VPS names (``videoda.data.cityscapes_vps``):
``img/<clip>_<n>_<city>_<seq>_<frame>_{leftImg8bit,newImg8bit}.png`` names the Cityscapes frame
``<city>_<seq>_<frame>`` of each annotated frame; the one frame named ``leftImg8bit`` is the frame taken from
Cityscapes, the 20th of the snippet, so the clip is frames ``frame - 19 .. frame + 10``. A clip without one
(``newImg8bit`` only) ends at its last annotated frame (Cityscapes-VPS annotates every 5th frame, the 5th to
the 30th). Every annotated frame must fall in the window. The output, ``img_all/<city>_<seq>_<frame>_leftImg8bit.png``,
is what VPSNet ships for val: the same name as Cityscapes' file.
"""

import os
import shutil
from collections import defaultdict
from pathlib import Path

from videoda.data.cityscapes_vps import _ANNOTATED
from videoda.errors import DataError
from videoda.utils.io import atomic_path

CLIP_FRAMES = 30          # frames per Cityscapes-VPS clip (a Cityscapes snippet)
CITYSCAPES_INDEX = 19     # index in the snippet of the frame Cityscapes annotated (its 20th)


def _annotated_clips(img_dir):
    """{clip id: [(city, seq, frame, kind, path)]} of the annotated frames in ``img_dir``."""
    clips = defaultdict(list)
    for path in sorted(img_dir.glob("*.png")):
        m = _ANNOTATED.fullmatch(path.stem)
        if m is None:
            raise DataError(f"{path}: not a Cityscapes-VPS annotated frame name "
                            f"(<clip>_<n>_<city>_<seq>_<frame>_leftImg8bit|newImg8bit.png)")
        clip, _, city, seq, frame, kind = m.groups()
        clips[clip].append((city, seq, frame, kind, path))
    if not clips:
        raise DataError(f"{img_dir}: no annotated frames found")
    return clips


def clip_window(clip, frames):
    """(city, seq, first frame number, zero padding) of the 30 Cityscapes frames of one clip."""
    length = CLIP_FRAMES
    where = frames[0][4]
    if len({(city, seq) for city, seq, *_ in frames}) != 1:
        raise DataError(f"{where}: clip {clip} mixes several Cityscapes sequences")
    city, seq = frames[0][:2]
    numbers = sorted(int(f[2]) for f in frames)
    anchors = [int(f[2]) for f in frames if f[3] == "leftImg8bit"]
    if len(anchors) > 1:
        raise DataError(f"{where}: clip {clip} has {len(anchors)} frames taken from Cityscapes (leftImg8bit), "
                        f"expected one")
    first = anchors[0] - CITYSCAPES_INDEX if anchors else numbers[-1] - (length - 1)
    outside = [n for n in numbers if not first <= n < first + length]
    if first < 0 or outside:
        raise DataError(f"{where}: clip {clip}'s annotated frames {numbers} do not fit one {length}-frame window "
                        f"(frames {first}..{first + length - 1})")
    return city, seq, first, len(frames[0][2])


def _sequence_root(cityscapes_root):
    """The ``leftImg8bit_sequence`` folder: under the Cityscapes root, or the given folder itself."""
    root = Path(cityscapes_root)
    if (root / "leftImg8bit_sequence").is_dir():
        return root / "leftImg8bit_sequence"
    if any((root / split).is_dir() for split in ("train", "val", "test")):
        return root
    raise DataError(f"{root}: neither a Cityscapes root holding leftImg8bit_sequence/ nor that folder itself")


def _city_dir(seq_root, city):
    found = [d for d in sorted(seq_root.glob(f"*/{city}")) if d.is_dir()]
    if not found:
        raise DataError(f"{seq_root}/<split>/{city}: city folder not found in leftImg8bit_sequence "
                        f"(splits there: {sorted(p.name for p in seq_root.iterdir() if p.is_dir())})")
    if len(found) > 1:
        raise DataError(f"{found[0]}: city {city} is in several splits ({[d.parent.name for d in found]})")
    return found[0]


def plan_img_all(vps_root, cityscapes_root, split="train"):
    """[(Cityscapes source file, img_all file name)] for every frame of every clip of ``vps_root/split``; a
    missing Cityscapes frame is a DataError naming it (and the clip), before anything is written."""
    split_dir = Path(vps_root) / split
    img_dir = split_dir / "img"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: Cityscapes-VPS split folder not found")
    seq_root = _sequence_root(cityscapes_root)
    plan, cities, names = [], {}, set()
    for clip, frames in sorted(_annotated_clips(img_dir).items()):
        city, seq, first, width = clip_window(clip, frames)
        length = CLIP_FRAMES
        if city not in cities:
            cities[city] = _city_dir(seq_root, city)
        for n in range(first, first + length):
            name = f"{city}_{seq}_{n:0{width}d}_leftImg8bit.png"
            source = cities[city] / name
            if not source.is_file():
                raise DataError(f"{source}: Cityscapes frame not found (frame {n - first + 1} of {length} of "
                                f"Cityscapes-VPS clip {clip})")
            if name in names:
                raise DataError(f"{source}: frame belongs to two Cityscapes-VPS clips (the second: {clip})")
            names.add(name)
            plan.append((source, name))
    return plan


def build_img_all(vps_root, cityscapes_root, split="train", link=False, overwrite=False):
    """Write ``vps_root/split/img_all/`` with every frame of every clip, copied (or hard-linked, ``link``) from
    Cityscapes' ``leftImg8bit_sequence``. The folder appears complete or not at all; an existing one is an error
    unless ``overwrite``. Returns (clips, frames) written."""
    out = Path(vps_root) / split / "img_all"
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (remove it, or pass --overwrite to rebuild it)")
    plan = plan_img_all(vps_root, cityscapes_root, split)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for source, name in plan:
            if link:
                try:
                    os.link(source, tmp / name)
                    continue
                except OSError:      # another file system: copy instead
                    pass
            shutil.copyfile(source, tmp / name)
    return len(plan) // CLIP_FRAMES, len(plan)
