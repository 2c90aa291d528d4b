"""The 15 evaluation classes of the paper (Tables 1-2) and the id conventions shared by every module.

Internal label maps hold *train ids* 0..14 in the order of ``CLASSES``; ``IGNORE_ID`` (255) marks void
pixels and unlabelled frames.
"""

import numpy as np

CLASSES = (
    "road", "sidewalk", "building", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "car", "truck", "bus", "motorbike",
)
NUM_CLASSES = len(CLASSES)
IGNORE_ID = 255

# Colours for visualisation: the Cityscapes palette of each class.
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 230),
], dtype=np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 RGB; ignore pixels are black."""
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = labels < NUM_CLASSES
    out[valid] = PALETTE[labels[valid]]
    return out


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

# VIPER class -> our class, as the video UDA works on VIPER -> Cityscapes-Seq map it (DA-VSN, TPS and later
# works share one table): tree and vegetation both become vegetation; van, infrastructure, billboard, bicycle
# and the other VIPER-only classes are ignored (van is *not* merged into car there, so neither is it here).
# Our one departure: VIPER has no pole class, but the paper evaluates pole (Table 1, with a non-zero source-only
# IoU), so VIPER's "infrastructure" (poles, lamp posts, posts of signs and lights) is mapped to pole.
_VIPER_AS_OURS = {
    "road": "road", "sidewalk": "sidewalk", "building": "building", "fence": "fence",
    "trafficlight": "traffic light", "trafficsign": "traffic sign", "tree": "vegetation", "vegetation": "vegetation",
    "terrain": "terrain", "sky": "sky", "person": "person", "car": "car", "truck": "truck", "bus": "bus",
    "motorcycle": "motorbike", "infrastructure": "pole",
}
VIPER_TO_TRAIN = {i: CLASSES.index(_VIPER_AS_OURS[n]) if n in _VIPER_AS_OURS else IGNORE_ID
                  for i, n in enumerate(VIPER_CLASSES)}

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

# Rider is merged into person, as the VIPER -> Cityscapes works do (VIPER has no rider class); wall, train and
# bicycle are not among the 15 classes and become void.
_CITYSCAPES_AS_OURS = {n: n for n in CLASSES} | {"rider": "person", "motorcycle": "motorbike"}
CITYSCAPES_TO_TRAIN = {i: CLASSES.index(_CITYSCAPES_AS_OURS[n]) if n in _CITYSCAPES_AS_OURS else IGNORE_ID
                       for i, n in enumerate(CITYSCAPES_TRAIN_CLASSES)} | {IGNORE_ID: IGNORE_ID}
