"""Class sets, the id conventions shared by every module, and the real datasets' own label spaces.

A *class set* is data, not code: a YAML file in ``videoda/data/class_sets/`` (or any path), chosen by params.yaml's
``classes``. It lists the classes a model predicts (train ids 0..K-1 in file order, each with its colour), the
classes mIoU and VPQ^s average over (``evaluated``: all of them, or a subset), and how each dataset's label space
maps onto them (``maps``: the dataset's class name -> ours; a class not listed is void). Stage ``resolve_params``
copies the chosen set into the resolved params of every stage that reads it, so DVC sees a change of its content.

Internal label maps hold train ids in the order of the set's classes; ``IGNORE_ID`` (255) marks void pixels and
unlabelled frames. ``CLASSES``, ``NUM_CLASSES``, ``PALETTE`` and ``colorize`` are the default set's (the seed
paper's 15, ``shin2021``), which the embedded benchmark is rendered in.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from videoda.errors import ParamError

IGNORE_ID = 255
CLASS_SET_DIR = Path(__file__).with_name("class_sets")
DEFAULT_CLASS_SET = "shin2021"


@dataclass(frozen=True)
class ClassSet:
    """One class set (see the module docstring). ``maps``: ((dataset, ((its class, our class), ...)), ...)."""
    name: str
    names: tuple
    colors: tuple
    evaluated: tuple
    maps: tuple

    @property
    def num_classes(self):
        return len(self.names)

    @property
    def palette(self):
        return np.array(self.colors, np.uint8).reshape(-1, 3)

    @property
    def evaluated_ids(self):
        """Train ids of the evaluated classes, ascending."""
        return np.array([self.names.index(n) for n in self.evaluated], np.int64)

    def datasets(self):
        return tuple(d for d, _ in self.maps)

    def table(self, dataset):
        """{dataset id: our train id} for every id of ``dataset``'s label space (``DATASET_CLASSES``); void ids
        and classes the set leaves out map to IGNORE_ID. A dataset the set has no map for is a ParamError."""
        maps = dict(self.maps)
        if dataset not in maps:
            raise ParamError(f"class set {self.name!r} has no map for dataset {dataset!r} (it maps "
                             f"{list(maps)}); add one under maps: in its file")
        ours = dict(maps[dataset])
        names, void_ids = DATASET_CLASSES[dataset]
        return {i: self.names.index(ours[n]) if n in ours else IGNORE_ID for i, n in enumerate(names)} | \
            {v: IGNORE_ID for v in void_ids}

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) train ids -> (H, W, 3) uint8 RGB; ignore pixels are black."""
        out = np.zeros(labels.shape + (3,), dtype=np.uint8)
        valid = labels < self.num_classes
        out[valid] = self.palette[labels[valid]]
        return out

    def to_dict(self):
        """The set as its file states it (plus its name): what ``resolve_params`` writes into a stage's params."""
        return {"name": self.name, "classes": [[n, list(c)] for n, c in zip(self.names, self.colors)],
                "evaluated": list(self.evaluated), "maps": {d: dict(m) for d, m in self.maps}}


def parse_class_set(data, name, where):
    """A ClassSet from a mapping as a class-set file holds it; a bad entry is a ParamError naming ``where``."""
    def bad(what):
        return ParamError(f"{where}: {what}")

    if not isinstance(data, dict):
        raise bad("expected a mapping with classes, evaluated and maps")
    unknown = set(data) - {"name", "description", "classes", "evaluated", "maps"}
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}")
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise bad("classes must be a non-empty list of [name, [r, g, b]]")
    names, colors = [], []
    for entry in entries:
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0]
              and isinstance(entry[1], list) and len(entry[1]) == 3
              and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in entry[1]))
        if not ok:
            raise bad(f"classes: {entry!r} is not [name, [r, g, b]] with 0 <= r, g, b <= 255")
        names.append(entry[0])
        colors.append(tuple(entry[1]))
    if len(set(names)) != len(names):
        raise bad(f"classes: names {sorted({n for n in names if names.count(n) > 1})} appear twice")
    if len(names) >= IGNORE_ID:
        raise bad(f"classes: {len(names)} classes; train ids must stay below {IGNORE_ID} (void)")
    evaluated = data.get("evaluated", "all")
    if evaluated == "all":
        evaluated = list(names)
    if not isinstance(evaluated, list) or not evaluated or any(n not in names for n in evaluated) \
            or len(set(evaluated)) != len(evaluated):
        raise bad(f"evaluated must be 'all' or a non-empty list of distinct classes of the set, got {evaluated!r}")
    maps = data.get("maps")
    if not isinstance(maps, dict) or not maps:
        raise bad("maps must map at least one dataset (viper, cityscapes, synthia) to the set's classes")
    parsed = []
    for dataset, mapping in maps.items():
        if dataset not in DATASET_CLASSES:
            raise bad(f"maps: unknown dataset {dataset!r} (known: {list(DATASET_CLASSES)})")
        if not isinstance(mapping, dict):
            raise bad(f"maps.{dataset} must map the dataset's class names to the set's")
        theirs = DATASET_CLASSES[dataset][0]
        for a, b in mapping.items():
            if a not in theirs:
                raise bad(f"maps.{dataset}: {a!r} is not a class of {dataset} ({', '.join(theirs)})")
            if b not in names:
                raise bad(f"maps.{dataset}: {a!r} -> {b!r}, which is not a class of the set")
        parsed.append((dataset, tuple(mapping.items())))
    # Keep the file's order of the evaluated classes out of the ids: they are scored in train-id order.
    evaluated = tuple(n for n in names if n in evaluated)
    return ClassSet(str(data.get("name", name)), tuple(names), tuple(colors), evaluated, tuple(parsed))


def shipped_class_sets():
    """Names of the class sets in ``videoda/data/class_sets/``."""
    return sorted(p.stem for p in CLASS_SET_DIR.glob("*.yaml"))


def load_class_set(value, key="classes", source="params.yaml"):
    """The class set ``value`` names: a shipped set's name, a YAML file's path, or (as a stage's resolved params
    hold it) the set itself as a mapping. A bad value is a ParamError naming ``source``'s ``key`` or the file."""
    if isinstance(value, dict):
        return parse_class_set(value, value.get("name", "?"), f"{source}: {key}")
    if not isinstance(value, str) or not value:
        raise ParamError(f"{source}: {key} must be a class set's name or a YAML file, got {value!r}")
    path = CLASS_SET_DIR / f"{value}.yaml"
    if value not in shipped_class_sets():
        path = Path(value)
        if not path.is_file():
            raise ParamError(f"{source}: {key} = {value!r} is neither one of the class sets "
                             f"{shipped_class_sets()} nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ParamError(f"{path}: unreadable class set ({type(e).__name__}: {e})") from None
    return parse_class_set(data, path.stem, str(path))


# --- Label spaces of the real datasets and their maps to our train ids (used by videoda.data.viper/cityscapes_vps).

# VIPER's recorded environmental conditions of a sequence (Richter et al., ICCV 2017); the paper trains on "day".
VIPER_CONDITIONS = ("day", "sunset", "rain", "night", "snow")

# VIPER (Richter et al. 2017, "Playing for Benchmarks"): class ids 0..31 and colours, in the order of the
# dataset's classes.csv. ``cls`` PNGs are palette images whose pixel values are these ids.
VIPER_CLASSES = (
    "unlabeled", "ambiguous", "sky", "road", "sidewalk", "railtrack", "terrain", "tree", "vegetation", "building",
    "infrastructure", "fence", "billboard", "trafficlight", "trafficsign", "mobilebarrier", "firehydrant", "chair",
    "trash", "trashcan", "person", "animal", "bicycle", "motorcycle", "car", "van", "bus", "truck", "trailer",
    "train", "plane", "boat",
)
VIPER_PALETTE = np.array([
    (0, 0, 0), (111, 74, 0), (70, 130, 180), (128, 64, 128), (244, 35, 232), (230, 150, 140), (152, 251, 152),
    (87, 182, 35), (35, 142, 35), (70, 70, 70), (153, 153, 153), (190, 153, 153), (150, 20, 20), (250, 170, 30),
    (220, 220, 0), (180, 180, 100), (173, 153, 153), (168, 153, 153), (81, 0, 21), (81, 0, 81), (220, 20, 60),
    (255, 0, 0), (119, 11, 32), (0, 0, 230), (0, 0, 142), (0, 80, 100), (0, 60, 100), (0, 0, 70), (0, 0, 90),
    (0, 80, 100), (0, 100, 100), (50, 0, 90),
], dtype=np.uint8)

# Cityscapes train ids 0..18 (255 = void) and their colours. Cityscapes-VPS ``labelmap`` PNGs hold these ids;
# its ``cls`` PNGs hold these colours (any other colour is void).
CITYSCAPES_TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# SYNTHIA-SEQS class ids 0..15, the first channel of its GT/LABELS PNGs (videoda.data.synthia_seq), in id order
# (the README of each SYNTHIA-SEQS-* folder). Ids 13 and 14 are reserved (unused): the sequences hold 0..12 and 15.
# "bicycle" is the cyclist (DA-VSN evaluates it as Cityscapes' rider). Other SYNTHIA releases differ:
# SYNTHIA-RAND-CITYSCAPES has 23 classes with 12 = motorcycle and 22 = lanemarking.
SYNTHIA_CLASSES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign",
    "pedestrian", "bicycle", "lanemarking", "reserved 13", "reserved 14", "traffic light",
)

# Each dataset's label space as the class sets' maps name it: (class names by id, ids that are void).
DATASET_CLASSES = {"viper": (VIPER_CLASSES, ()), "cityscapes": (CITYSCAPES_TRAIN_CLASSES, (IGNORE_ID,)),
                   "synthia": (SYNTHIA_CLASSES, ())}

# The default set: the embedded benchmark's, and every module's when no set is passed.
DEFAULT = load_class_set(DEFAULT_CLASS_SET)
CLASSES, NUM_CLASSES, PALETTE = DEFAULT.names, DEFAULT.num_classes, DEFAULT.palette
colorize = DEFAULT.colorize
VIPER_TO_TRAIN, CITYSCAPES_TO_TRAIN = DEFAULT.table("viper"), DEFAULT.table("cityscapes")
