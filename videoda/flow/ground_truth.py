"""Stage `flow_gt`'s work: the manifest of the ground-truth flow that stage `flow` reads, or that it reads none.

Stage `flow` reads ground-truth flow (``flow.gt_root``) only to score the flows (``flow.epe``) or as the ``gt``
backend. dvc.yaml's dependencies are paths written in dvc.yaml, the same under every ``profile``, so `flow` cannot
depend on ``flow.gt_root`` itself: on a real dataset that folder is the embedded benchmark's, and a change of the
synthetic data would rerun hours of FlowNet2 that never read it. `flow` depends on this manifest instead. When the
ground truth is read, it lists every file's sha256, so new ground truth reruns `flow`; when not (a real dataset:
``epe: false``, a flow network) it is ``{"used": false}`` whatever the folder holds, and `flow` stays cached.
"""

import json
from pathlib import Path

from videoda.errors import DataError
from videoda.utils.io import sha256_file


def reads_ground_truth(method, epe):
    """Whether stage `flow` reads ``flow.gt_root``: for the EPE report, or as the ``gt`` backend."""
    return bool(epe) or method == "gt"


def ground_truth_manifest(gt_root, used):
    """``{"used": True, "root", "files": {name: sha256}}`` of the ``*.npy`` flows under ``gt_root``, or
    ``{"used": False}``; a missing folder, when used, is an error naming it and the key."""
    if not used:
        return {"used": False}
    root = Path(gt_root)
    if not root.is_dir():
        raise DataError(f"{root}: ground-truth flow folder not found (flow.gt_root)")
    return {"used": True, "root": str(gt_root), "files": {p.name: sha256_file(p) for p in sorted(root.glob("*.npy"))}}


def check_manifest(path, gt_root, used):
    """Stage `flow`'s check of the manifest it depends on: written for the same ``gt_root`` and use, else an error
    naming the file (it is stage `flow_gt`'s output, stale when run by hand with other params)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: ground-truth flow manifest not found (run stage flow_gt)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ground-truth flow manifest ({type(e).__name__}: {e}); "
                        f"rerun stage flow_gt") from None
    if not isinstance(manifest, dict) or manifest.get("used") is not bool(used) or \
            (used and manifest.get("root") != str(gt_root)):
        want = f"the ground truth in {gt_root}" if used else "no ground truth"
        raise DataError(f"{path}: written for other flow params (this run reads {want}); rerun stage flow_gt")
    return manifest
